"""Reasons an RM trusts: each from its own feature group, and no absurd figure.

The selection (`top_k_grouped`) is checked against its definition on random credits; the
phrasing against the catalog's `reason_range`s on extreme values; both through the scoring
core (batch and API paths) on small real champions.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from bookpulse.model.core import (
    _numbers_phrased,
    feature_groups,
    model_matrix,
    reason_phrase,
    score_frame,
    score_records,
)
from bookpulse.model.explain import _top_k_grouped_py, top_k, top_k_grouped
from bookpulse.specs import FeatureSpec, load_feature_catalog

CATALOG = load_feature_catalog()
FEATURES = {f.name: f for g in CATALOG.groups.values() for f in g.features}
RANGED = [f for f in FEATURES.values() if f.reason_range is not None]
PERCENT = re.compile(r"([+-]?[\d,]+(?:\.\d+)?)%")
CNY = re.compile(r"CNY ([\d,]+(?:\.\d+)?)")
JUDGING = ("risk", "raises", "lowers", "good", "bad")


def absurd(sentence: str) -> list[str]:
    """The figures a banker would not believe: beyond +-1,000% (growth past tenfold), or a
    CNY amount under 100 (a balance of a few yuan)."""
    bad = [m for m in PERCENT.findall(sentence) if abs(float(m.replace(",", ""))) > 1000]
    bad += [f"CNY {m}" for m in CNY.findall(sentence) if float(m.replace(",", "")) < 100]
    return bad


def check_selection(credit: np.ndarray, group: np.ndarray, top: np.ndarray) -> None:
    """`top` is what the module docstring says: greedy by |credit|, a new group while one
    has credit, else the largest remaining whatever its group."""
    a = np.abs(credit)
    for i in range(len(credit)):
        picked: list[int] = []
        for c in top[i]:
            assert c not in picked
            rest = [x for x in range(credit.shape[1]) if x not in picked]
            used = {group[p] for p in picked}
            fresh = [x for x in rest if group[x] not in used and a[i, x] > 0]
            pool = fresh or rest
            assert a[i, c] == max(a[i, x] for x in pool)
            assert c == min(x for x in pool if a[i, x] == a[i, c])  # ties: lower index
            picked.append(int(c))


credits = st.integers(1, 12).flatmap(
    lambda f: st.tuples(
        hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, 20), st.just(f)),
            elements=st.sampled_from([0.0, 0.0, 0.1, -0.1, 0.25, -0.5, 1.0, -2.0, 3.5]),
        ),
        hnp.arrays(np.int32, f, elements=st.integers(0, 3)),
        st.integers(1, 4),
    )
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(credits)
def test_reasons_come_from_different_groups_while_another_has_credit(case) -> None:
    credit, group, k = case
    top = top_k_grouped(credit, group, k)
    assert top.shape == (len(credit), min(k, credit.shape[1]))
    check_selection(credit, group, top)
    # the lead is always the strongest credit: the old selection's first reason
    assert np.array_equal(top[:, 0], top_k(credit, k)[:, 0])
    # reasons 1 and 2 share a group only when no other group has any credit
    if top.shape[1] >= 2:
        for i in np.flatnonzero(group[top[:, 0]] == group[top[:, 1]]):
            others = group != group[top[i, 0]]
            assert not np.any(credit[i, others])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(credits)
def test_one_group_per_feature_gives_the_plain_top_k(case) -> None:
    credit, _, k = case
    assert np.array_equal(top_k_grouped(credit, np.arange(credit.shape[1]), k), top_k(credit, k))


def test_the_compiled_selection_is_the_python_one_in_parallel_too() -> None:
    rng = np.random.default_rng(5)
    credit = rng.normal(size=(3_000, 30)) * (rng.random((3_000, 30)) < 0.4)
    group = rng.integers(0, 6, 30).astype(np.int32)
    fast = top_k_grouped(credit, group, 3)  # 3,000 rows: the parallel path
    assert np.array_equal(fast, _top_k_grouped_py(credit, group, 3))
    check_selection(credit[:300], group, fast[:300])


def test_a_group_is_the_features_file() -> None:
    assert FEATURES["dist_next_tier_log"].group == FEATURES["dist_next_tier_pct"].group
    assert FEATURES["dist_next_tier_log"].group == "balances"
    assert FEATURES["txn_vs_12m"].group == "engagement"
    names = ["aum_log", "txn_vs_12m", "tier", "logins_vs_12m", "unknown"]
    codes = feature_groups(names, FEATURES)
    assert codes[0] == codes[2] and codes[1] == codes[3] and len(set(codes)) == 3


# --- phrasing: reason_range ---------------------------------------------------------------


def _raw(spec: FeatureSpec, v: float) -> str:
    """The catalog's phrase with no range: what the reason printed before."""
    return spec.reason.format(value=v, exp=math.expm1(min(v, 50.0)), pct=100.0 * v)


