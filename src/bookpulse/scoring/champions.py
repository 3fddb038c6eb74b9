"""The champion of each model, read from the MLflow registry (I/O)."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bookpulse.scoring.core import Champion
from bookpulse.specs import ModelSpec
from bookpulse.training import tracking
from bookpulse.training.registry import load_scoring_model


class NoChampion(Exception):
    """A model has no champion; the message says how to get one."""


def load_champion(home: Path, spec: ModelSpec, threads: int = 0) -> Champion:
    tracking.configure(home)
    name = spec.registered_name
    try:
        mv = MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION)
    except MlflowException:
        raise NoChampion(
            f"{name} has no champion in the registry at {tracking.tracking_uri(home)}: run "
            f"`bookpulse train {spec.name}` then `bookpulse promote {spec.name}` (or `make demo`)"
        ) from None
    model = load_scoring_model(name, str(mv.version), threads=threads)
    return Champion(spec=spec, model=model, version=str(mv.version), run_id=mv.run_id or "")


def load_champions(home: Path, specs: list[ModelSpec], threads: int = 0) -> dict[str, Champion]:
    return {s.name: load_champion(home, s, threads) for s in specs}
