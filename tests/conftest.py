"""Shared fixtures, once per test session (per worker): small books made by the simulator, and
champions fitted on one of them without MLflow (the scoring core's tests in model/ and the
batch's in jobs/ both score with them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bookpulse.book import io
from bookpulse.model.core import Champion
from bookpulse.model.dataset import training_sets
from bookpulse.model.fit import fit_model
from bookpulse.specs import load_feature_catalog, load_model_specs, load_playbook
from bookpulse.synthetic.simulate import BookSpec, generate_book

SMALL = BookSpec(customers=1_500, months=8, seed=7, end_month="2026-10")
REALISM = BookSpec(customers=20_000, months=24, seed=42, end_month="2026-10")


@pytest.fixture(scope="session")
def small_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 customers x 8 months: fast, for shape and contract checks."""
    out = tmp_path_factory.mktemp("books") / "small"
    generate_book(SMALL, out)
    return out


@pytest.fixture(scope="session")
def realism_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 customers x 24 months: the size the realism targets are stated for."""
    out = tmp_path_factory.mktemp("books") / "realism"
    generate_book(REALISM, out)
    return out


@pytest.fixture(scope="session")
def realism_summary(realism_book: Path):
    from bookpulse.synthetic.summary import summarize

    return summarize(realism_book)


TRAINABLE = BookSpec(customers=2_500, months=24, seed=3, end_month="2026-10")


@pytest.fixture(scope="session")
def trainable_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,500 customers x 24 months: long enough for every spec's out-of-time split."""
    out = tmp_path_factory.mktemp("books") / "trainable"
    generate_book(TRAINABLE, out)
    return out


# --- champions for the scoring tests, fitted directly (no MLflow): quick, small, real LightGBM --


@pytest.fixture(scope="session")
def champions(trainable_book: Path) -> dict[str, Champion]:
    """Each spec fitted on a few months of the trainable book, 80 rounds at most."""
    specs = load_model_specs()
    months = io.read_meta(trainable_book)["months"]
    fit_months = {
        "churn": months[12:18],
        "tier_upgrade": months[12:18],
        "wealth_take_up": months[12:18],
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
    # the retention list's uplift model rides with the churn champion, as the registry loads it
    out["churn"] = dataclasses.replace(out["churn"], uplifts=(_uplift(trainable_book, months),))
    return out


def _uplift(book: Path, months: list[str]):
    """The retention call's uplift model, fitted on the book's past lists (no MLflow)."""
    from bookpulse.model.dataset import contacts_of, uplift_set
    from bookpulse.model.uplift import UpliftChampion, fit_uplift
    from bookpulse.specs import load_uplift_specs

    spec, outcome = load_uplift_specs()["retention_call_uplift"]
    contacts = contacts_of(book, spec.uplift.list, spec.uplift.action)
    rows = uplift_set(book, outcome, spec.features, contacts, months[4:18])
    quick = {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 4, "min_child_samples": 50}
    model = fit_uplift(spec.features, rows, outcome.target.label, quick, quick, threads=1)
    return UpliftChampion(spec, model, "3", "run-retention-call")


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
