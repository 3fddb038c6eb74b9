"""Reason text: every feature names its value for a banker, and each model has hints.

A reason sentence is "<feature reason phrase>; <model hint>", e.g. "holds 2 product lines;
customers with 4+ product lines rarely leave". The phrase (features/*.yaml, `reason`) is a format
string over {value}, {exp} (e^value - 1) and {pct} (100 x value); the hint (models/*.yaml,
`reason_hints`) is what follows when the feature raises or lowers the score.
"""

from __future__ import annotations

import math
import re
import shutil
import string
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bookpulse.model.core import reason_phrase
from bookpulse.specs import (
    FeatureSpec,
    SpecError,
    features_dir,
    load_feature_catalog,
    load_model_spec,
    load_model_specs,
    model_names,
    models_dir,
)

KEYS = {"value", "exp", "pct"}
NUMERIC_SAMPLES = (0.0, 1.0, 2.5, -0.3, 12.3, 1_234_567.0, float("nan"))
CATEGORY_SAMPLES = ("high end", "bulk corporate", "F", "30 44")
# words that would judge the value: the sentence code adds the direction, not the phrase
JUDGING = ("risk", "raises", "lowers", "good", "bad")

CATALOG = load_feature_catalog()
FEATURES: list[FeatureSpec] = [f for g in CATALOG.groups.values() for f in g.features]
SPECS = load_model_specs()
MODEL_NAMES = model_names()


def _fields(phrase: str) -> list[str]:
    """Root names of the replacement fields in a format string ('' for a positional {})."""
    names = []
    for _, field, _, _ in string.Formatter().parse(phrase):
        if field is not None:
            names.append(field.split(".")[0].split("[")[0])
    return names


def _starts_lower(text: str) -> bool:
    """Lower-case start; an acronym such as RM or CNY may lead."""
    first = text.split(" ", 1)[0]
    return first == first.lower() or first.isupper()


def _keys(value: float) -> dict[str, float]:
    """What the sentence code passes for a numeric feature (exp capped against overflow)."""
    return {"value": value, "exp": math.expm1(min(value, 50.0)), "pct": 100 * value}


def test_the_catalog_is_the_one_described() -> None:
    assert len(FEATURES) == 89


def test_every_feature_has_a_reason() -> None:
    missing = [f.name for f in FEATURES if not (f.reason and f.reason.strip())]
    assert not missing, f"features without a reason phrase: {missing}"


def _is_flag(feature: FeatureSpec) -> bool:
    return "|" in (feature.reason or "")


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_a_reason_shows_the_value_through_known_keys_only(feature: FeatureSpec) -> None:
    if _is_flag(feature):  # "when 1|when 0": two plain phrases
        assert feature.dtype in ("int8", "float32"), feature.name
        assert all(p and not _fields(p) for p in (feature.reason or "").split("|"))
        return
    fields = _fields(feature.reason or "")
    assert fields, f"{feature.name}: the phrase does not show the value"
    assert "" not in fields, f"{feature.name}: positional {{}} in the phrase"
    assert set(fields) <= KEYS, f"{feature.name}: unknown keys {set(fields) - KEYS}"
    if feature.dtype == "category":
        assert set(fields) == {"value"}, f"{feature.name}: a category has only its text"


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_a_reason_formats_for_sample_values(feature: FeatureSpec) -> None:
    if feature.dtype == "category":
        texts = [reason_phrase(feature, v) for v in CATEGORY_SAMPLES]
        assert all(v in t for v, t in zip(CATEGORY_SAMPLES, texts, strict=True))
    else:
        texts = [reason_phrase(feature, v) for v in NUMERIC_SAMPLES if not math.isnan(v)]
    texts.append(reason_phrase(feature, None))
    for text in texts:
        assert "{" not in text and "}" not in text and "nan" not in text.split()
        assert len(text) <= 100, f"{feature.name}: too long for a list: {text!r}"
    if _is_flag(feature):
        assert reason_phrase(feature, 1.0) != reason_phrase(feature, 0.0)


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_a_reason_is_a_lower_case_neutral_phrase(feature: FeatureSpec) -> None:
    phrase = feature.reason or ""
    assert phrase == phrase.strip() and _starts_lower(phrase)
    assert not phrase.endswith((".", ";", ",")), "the sentence code adds the punctuation"
    words = phrase.lower().replace(",", " ").split()
    assert not set(words) & set(JUDGING), f"{feature.name}: the phrase judges the value"