def _value_for(spec: FeatureSpec, figure: float) -> float:
    """The feature value whose printed figure is `figure`."""
    key = spec.reason_figure
    return math.log1p(figure) if key == "exp" else figure / 100 if key == "pct" else figure


def test_every_figure_that_can_run_away_has_a_range() -> None:
    """Growth printed from a log ({exp}) and amounts in CNY are where absurd figures come
    from (a balance near zero): each such phrase declares where its figure stops."""
    for f in FEATURES.values():
        reason = f.reason or ""
        if "{exp" in reason or "CNY {" in reason:
            assert f.reason_range is not None, f.name


@pytest.mark.parametrize("feature", RANGED, ids=lambda f: f.name)
def test_a_range_phrase_reads_like_a_reason(feature: FeatureSpec) -> None:
    r = feature.reason_range
    for phrase in (r.below, r.above):
        if phrase is None:
            continue
        assert phrase == phrase.strip() and phrase[0] == phrase[0].lower()
        assert not phrase.endswith((".", ";", ",")) and len(phrase) <= 100
        assert not set(phrase.lower().split()) & set(JUDGING)
        assert not absurd(phrase)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    feature=st.sampled_from(RANGED),
    value=st.one_of(
        st.floats(-60, 60, allow_nan=False),
        st.floats(-1e12, 1e12, allow_nan=False),
        st.sampled_from([0.0, 1e-9, -1e-9, 0.7, 2.3, 12.3, 1_234_567.0]),
    ),
)
def test_no_absurd_figure_for_any_value(feature: FeatureSpec, value: float) -> None:
    one = reason_phrase(feature, value)
    assert not absurd(one), (feature.name, value, one)
    # the vectorised path (batch) says the same as the one-value path (API)
    none = reason_phrase(feature, None)
    assert _numbers_phrased(feature, [value, float("nan")]) == [one, none]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(feature=st.sampled_from(RANGED), share=st.floats(0.0, 1.0))
def test_a_figure_within_its_range_reads_as_before(feature: FeatureSpec, share: float) -> None:
    r = feature.reason_range
    if r.low is not None:
        low = r.low
    else:
        low = -0.99 if feature.reason_figure == "exp" else min(0.0, r.high - 1_000)
    high = r.high if r.high is not None else max(10 * abs(low), 1e6)
    v = _value_for(feature, low + share * (high - low))
    if not math.isfinite(v):
        return
    figure = {"exp": math.expm1(min(v, 50.0)), "pct": 100 * v}.get(feature.reason_figure, v)
    if (r.low is not None and figure < r.low) or (r.high is not None and figure > r.high):
        return  # rounding through the log put it just outside
    assert reason_phrase(feature, v) == _raw(feature, v)
    assert _numbers_phrased(feature, [v]) == [_raw(feature, v)]


def test_the_issues_figures_are_rephrased_and_normal_ones_kept() -> None:
    def say(name: str, v: float) -> str:
        return reason_phrase(FEATURES[name], v)

    assert say("dist_next_tier_log", math.log1p(3967.25)) == (
        "assets must grow more than tenfold to reach the next tier"
    )
    assert say("aum_log", math.log1p(2)) == "assets here are close to nothing (under CNY 100)"
    assert say("aum_total", 2.0) == "assets here are close to nothing (under CNY 100)"
    # ordinary values read exactly as before
    assert say("dist_next_tier_log", math.log1p(0.14)) == (
        "assets must grow 14% to reach the next tier"
    )
    assert say("dist_next_tier_pct", 0.12) == "12% short of the next tier's threshold"
    assert say("aum_log", math.log1p(50_000)) == "assets here of CNY 50,000"
    assert say("aum_chg_3m", math.log(0.5)) == "assets changed -50% over 3 months"
    assert say("txn_vs_12m", math.log(0.4)) == (
        "transactions last month -60% against the 12-month average"
    )
    # the bounds are inclusive: tenfold itself is still a figure
    assert say("dist_next_tier_log", math.log(9.99)) == (
        "assets must grow 899% to reach the next tier"
    )


