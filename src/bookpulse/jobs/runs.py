"""`bookpulse runs`: a model's latest training runs side by side, for analysts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bookpulse.adapters import tracking
from bookpulse.adapters.runs import compare_runs
from bookpulse.specs import spec_named


def runs(home: Path, model: str, last: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(key metrics, parameters that differ) of the model's `last` runs, newest first."""
    spec = spec_named(model)
    tracking.configure(home)
    return compare_runs(spec.registered_name, last)
