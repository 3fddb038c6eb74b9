"""`bookpulse promote`, `promotions` and `rollback`: the champion alias moves only through
the gates of each model's spec, and every decision is recorded (`adapters.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bookpulse.adapters import registry, tracking
from bookpulse.adapters.registry import Decision
from bookpulse.config import get_settings
from bookpulse.specs import load_uplift_specs, model_names, spec_named, specs_for


@dataclass(frozen=True)
class PromoteRequest:
    """Promote one model's challenger, or every model's ("all")."""

    home: Path
    model: str = "all"
    book: Path | None = None


def promote(
    request: PromoteRequest, decided: Callable[[Decision], None] | None = None
) -> list[Decision]:
    """Challenger against champion on the latest closed months, for each model asked (a
    flat-table model: on its challenger's test rows); `decided` hears each decision as it is
    made (so a later failure loses none)."""
    book = request.book or get_settings().book_dir
    uplifts = {name: spec for name, (spec, _) in load_uplift_specs().items()}
    tracking.configure(request.home)
    decisions = []

    def record(decision: Decision) -> None:
        decisions.append(decision)
        if decided:
            decided(decision)

    if request.model in uplifts:
        record(registry.promote_uplift(request.home, uplifts[request.model]))
        return decisions
    if request.model != "all" and request.model not in model_names():
        from bookpulse.jobs.table_model import promote_table, table_named

        record(promote_table(request.home, table_named(request.model)))
        return decisions
    for spec in specs_for(request.model, extra=list(uplifts)):
        record(registry.promote(request.home, book, spec))
    if request.model == "all":  # the uplift models trained so far (a book may have no lists)
        for spec in uplifts.values():
            if registry.has_challenger(spec.registered_name):
                record(registry.promote_uplift(request.home, spec))
    return decisions


def _named(home: Path, model: str):
    """A scoring or an uplift model's spec, or a flat-table model (`TableRef`), by name."""
    uplifts = load_uplift_specs()
    if model in uplifts:
        return uplifts[model][0]
    if model == "all" or model in model_names():
        return spec_named(model)
    from bookpulse.jobs.table_model import table_named

    tracking.configure(home)
    return table_named(model)


def promotions(home: Path, model: str) -> list[Decision]:
    """Every promotion and rollback decision for one model, newest first (a table model's are
    recorded under its registered name)."""
    from bookpulse.jobs.table_model import TableRef

    spec = _named(home, model)
    tracking.configure(home)
    return registry.history(spec.decisions_as if isinstance(spec, TableRef) else spec.name)


def rollback(home: Path, model: str) -> Decision:
    """The champion back to the previous champion, recorded."""
    from bookpulse.jobs.table_model import TableRef

    spec = _named(home, model)
    tracking.configure(home)
    if isinstance(spec, TableRef):
        return registry.roll_back(home, spec.decisions_as, spec.registered_name)
    return registry.rollback(home, spec)
