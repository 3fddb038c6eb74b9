"""Typed specs: every shipped YAML loads; broken ones say which file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bookpulse.specs import (
    MODEL_NAMES,
    SpecError,
    load_feature_catalog,
    load_model_spec,
    load_model_specs,
    models_dir,
)
from bookpulse.model.dataset import split_months, training_set


def test_every_shipped_spec_loads() -> None:
    catalog = load_feature_catalog()
    assert set(catalog.groups) == {
        "balances",
        "products",
        "engagement",
        "care",
        "profile",
        "relationships",
        "cards",
    }
    specs = load_model_specs()
    assert set(specs) == set(MODEL_NAMES)
    for name, spec in specs.items():
        assert spec.name == name
        assert spec.registered_name == f"bookpulse-{name}"
        assert spec.lightgbm.params["objective"] == "binary"
    assert specs["card_activation"].target.entity == "card"
    assert specs["churn"].target.horizon_months == 3
    assert specs["card_activation"].target.horizon_days == 30


def _copy_models(tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(models_dir(), target)
    return target


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_spec_hash_follows_the_content(tmp_path: Path) -> None:
    d = _copy_models(tmp_path)
    before = load_model_spec("churn", d).spec_hash
    assert load_model_spec("churn", d).spec_hash == before
    _edit(d / "churn.yaml", lambda s: s["lightgbm"]["params"].update(num_leaves=63))
    assert load_model_spec("churn", d).spec_hash != before


def test_a_wrong_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    d = _copy_models(tmp_path)
    _edit(d / "churn.yaml", lambda s: s["split"].update(test_months=0))
    with pytest.raises(SpecError) as err:
        load_model_spec("churn", d)
    assert "churn.yaml" in str(err.value) and "split.test_months" in str(err.value)


def test_a_card_feature_in_a_customer_model_is_refused(tmp_path: Path) -> None:
    d = _copy_models(tmp_path)
    _edit(d / "churn.yaml", lambda s: s["features"].append("days_since_issue"))
    with pytest.raises(SpecError, match="days_since_issue"):
        load_model_spec("churn", d)


def test_unknown_fields_and_missing_specs_are_refused(tmp_path: Path) -> None:
    d = _copy_models(tmp_path)
    _edit(d / "tier_upgrade.yaml", lambda s: s.update(lerning_rate=0.1))
    with pytest.raises(SpecError, match="lerning_rate"):
        load_model_spec("tier_upgrade", d)
    with pytest.raises(SpecError, match="known models"):
        load_model_spec("retention", d)


def test_split_is_out_of_time_and_ends_at_the_last_labelled_month() -> None:
    spec = load_model_specs()["churn"]
    months = [str(p) for p in pd.period_range("2024-11", "2026-10", freq="M")]
    split = split_months(spec, months)
    assert split["test"] == ["2026-05", "2026-06", "2026-07"]  # 2026-07 + 3 months = 2026-10
    order = split["train"] + split["valid"] + split["calibration"] + split["test"]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert [len(split[k]) for k in ("train", "valid", "calibration", "test")] == [10, 2, 2, 3]
    # embargo: the last calibration month's outcome window (T, T+3] ends before the test's
    # first outcome month, as in production, where the newest label is 3 months old
    assert split["calibration"][-1] == "2026-02"
    last_cal_outcome = pd.Period(split["calibration"][-1], "M") + 3
    assert last_cal_outcome < pd.Period(split["test"][0], "M") + 1
    card = split_months(load_model_specs()["card_activation"], months)
    assert pd.Period(card["test"][0], "M") == pd.Period(card["calibration"][-1], "M") + 1


def test_training_set_stacks_features_and_labels(small_book: Path) -> None:
    from bookpulse import labels
    from bookpulse.book import io

    meta = io.read_meta(small_book)
    spec = load_model_specs()["churn"]
    months = labels.labelled_months(meta["months"], "churn")[:2]
    df = training_set(small_book, spec, months)
    assert list(df.columns) == ["customer_id", "as_of", *spec.features, "churned"]
    assert df.groupby("as_of").size().index.strftime("%Y-%m").tolist() == months
    for m in months:
        lab = labels.labels_for_month(small_book, "churn", m, meta["months"])
        got = df.loc[df["as_of"] == io.month_end(m)]
        assert len(got) == len(lab)
        assert got["churned"].sum() == lab["churned"].sum()


def test_training_set_refuses_months_without_labels(small_book: Path) -> None:
    from bookpulse.book import io

    spec = load_model_specs()["churn"]
    with pytest.raises(io.BookError, match="no labels for 2026-09"):
        training_set(small_book, spec, ["2026-09"])


def test_a_horizon_the_labels_do_not_use_is_refused(tmp_path: Path) -> None:
    d = _copy_models(tmp_path)
    _edit(d / "churn.yaml", lambda s: s["target"].update(horizon_months=6))
    with pytest.raises(SpecError, match="horizon_months must be 3"):
        load_model_spec("churn", d)
