"""Reasons an RM trusts: each from its own feature group, graded phrasing, no absurd figure.

The selection (`top_k_grouped`) is checked against its definition on random credits; the
phrasing against the catalog's `reason_bands` (every value in exactly one band, the bound
itself in the band above, batch and API word for word, what the words claim true of the
values, no absurd figure on extreme values); both through the scoring core (batch and API
paths) on small real champions.
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
BANDED = [f for f in FEATURES.values() if f.reason_bands]
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
def test_the_plain_top_k_is_the_largest_credits_ties_to_the_lower_index(case) -> None:
    credit, _, k = case
    want = np.argsort(-np.abs(credit), axis=1, kind="stable")[:, : min(k, credit.shape[1])]
    assert np.array_equal(top_k(credit, k), want)


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


# --- phrasing: reason_bands ---------------------------------------------------------------


def _figure(spec: FeatureSpec, v: float) -> float:
    """The figure the feature's reason prints for the value (the bands' units)."""
    key = spec.reason_figure
    return math.expm1(min(v, 50.0)) if key == "exp" else 100.0 * v if key == "pct" else v


def _value_for(spec: FeatureSpec, figure: float) -> float:
    """The feature value whose printed figure is `figure`."""
    key = spec.reason_figure
    return math.log1p(figure) if key == "exp" else figure / 100 if key == "pct" else figure


def _expected(spec: FeatureSpec, v: float) -> str:
    """The band's text by the documented rule, written out band by band: the first band
    whose `below` the figure is under (a figure equal to a bound falls in the band above);
    past the last bound, the last band without a bound or else the plain reason."""
    figure = _figure(spec, v)
    for band in spec.reason_bands:
        if band.below is None or figure < band.below:
            text = band.text or spec.reason
            break
    else:
        text = spec.reason
    return text.format(value=v, exp=math.expm1(min(v, 50.0)), pct=100.0 * v)


def test_every_figure_that_can_run_away_has_bands() -> None:
    """Growth printed from a log ({exp}) and amounts in CNY are where absurd figures come
    from (a balance near zero): each such phrase declares bands that word them."""
    for f in FEATURES.values():
        reason = f.reason or ""
        if "{exp" in reason or "CNY {" in reason:
            assert f.reason_bands, f.name


@pytest.mark.parametrize("feature", BANDED, ids=lambda f: f.name)
def test_a_band_reads_like_a_reason(feature: FeatureSpec) -> None:
    texts = feature.reason_band_table()[1]
    assert len(set(texts)) == len(texts), "two bands read alike: merge them"
    for text in texts:
        assert text == text.strip() and text[0] == text[0].lower()
        assert not text.endswith((".", ";", ",")) and len(text) <= 90
        assert not set(text.lower().replace(",", " ").split()) & set(JUDGING)


bound_values = st.sampled_from(BANDED).flatmap(
    lambda f: st.tuples(
        st.just(f),
        st.sampled_from([b.below for b in f.reason_bands if b.below is not None]),
        st.sampled_from([-1e-9, 0.0, 1e-9, -1e-3, 1e-3]),
    )
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    feature=st.sampled_from(BANDED),
    value=st.one_of(
        st.floats(-60, 60, allow_nan=False),
        st.floats(-1e12, 1e12, allow_nan=False),
        st.sampled_from([0.0, 1e-9, -1e-9, 0.7, 2.3, 12.3, 1_234_567.0]),
    ),
)
def test_every_value_reads_its_one_band_and_no_absurd_figure(
    feature: FeatureSpec, value: float
) -> None:
    one = reason_phrase(feature, value)
    assert one == _expected(feature, value)
    assert not absurd(one), (feature.name, value, one)
    # the vectorised path (batch) says the same as the one-value path (API)
    none = reason_phrase(feature, None)
    assert _numbers_phrased(feature, [value, float("nan")]) == [one, none]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(bound_values)
def test_at_and_around_each_bound_batch_and_api_agree(case) -> None:
    feature, bound, nudge = case
    v = _value_for(feature, bound) + nudge
    if not math.isfinite(v):
        return
    values = [v, np.nextafter(v, -np.inf), np.nextafter(v, np.inf)]
    values = [float(x) for x in values]
    assert _numbers_phrased(feature, values) == [reason_phrase(feature, x) for x in values]
    assert [reason_phrase(feature, x) for x in values] == [_expected(feature, x) for x in values]


def _synthetic(bounds: list[float], last_unbounded: bool) -> FeatureSpec:
    bands = [{"below": b, "text": f"band {i} at {{value:g}}"} for i, b in enumerate(bounds)]
    if last_unbounded:
        bands.append({"text": "the top band at {value:g}"})
    return FeatureSpec.model_validate(
        {
            "name": "x_value",
            "dtype": "float64",
            "window_months": 1,
            "source": "snapshots",
            "description": "a feature for the test",
            "reason": "plain {value:g}",
            "reason_bands": bands,
        }
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    bounds=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6, unique=True).map(
        sorted
    ),
    last_unbounded=st.booleans(),
    picks=st.lists(st.floats(-2e6, 2e6, allow_nan=False), max_size=8),
)
def test_a_band_holds_its_lower_bound_and_not_its_upper(bounds, last_unbounded, picks) -> None:
    """Bands [previous bound, below): exactly one band per figure, the bound itself in the
    band above it, as the tiers (`domain.tier_index`)."""
    spec = _synthetic(bounds, last_unbounded)
    top = "the top band at {:g}" if last_unbounded else "plain {:g}"
    values = [*bounds, *[float(np.nextafter(b, -np.inf)) for b in bounds], *picks]
    for v in values:
        inside = [i for i in range(len(bounds) + 1) if _in_band(v, bounds, i)]
        assert len(inside) == 1
        i = inside[0]
        want = f"band {i} at {v:g}" if i < len(bounds) else top.format(v)
        assert reason_phrase(spec, v) == want
    assert _numbers_phrased(spec, values) == [reason_phrase(spec, v) for v in values]
    for i, b in enumerate(bounds):  # the edges: the bound opens the next band
        above = f"band {i + 1} at {b:g}" if i + 1 < len(bounds) else top.format(b)
        assert reason_phrase(spec, b) == above


def _in_band(v: float, bounds: list[float], i: int) -> bool:
    low = bounds[i - 1] if i > 0 else -math.inf
    high = bounds[i] if i < len(bounds) else math.inf
    return low <= v < high


# --- the bands say what is true --------------------------------------------------------------


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    feature=st.sampled_from(["txn_vs_12m", "logins_vs_12m"]),
    now=st.floats(0, 500),
    usual=st.floats(0, 500),
)
def test_against_the_12_month_average_the_words_are_true(feature, now, usual) -> None:
    """The feature is log(1 + last month) - log(1 + the 12-month average); what a band says
    about last month against the average holds for the counts themselves."""
    phrase = reason_phrase(FEATURES[feature], math.log1p(now) - math.log1p(usual))
    claims = {
        "under a tenth of": now < usual / 10,
        "under a quarter of": now < usual / 4,
        "under a third of": now < usual / 3,
        "under half": now < usual / 2,
        "more than double": now > 2 * usual,
        "more than ten times": now > 10 * usual,
    }
    for words, true in claims.items():
        if words in phrase:
            assert true, (now, usual, phrase)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(aum=st.floats(0, 5_999_999), share=st.floats(0.0, 1.0))
def test_distance_to_the_next_tier_the_words_are_true(aum: float, share: float) -> None:
    from bookpulse.domain import TIER_LOWER_BOUNDS

    nxt = float(TIER_LOWER_BOUNDS[np.searchsorted(TIER_LOWER_BOUNDS, aum, side="right")])
    growth = nxt / (1 + aum) - 1  # what dist_next_tier_log prints
    by_log = reason_phrase(FEATURES["dist_next_tier_log"], math.log(nxt) - math.log1p(aum))
    by_pct = reason_phrase(FEATURES["dist_next_tier_pct"], (nxt - aum) / nxt)
    short = (nxt - aum) / nxt
    claims = {
        "within 0.5% of the next tier": growth < 0.005 or short < 0.005,
        "within 5% of the next tier": growth < 0.05 or short < 0.05,
        "by a quarter or more": growth >= 0.25,
        "by half or more": growth >= 0.5,
        "more than double": aum * 2 < nxt,
        "more than tenfold": aum * 10 < nxt,
        "a quarter or more short": short >= 0.25,
        "half-way or less": aum <= nxt / 2,
    }
    for phrase in (by_log, by_pct):
        for words, true in claims.items():
            if words in phrase:
                assert true, (aum, phrase)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(aum=st.floats(100, 1e9).filter(lambda x: all(abs(x - b) > 1 for b in (1e4, 5e4, 5e5, 6e6))))
def test_a_balance_is_named_by_its_tier(aum: float) -> None:
    from bookpulse.domain import tier_name

    tier = str(tier_name(np.array([aum]))[0])
    for name, v in (("aum_total", aum), ("aum_log", math.log1p(aum))):
        phrase = reason_phrase(FEATURES[name], v)
        words = {
            "potential": "a potential-tier balance",
            "effective": "an effective-tier balance",
            "mid": "mid tier" if aum < 1e5 or aum >= 4e5 else "a mid-tier balance",
            "high_end": "a high-end balance",
            "private": "a private-banking balance",
        }[tier]
        assert words in phrase, (aum, phrase)
        if "within CNY 100,000 of the high-end tier" in phrase:
            assert 4e5 <= aum < 5e5


def test_graded_phrases_read_as_intended() -> None:
    def say(name: str, v: float) -> str:
        return reason_phrase(FEATURES[name], v)

    assert say("dist_next_tier_log", math.log1p(3967.25)) == (
        "assets must grow more than tenfold to reach the next tier"
    )
    assert say("aum_log", math.log1p(2)) == "assets here are close to nothing (under CNY 100)"
    assert say("aum_total", 2.0) == "assets here are close to nothing (under CNY 100)"
    assert say("dist_next_tier_log", math.log1p(0.14)) == (
        "assets must grow 14% to reach the next tier"
    )
    assert say("dist_next_tier_log", math.log1p(0.032)) == (
        "assets within 5% of the next tier (must grow 3.2%)"
    )
    assert say("dist_next_tier_log", math.log1p(0.4)) == (
        "assets must grow by a quarter or more (40%) to reach the next tier"
    )
    assert say("dist_next_tier_log", math.log(9.99)) == (
        "assets must more than double to reach the next tier (grow 899%)"
    )
    assert say("dist_next_tier_pct", 0.12) == "12% short of the next tier's threshold"
    assert say("dist_next_tier_pct", 0.6) == (
        "half-way or less to the next tier's threshold (60% short)"
    )
    assert say("aum_log", math.log1p(50_000)) == (
        "assets here of CNY 50,000, at the low end of the mid tier"
    )
    assert (
        say("aum_log", math.log1p(20_000)) == "assets here of CNY 20,000, an effective-tier balance"
    )
    assert say("aum_chg_3m", math.log(0.5)) == "assets changed -50% over 3 months"
    assert say("txn_vs_12m", math.log(0.4)) == (
        "transactions last month under half the 12-month average (-60%)"
    )
    assert say("txn_vs_12m", math.log(0.8)) == (
        "transactions last month -20% against the 12-month average"
    )
    assert say("aum_drawdown_12m", 0.0) == "assets at or near their 13-month high"


# --- through the scoring core -------------------------------------------------------------


@pytest.fixture(scope="module")
def upgrade_rows(champions, trainable_book, score_month):
    from bookpulse.features import build_from_book

    frame = build_from_book(trainable_book, score_month)[0].head(400).reset_index(drop=True)
    # the rows: a balance of a few yuan, hence growth of thousands of percent
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


def test_feature_groups_are_worked_out_once_per_catalog(champions, catalogs) -> None:
    """The API asks for a champion's feature groups on every call: worked out once."""
    champ, catalog = champions["churn"], catalogs["customer"]
    first = champ.reason_groups(catalog)
    assert champ.reason_groups(catalog) is first
    assert np.array_equal(first, feature_groups(champ.model.features, catalog))
    other = dict(catalog)  # another catalog object: its own entry, the same codes
    assert champ.reason_groups(other) is not first
    assert np.array_equal(champ.reason_groups(other), first)


def test_bands_keyed_on_exp_are_found_alike_when_no_band_text_prints_it() -> None:
    """The band is chosen on the figure the reason prints (e^value - 1 here) in both paths,
    even when every band has words of its own and none prints {exp}."""
    spec = FeatureSpec(
        name="growth_log",
        dtype="float32",
        window_months=1,
        source="snapshots",
        description="Change in log(1 + AUM) over a period.",
        reason="assets grew {exp:+.0%}",
        reason_bands=[
            {"below": 1.0, "text": "assets grew, less than doubling"},
            {"text": "assets more than doubled"},
        ],
    )
    values = [0.3, 0.69, 0.7, 0.8, 2.0]  # e^0.7 - 1 = 1.01: the bound sits between 0.69 and 0.7
    want = ["assets grew, less than doubling"] * 2 + ["assets more than doubled"] * 3
    assert [reason_phrase(spec, v) for v in values] == want
    assert _numbers_phrased(spec, values) == want