def test_reason_phrases_read_as_intended() -> None:
    by_name = {f.name: f for f in FEATURES}

    def say(name: str, value: float | str) -> str:
        return reason_phrase(by_name[name], value)

    assert say("products_held", 2) == "holds 2 product lines"
    assert say("aum_log", math.log1p(50_000)) == (
        "assets here of CNY 50,000, at the low end of the mid tier"
    )
    assert say("share_of_wallet", 0.1) == "10% of the household's wealth is with us"
    assert say("tier", "high end") == "in the high end tier"
    assert say("aum_chg_3m", math.log(0.5)) == "assets changed -50% over 3 months"
    assert say("logins_1m", 7) == "7 mobile-banking logins last month"
    assert say("has_payroll", 1.0) == "salary paid here"
    assert say("has_payroll", 0.0) == "salary not paid here"
    assert say("aum_log", None) == "no aum log on record"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_has_six_to_twelve_hints_on_its_own_features(name: str) -> None:
    spec = SPECS[name]
    assert 6 <= len(spec.reason_hints) <= 12
    stray = set(spec.reason_hints) - set(spec.features)
    assert not stray, f"{name}: hints for features the model does not use: {stray}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_hint_is_a_short_lower_case_clause(name: str) -> None:
    for feature, hint in SPECS[name].reason_hints.items():
        clauses = [c for c in (hint.raises, hint.lowers) if c is not None]
        assert clauses, f"{name}.{feature}: a hint needs raises or lowers"
        for clause in clauses:
            assert clause == clause.strip() and _starts_lower(clause)
            assert not clause.endswith((".", ";", ",")), f"{name}.{feature}: {clause!r}"
            assert "{" not in clause and len(clause) <= 90, f"{name}.{feature}: {clause!r}"


def test_a_reason_sentence_reads_end_to_end() -> None:
    by_name = {f.name: f for f in FEATURES}
    hint = SPECS["churn"].reason_hints["products_held"].raises
    sentence = f"{reason_phrase(by_name['products_held'], 2.0)}; {hint}"
    assert sentence == "holds 2 product lines; customers with 4+ product lines rarely leave"


def test_a_hint_for_an_unused_feature_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "models"
    shutil.copytree(models_dir(), d)
    path = d / "churn.yaml"
    data = yaml.safe_load(path.read_text())
    assert "dist_next_tier_pct" not in data["features"]
    data["reason_hints"]["dist_next_tier_pct"] = {"raises": "not a churn feature"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="dist_next_tier_pct"):
        load_model_spec("churn", d)


# --- reason_bands: refused with a message that says what to fix -----------------------------

BASE = {
    "name": "x_log",
    "dtype": "float32",
    "window_months": 1,
    "source": "snapshots",
    "description": "a feature for the test",
    "reason": "assets here of CNY {exp:,.0f}",
}


def test_well_formed_bands_are_read() -> None:
    spec = FeatureSpec.model_validate(
        {
            **BASE,
            "reason_bands": [
                {"below": 100, "text": "assets here are close to nothing"},
                {"below": 10_000},
                {"text": "assets here of CNY {exp:,.0f}, a large balance"},
            ],
        }
    )
    assert spec.reason_figure == "exp"
    bounds, texts = spec.reason_band_table()
    assert bounds == [100, 10_000]
    assert texts[1] == BASE["reason"] and len(texts) == 3
    # a last band with a bound: the plain reason reads on past it
    spec = FeatureSpec.model_validate(
        {**BASE, "reason_bands": [{"below": 100, "text": "a tiny sum"}]}
    )
    assert spec.reason_band_table() == ([100], ["a tiny sum", BASE["reason"]])


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        (
            [{"below": 10_000, "text": "a small one"}, {"below": 100, "text": "close to none"}],
            "rising order of `below`",
        ),
        ([{"below": 5, "text": "a small one"}, {"below": 5, "text": "another"}], "rising order"),
        ([{"text": "any amount"}, {"below": 100, "text": "close to none"}], "only the last band"),
        ([{"below": 100}], "every band reads the plain reason"),
        ([{}], "a bound"),
        ([{"below": 100, "text": "under CNY {}"}], "positional"),
        ([{"below": 100, "text": "under CNY {amount}"}], "unknown keys"),
        ([{"below": 100, "text": "under CNY {exp:,.0q}"}], "does not format a number"),
        ([{"below": float("nan"), "text": "under CNY 100"}], "not NaN"),
    ],
)
def test_malformed_bands_are_refused_with_a_clear_message(bands, message) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        FeatureSpec.model_validate({**BASE, "reason_bands": bands})


@pytest.mark.parametrize(
    "other",
    [{"dtype": "category", "reason": "in the {value} tier"}, {"reason": "a|b"}, {"reason": None}],
)
def test_bands_need_a_reason_showing_one_figure(other) -> None:
    with pytest.raises(ValidationError, match="reason_bands needs a numeric reason"):
        FeatureSpec.model_validate(
            {**BASE, **other, "reason_bands": [{"below": 1, "text": "too little"}]}
        )


def test_a_catalog_file_with_unordered_bands_is_refused_naming_it(tmp_path: Path) -> None:
    d = tmp_path / "features"
    shutil.copytree(features_dir(), d)
    path = d / "balances.yaml"
    data = yaml.safe_load(path.read_text())
    aum = next(f for f in data["features"] if f["name"] == "aum_log")
    aum["reason_bands"] = list(reversed(aum["reason_bands"][:-1]))
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as err:
        load_feature_catalog(d)
    text = str(err.value)
    assert "balances.yaml" in text and "rising order of `below`" in text
