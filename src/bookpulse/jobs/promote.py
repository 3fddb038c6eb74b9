"""`bookpulse promote`, `promotions` and `rollback`: the champion alias moves only through
the gates of each model's spec, and every decision is recorded (`adapters.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bookpulse.adapters import registry, tracking
from bookpulse.adapters.registry import Decision
from bookpulse.config import get_settings
from bookpulse.specs import spec_named, specs_for


@dataclass(frozen=True)
class PromoteRequest:
    """Promote one model's challenger, or every model's ("all")."""

    home: Path
    model: str = "all"
    book: Path | None = None


def promote(
    request: PromoteRequest, decided: Callable[[Decision], None] | None = None
) -> list[Decision]:
    """Challenger against champion on the latest closed months, for each model asked;
    `decided` hears each decision as it is made (so a later failure loses none)."""
    book = request.book or get_settings().book_dir
    specs = specs_for(request.model)
    tracking.configure(request.home)
    decisions = []
    for spec in specs:
        decisions.append(registry.promote(request.home, book, spec))
        if decided:
            decided(decisions[-1])
    return decisions


def promotions(home: Path, model: str) -> list[Decision]:
    """Every promotion and rollback decision for one model, newest first."""
    spec = spec_named(model)
    tracking.configure(home)
    return registry.history(spec.name)


def rollback(home: Path, model: str) -> Decision:
    """The champion back to the previous champion, recorded."""
    spec = spec_named(model)
    tracking.configure(home)
    return registry.rollback(home, spec)
