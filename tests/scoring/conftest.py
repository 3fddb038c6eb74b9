"""Champions for scoring tests, fitted directly (no MLflow): quick, small, real LightGBM."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookpulse.book import io
from bookpulse.model.core import Champion
from bookpulse.specs import load_feature_catalog, load_model_specs, load_playbook
from bookpulse.model.dataset import training_sets
from bookpulse.model.fit import fit_model


@pytest.fixture(scope="session")
def champions(trainable_book: Path) -> dict[str, Champion]:
    """Each spec fitted on a few months of the trainable book, 80 rounds at most."""
    specs = load_model_specs()
    months = io.read_meta(trainable_book)["months"]
    fit_months = {
        "churn": months[12:18],
        "tier_upgrade": months[12:18],
        "card_activation": months[4:20],
    }
    out = {}
    for name, spec in specs.items():
        quick = spec.model_copy(
            update={
                "lightgbm": spec.lightgbm.model_copy(
                    update={"num_boost_round": 80, "early_stopping_rounds": 20}
                )
            }
        )
        data = training_sets(trainable_book, [quick], fit_months[name])[name]
        ms = sorted(data["as_of"].unique())
        n = len(ms)
        train = data.loc[data["as_of"].isin(ms[: n - 2])]
        valid = data.loc[data["as_of"].isin(ms[n - 2 : n - 1])]
        calib = data.loc[data["as_of"].isin(ms[n - 1 :])]
        model = fit_model(quick, train, valid, calib, threads=1)
        out[name] = Champion(spec=spec, model=model, version="7", run_id=f"run-{name}")
    return out


@pytest.fixture(scope="session")
def score_month() -> str:
    """The month the scoring tests score: after the champions' fitting months."""
    return "2026-09"


@pytest.fixture(scope="session")
def catalogs():
    catalog = load_feature_catalog()
    return {e: catalog.for_entity(e) for e in ("customer", "card")}


@pytest.fixture(scope="session")
def playbook():
    return load_playbook()
