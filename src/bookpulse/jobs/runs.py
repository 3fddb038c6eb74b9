"""`bookpulse runs`: a model's latest training runs side by side, for analysts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bookpulse.adapters import tracking
from bookpulse.adapters.runs import compare_runs
from bookpulse.errors import BookpulseError
from bookpulse.specs import load_uplift_specs, model_names, spec_named


def runs(home: Path, model: str, last: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(key metrics, parameters that differ) of the model's `last` runs, newest first. A name
    that is no book or uplift model is looked up among the flat-table models."""
    uplifts = load_uplift_specs()
    if model not in uplifts and model != "all" and model not in model_names():
        from bookpulse.jobs.table_model import table_named

        tracking.configure(home)
        return compare_runs(table_named(model).registered_name, last)
    spec = uplifts[model][0] if model in uplifts else spec_named(model)
    tracking.configure(home)
    why = tracking.missing_experiment(spec.registered_name, model)
    if why:
        raise BookpulseError(why)
    return compare_runs(spec.registered_name, last)