def test_a_range_must_fit_its_reason() -> None:
    base = {
        "name": "x_log",
        "dtype": "float32",
        "window_months": 1,
        "source": "snapshots",
        "description": "a feature for the test",
        "reason": "assets here of CNY {exp:,.0f}",
    }
    ok = FeatureSpec.model_validate({**base, "reason_range": {"low": 100, "below": "no assets"}})
    assert ok.reason_figure == "exp"
    bad = [
        {"low": 100},  # no phrase
        {"high": 9, "below": "too far off"},  # the wrong phrase
        {"low": 5, "below": "too little", "high": 1, "above": "too much"},
        {"low": 100, "below": "under CNY {exp}"},  # the phrase shows a figure
    ]
    for r in bad:
        with pytest.raises(ValidationError):
            FeatureSpec.model_validate({**base, "reason_range": r})
    for other in ({"dtype": "category", "reason": "in the {value} tier"}, {"reason": "a|b"}):
        with pytest.raises(ValidationError, match="reason_range"):
            FeatureSpec.model_validate(
                {**base, **other, "reason_range": {"low": 1, "below": "too little"}}
            )


# --- through the scoring core -------------------------------------------------------------


@pytest.fixture(scope="module")
def upgrade_rows(champions, trainable_book, score_month):
    from bookpulse.features import build_from_book

    frame = build_from_book(trainable_book, score_month)[0].head(400).reset_index(drop=True)
    # the issue's rows: a balance of a few yuan, hence growth of thousands of percent
    frame.loc[:19, "aum_log"] = math.log1p(2.0)
    frame.loc[:19, "dist_next_tier_log"] = math.log(10_000 / 3.0)
    frame.loc[:19, "dist_next_tier_pct"] = 0.9997
    frame.loc[20:39, "aum_chg_3m"] = math.log(4_000.0)
    frame.loc[20:39, "external_gap_log"] = 11.0
    return frame


@pytest.mark.parametrize("name", ["churn", "tier_upgrade", "wealth_take_up", "card_activation"])
def test_scored_reasons_differ_in_group_and_print_no_absurd_figure(
    name, champions, catalogs, upgrade_rows, trainable_book, score_month
) -> None:
    champ = champions[name]
    if champ.spec.entity == "card":
        from bookpulse.features import build_from_book

        frame = build_from_book(trainable_book, score_month)[1]
    else:
        frame = upgrade_rows
    catalog = catalogs[champ.spec.entity]
    out = score_frame(champ, frame, catalog)
    group = {f: catalog[f].group for f in champ.model.features}
    _, credit = champ.paths.score(model_matrix(champ.model, frame))
    codes = feature_groups(champ.model.features, catalog)
    top = top_k_grouped(credit, codes, 3)
    assert list(out["reason1_feature"]) == [champ.model.features[c] for c in top[:, 0]]
    for i, row in out.iterrows():
        g1, g2 = group[row["reason1_feature"]], group[row["reason2_feature"]]
        if g1 == g2:  # only when no other group has any credit
            others = [j for j, f in enumerate(champ.model.features) if group[f] != g1]
            assert not np.any(credit[i, others]), (name, i)
        for j in (1, 2, 3):
            assert not absurd(row[f"reason{j}_sentence"]), row[f"reason{j}_sentence"]
    # the API's path says the same, word for word
    records = [
        {f: (None if pd.isna(v) else v) for f, v in r.items()}
        for r in frame[champ.model.features].head(40).to_dict("records")
    ]
    served = score_records(champ, records, catalog)
    for i, s in enumerate(served):
        for j, reason in enumerate(s["reasons"], start=1):
            assert reason["feature"] == out.at[i, f"reason{j}_feature"]
            assert reason["sentence"] == out.at[i, f"reason{j}_sentence"]
