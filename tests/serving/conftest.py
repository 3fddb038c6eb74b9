"""A home with champions in the MLflow registry and a scored month in the online store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bookpulse.specs import GateSpec, load_feature_catalog, load_model_specs, load_playbook
from serving_keys import ADMIN_KEY, API_KEY, MONTH


def quick(spec):
    lgb = spec.lightgbm.model_copy(update={"num_boost_round": 60, "early_stopping_rounds": 15})
    gates = GateSpec(min_auc=0.51, max_calibration_error=0.5, max_auc_drop=0.2)
    return spec.model_copy(update={"lightgbm": lgb, "gates": gates})


@pytest.fixture(scope="session")
def served_home(trainable_book: Path, tmp_path_factory) -> Path:
    from bookpulse.adapters import tracking
    from bookpulse.adapters.champions import load_champions
    from bookpulse.adapters.publish import default_out
    from bookpulse.adapters.registry import promote
    from bookpulse.adapters.store import open_store
    from bookpulse.jobs.score import score_month
    from bookpulse.jobs.train import train_models

    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    home = tmp_path_factory.mktemp("served")
    specs = [quick(s) for s in load_model_specs().values()]
    train_models(trainable_book, home, specs, threads=1)
    tracking.configure(home)
    for spec in specs:
        assert promote(home, trainable_book, spec).outcome == "promoted"
    _retention_uplift(trainable_book, home)
    catalog = load_feature_catalog()
    catalogs = {e: catalog.for_entity(e) for e in ("customer", "card")}
    champions = load_champions(specs)
    assert set(champions) == {"card_activation", "churn", "tier_upgrade", "wealth_take_up"}
    out = default_out(home, MONTH)  # where the API's month is published: scores/<MONTH>
    score_month(
        trainable_book, MONTH, champions, catalogs, load_playbook(), out, online=open_store(home)
    )
    return home


@pytest.fixture()
def api_env(served_home: Path, monkeypatch) -> Path:
    monkeypatch.setenv("BOOKPULSE_HOME", str(served_home))
    monkeypatch.setenv("BOOKPULSE_API_KEYS", f"other-key,{API_KEY}")
    monkeypatch.setenv("BOOKPULSE_ADMIN_KEYS", ADMIN_KEY)
    monkeypatch.delenv("BOOKPULSE_ONLINE_STORE", raising=False)
    return served_home


def _retention_uplift(book: Path, home: Path) -> None:
    """The retention call's uplift model, trained small and promoted: the champions load it
    with the churn champion, so the batch and the API rank and answer with it."""
    from bookpulse.adapters.registry import promote_uplift
    from bookpulse.jobs.uplift import train_uplift
    from bookpulse.specs import UpliftGates, UpliftLightGBM, load_uplift_specs

    spec, outcome = load_uplift_specs()["retention_call_uplift"]
    small = {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 4, "min_child_samples": 50}
    spec = spec.model_copy(
        update={
            "lightgbm": UpliftLightGBM(outcome=small, effect=small),
            "gates": UpliftGates(min_control_rows=1, min_qini_z=-99),
        }
    )
    train_uplift(book, home, spec, outcome, threads=1)
    assert promote_uplift(home, spec).outcome == "promoted"
