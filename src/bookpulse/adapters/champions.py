"""The champion of each model, read from the MLflow registry (I/O; tracking configured by the
job that asks)."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.adapters.registry import load_scoring_model, load_uplift_model
from bookpulse.errors import BookpulseError
from bookpulse.model.core import Champion
from bookpulse.model.uplift import UpliftChampion
from bookpulse.specs import ModelSpec, load_uplift_specs


class NoChampion(BookpulseError):
    """A model has no champion; the message says how to get one."""


def load_champion(
    spec: ModelSpec, threads: int = 0, versions: dict[str, str] | None = None
) -> Champion:
    """The spec's champion; with `versions` (registered name -> version, as a published
    month records them), exactly those versions of it and its uplift models instead."""
    name = spec.registered_name
    if versions is not None:
        if name not in versions:
            raise NoChampion(f"{name} did not score the month served")
        version = versions[name]
        mv = MlflowClient().get_model_version(name, version)
        model = load_scoring_model(name, version, threads=threads)
        uplifts = tuple(load_uplifts(spec, threads, versions))
        return Champion(
            spec=spec, model=model, version=version, run_id=mv.run_id or "", uplifts=uplifts
        )
    try:
        mv = MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION)
    except MlflowException:
        why = tracking.missing_experiment(name, spec.name)
        if why:
            raise NoChampion(why) from None
        raise NoChampion(
            f"{name} has no champion in the registry at {mlflow.get_registry_uri()}: run "
            f"`bookpulse train {spec.name}` then `bookpulse promote {spec.name}` (or `make demo`)"
        ) from None
    model = load_scoring_model(name, str(mv.version), threads=threads)
    uplifts = tuple(load_uplifts(spec, threads))
    return Champion(
        spec=spec, model=model, version=str(mv.version), run_id=mv.run_id or "", uplifts=uplifts
    )


def load_uplifts(
    spec: ModelSpec, threads: int = 0, versions: dict[str, str] | None = None
) -> list[UpliftChampion]:
    """The champions of the uplift models of actions on `spec`'s outcome (those without one
    are left out: their lists are ranked by the score until one is promoted); with
    `versions`, exactly the versions listed (those not listed are left out)."""
    client = MlflowClient()
    out = []
    for uplift, outcome in load_uplift_specs().values():
        if outcome.name != spec.name:
            continue
        try:
            if versions is None:
                mv = client.get_model_version_by_alias(uplift.registered_name, tracking.CHAMPION)
            elif uplift.registered_name in versions:
                mv = client.get_model_version(
                    uplift.registered_name, versions[uplift.registered_name]
                )
            else:
                continue
        except MlflowException:
            continue
        model = load_uplift_model(uplift.registered_name, str(mv.version), threads=threads)
        out.append(UpliftChampion(uplift, model, str(mv.version), mv.run_id or ""))
    return out


def load_champions(specs: list[ModelSpec], threads: int = 0) -> dict[str, Champion]:
    """Every spec's champion; a model without one is refused (NoChampion says what to do)."""
    return {s.name: load_champion(s, threads) for s in specs}


def available_champions(
    specs: list[ModelSpec], threads: int = 0, versions: dict[str, str] | None = None
) -> tuple[dict[str, Champion], dict[str, str]]:
    """The champions there are, and for each model without one, why: a target just declared
    in models/ and not yet trained and promoted does not stop the others' monthly batch, API
    or monitor. Refused (NoChampion) when no model has a champion at all."""
    found, missing = {}, {}
    for spec in specs:
        try:
            found[spec.name] = load_champion(spec, threads, versions)
        except NoChampion as exc:
            missing[spec.name] = str(exc)
    if not found:
        raise NoChampion("; ".join(missing.values()) or "no model specs in models/")
    return found, missing
