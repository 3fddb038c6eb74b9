"""Typed specs: every shipped YAML loads; broken ones say which file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bookpulse.model.dataset import split_months, training_set
from bookpulse.specs import (
    SpecError,
    load_feature_catalog,
    load_model_spec,
    load_model_specs,
    model_names,
    models_dir,
)


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
    assert model_names() == ["card_activation", "churn", "tier_upgrade", "wealth_take_up"]
    assert set(specs) == set(model_names())
    for name, spec in specs.items():
        assert spec.name == name
        assert spec.registered_name == f"bookpulse-{name}"
        assert spec.lightgbm.params["objective"] == "binary"
    assert specs["card_activation"].target.entity == "card"
    assert specs["churn"].target.horizon_months == 3
    assert specs["card_activation"].target.horizon_days == 30
    prefixes = {name: spec.prefix for name, spec in specs.items()}
    assert prefixes == {
        "card_activation": "activation",
        "churn": "churn",
        "tier_upgrade": "upgrade",
        "wealth_take_up": "wealth",
    }
    wealth = specs["wealth_take_up"].target
    assert (wealth.kind, wealth.entity, wealth.label) == ("product_take_up", "customer", "took_up")
    assert wealth.product == "has_wealth" and wealth.scored.without_products == ["has_wealth"]
    assert specs["tier_upgrade"].target.scored.exclude_tiers == ["private"]
    assert {n: s.id_column for n, s in specs.items()} == {
        "card_activation": "card_id",
        "churn": "customer_id",
        "tier_upgrade": "customer_id",
        "wealth_take_up": "customer_id",
    }


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
    months = labels.labelled_months(meta["months"], spec.target)[:2]
    df = training_set(small_book, spec, months)
    sliced = [c for c in load_feature_catalog().slice_columns() if c not in spec.features]
    assert sliced  # the breakdown tables' columns the model does not read ride along, last
    assert list(df.columns) == ["customer_id", "as_of", *spec.features, "churned", *sliced]
    assert df.groupby("as_of").size().index.strftime("%Y-%m").tolist() == months
    for m in months:
        lab = labels.labels_for_month(small_book, spec.target, m, meta["months"])
        got = df.loc[df["as_of"] == io.month_end(m)]
        assert len(got) == len(lab)
        assert got["churned"].sum() == lab["churned"].sum()


def test_training_set_refuses_months_without_labels(small_book: Path) -> None:
    from bookpulse.book import io

    spec = load_model_specs()["churn"]
    with pytest.raises(io.BookError, match="no labels for 2026-09"):
        training_set(small_book, spec, ["2026-09"])


def test_a_horizon_is_any_in_range_and_must_fit_the_kind(tmp_path: Path) -> None:
    """The labels read any horizon the spec gives (no fixed horizon per kind any more); one
    out of range, or of the wrong unit for the kind, is refused with the file and field."""
    from bookpulse import labels

    d = _copy_models(tmp_path)
    _edit(d / "churn.yaml", lambda s: s["target"].update(horizon_months=6))
    six = load_model_spec("churn", d)
    assert six.target.horizon_months == 6
    months = [str(p) for p in pd.period_range("2025-11", "2026-10", freq="M")]
    assert labels.labelled_months(months, six.target)[-1] == "2026-04"  # + 6 months = 2026-10
    _edit(d / "churn.yaml", lambda s: s["target"].update(horizon_months=25))
    with pytest.raises(SpecError) as err:
        load_model_spec("churn", d)
    assert "churn.yaml" in str(err.value) and "target.horizon_months" in str(err.value)
    _edit(d / "churn.yaml", lambda s: s["target"].update(horizon_months=3, horizon_days=30))
    with pytest.raises(SpecError, match="takes horizon_months"):
        load_model_spec("churn", d)


def test_model_names_are_the_files_but_the_playbook(tmp_path: Path) -> None:
    from bookpulse.specs import spec_named, specs_for

    d = _copy_models(tmp_path)
    assert model_names(d) == sorted(load_model_specs(d))
    assert "playbook" not in model_names(d)
    assert [s.name for s in specs_for("all", d)] == model_names(d)
    assert spec_named("wealth_take_up", d).prefix == "wealth"
    with pytest.raises(SpecError, match="unknown model 'retention'"):
        specs_for("retention", d)
    with pytest.raises(SpecError, match="name one model"):
        spec_named("all", d)
    # a new spec file is a new model
    shutil.copy(d / "churn.yaml", d / "churn_6m.yaml")
    _edit(
        d / "churn_6m.yaml",
        lambda s: s.update(
            name="churn_6m", registered_name="bookpulse-churn_6m", output_prefix="churn6"
        ),
    )
    assert "churn_6m" in model_names(d) and "churn_6m" in load_model_specs(d)


def test_two_models_sharing_a_prefix_are_refused(tmp_path: Path) -> None:
    d = _copy_models(tmp_path)
    _edit(d / "wealth_take_up.yaml", lambda s: s.update(output_prefix="churn"))
    with pytest.raises(SpecError, match="share the prefix 'churn'"):
        load_model_specs(d)


def test_the_playbook_lists_name_declared_models(tmp_path: Path) -> None:
    from bookpulse.specs import load_playbook

    playbook = load_playbook()
    shares = {name: (x.model, x.share_of_capacity) for name, x in playbook.lists.items()}
    assert shares == {
        "retention": ("churn", 0.4),
        "upgrade": ("tier_upgrade", 0.25),
        "activation": ("card_activation", 0.15),
        "cross_sell": ("wealth_take_up", 0.2),
    }
    assert playbook.list_for("wealth_take_up")[0] == "cross_sell"
    assert playbook.list_for("no_such_model") is None
    d = _copy_models(tmp_path)
    (d / "wealth_take_up.yaml").unlink()
    with pytest.raises(SpecError, match="'wealth_take_up', which has no spec"):
        load_playbook(d / "playbook.yaml")
    with pytest.raises(SpecError, match="which has no spec"):
        load_playbook(models=["churn"])
