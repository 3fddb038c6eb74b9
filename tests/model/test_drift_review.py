"""Drift and review figures on hand-made data: each would break if the arithmetic were wrong."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bookpulse.model.drift import ACT, compare, psi_bound, reference_profile
from bookpulse.model.fit import ScoringModel, prepare
from bookpulse.model.realised import by_branch, list_outcomes, list_totals, realised


def _frame(n: int, seed: int, shift: float = 0.0, missing: float = 0.1, web: float = 0.3):
    rng = np.random.default_rng(seed)
    balance = rng.lognormal(10 + shift, 1.0, n)
    balance[rng.random(n) < missing] = np.nan
    channel = np.where(rng.random(n) < web, "web", "branch")
    return pd.DataFrame(
        {
            "balance": balance,
            "products": rng.integers(1, 6, n).astype(float),
            "channel": pd.Categorical(channel, categories=["branch", "web"]),
        }
    )


@pytest.fixture(scope="module")
def model() -> ScoringModel:
    """A real small booster over the three features (channel categorical)."""
    df = _frame(4_000, 0)
    y = (np.nan_to_num(np.log(df["balance"]), nan=10) + df["products"] / 3 > 11).astype(int)
    features, categories = ["balance", "products", "channel"], {"channel": ["branch", "web"]}
    data = lgb.Dataset(prepare(df, features, categories), y)
    booster = lgb.train({"verbose": -1, "num_leaves": 7}, data, num_boost_round=20)
    return ScoringModel(booster=booster, features=features, categories=categories)


def _months(n: int, per_month: int) -> np.ndarray:
    return np.array([f"2026-{1 + i // per_month:02d}" for i in range(n)])


@pytest.fixture(scope="module")
def reference(model) -> dict:
    """Four months of 5,000 rows."""
    df = _frame(20_000, 1)
    return reference_profile(model, df, model.predict(df), _months(20_000, 5_000))


def test_the_reference_against_itself_shows_no_drift(model):
    df = _frame(5_000, 2)
    ref = reference_profile(model, df, model.predict(df), _months(5_000, 5_000))
    d = compare("m", ref, df, model.predict(df))
    assert d.volume_ratio == 1.0
    assert d.score_psi == pytest.approx(0.0, abs=1e-12)
    assert d.features["psi"].max() == pytest.approx(0.0, abs=1e-12)
    assert d.verdict == "stable" and d.reasons == []


def test_a_fresh_sample_of_the_same_book_is_stable(model, reference):
    df = _frame(5_000, 3)
    d = compare("m", reference, df, model.predict(df))
    assert d.verdict == "stable", d.reasons
    assert d.score_psi < 0.02


def test_a_balance_shift_is_acted_on_and_named(model, reference):
    df = _frame(5_000, 4, shift=0.8)
    d = compare("m", reference, df, model.predict(df))
    assert d.verdict == "act"
    row = d.features.set_index("feature").loc["balance"]
    assert row["psi"] >= 0.25 and row["psi_verdict"] == "act"
    assert any(r.startswith("balance PSI") for r in d.reasons)
    assert d.features.set_index("feature").loc["products", "psi_verdict"] == "stable"


def test_a_missing_feed_is_flagged(model, reference):
    df = _frame(5_000, 5, missing=0.4)
    d = compare("m", reference, df, model.predict(df))
    row = d.features.set_index("feature").loc["balance"]
    assert row["missing_now"] == pytest.approx(0.4, abs=0.02)
    assert row["missing_verdict"] == "act"
    assert d.verdict == "act"


def test_a_channel_mix_change_is_shown(model, reference):
    df = _frame(5_000, 6, web=0.8)
    d = compare("m", reference, df, model.predict(df))
    row = d.features.set_index("feature").loc["channel"]
    assert row["psi_verdict"] == "act"
    level, before, _, after = row["largest_mix_change"].split()
    shares = {"web": (30, 80), "branch": (70, 20)}[level]
    assert (int(before[:-1]), int(after[:-1])) == pytest.approx(shares, abs=2)


def test_a_small_population_is_not_flagged_for_noise(model):
    """150 rows a month: raw PSI passes 0.10 by chance; the threshold keeps it quiet."""
    df = _frame(1_200, 7)
    ref = reference_profile(model, df, model.predict(df), _months(1_200, 150))
    flagged = 0
    for seed in range(20):
        df = _frame(150, 100 + seed)
        flagged += compare("m", ref, df, model.predict(df)).verdict != "stable"
    assert flagged <= 1
    assert psi_bound(10, 1_200, 150) > 0.10  # without it these would be watched


def test_the_usual_month_to_month_movement_is_not_drift(model):
    """A reference whose months alternate between two channel mixes (lumpy bulk batches):
    a month like either is stable; a mix beyond both is not."""
    parts = [_frame(2_000, 20 + i, web=0.2 if i % 2 else 0.5) for i in range(6)]
    df = pd.concat(parts, ignore_index=True)
    ref = reference_profile(model, df, model.predict(df), _months(12_000, 2_000))
    lumpy = _frame(2_000, 40, web=0.5)
    assert compare("m", ref, lumpy, model.predict(lumpy)).verdict == "stable"
    beyond = _frame(2_000, 41, web=0.95)
    d = compare("m", ref, beyond, model.predict(beyond))
    assert d.features.set_index("feature").loc["channel", "psi_verdict"] == "act"


def test_a_surge_of_rows_is_flagged(model, reference):
    df = _frame(20_000, 8)
    d = compare("m", reference, df, model.predict(df))
    assert d.volume_ratio == pytest.approx(4.0)
    assert d.volume_verdict == "act"
    assert any("4.0x the reference's average month" in r for r in d.reasons)


def test_a_few_missing_values_or_a_rare_new_level_are_not_a_shift(model, reference):
    """A feature never missing in the reference going 3% missing, or a level never seen taking
    2%: the missing-rate rule judges the first; the second is worth a look (watch), not an
    alarm."""
    df = _frame(5_000, 9)
    rng = np.random.default_rng(0)
    df.loc[rng.random(len(df)) < 0.03, "products"] = np.nan
    channel = df["channel"].astype(object)
    channel[rng.random(len(df)) < 0.02] = "kiosk"
    df["channel"] = channel
    d = compare("m", reference, df, model.predict(df))
    rows = d.features.set_index("feature")
    assert rows.loc["products", "psi"] < 0.02
    assert 0.05 < rows.loc["channel", "psi"] < ACT
    assert rows.loc["products", "missing_now"] == pytest.approx(0.03, abs=0.01)
    assert d.verdict != "act", d.reasons


def test_a_model_with_every_feature_left_out_still_answers(model, reference):
    df = _frame(5_000, 10)
    d = compare("m", reference, df, model.predict(df), skip=frozenset(model.features))
    assert d.features.empty and list(d.features.columns)[:2] == ["feature", "gain_rank"]
    assert d.verdict == "stable"


def test_a_small_months_auc_is_not_called_weaker_by_chance():
    """150 rows of a model as good as promised: its AUC wanders by ~0.04, within 3 SE."""
    called = 0
    for seed in range(20):
        y, p, d = _outcomes(150, 50 + seed)
        if 0 < y.sum() < len(y):
            r = realised("card_activation", y, p, d, {"auc": 0.72})
            called += any(x.startswith("AUC") for x in r.reasons)
    assert called <= 1


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_psi_is_zero_only_for_the_same_shares(seed):
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.ones(6))
    b = rng.dirichlet(np.ones(6))
    from bookpulse.model.evaluate import psi_from_shares

    assert psi_from_shares(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi_from_shares(a, b) > 0
    assert psi_from_shares(a, b) == pytest.approx(psi_from_shares(b, a))  # symmetric


def _outcomes(n: int, seed: int, factor: float = 1.0):
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 15, n)
    y = (rng.random(n) < np.clip(p * factor, 0, 1)).astype(int)
    order = np.argsort(-p, kind="stable")
    decile = np.empty(n, int)
    for i, idx in enumerate(np.array_split(order, 10)):
        decile[idx] = i + 1
    return y, p, decile


PROMISE = {"auc": 0.7, "ece": 0.005}


def test_outcomes_drawn_from_the_probabilities_are_as_promised():
    y, p, d = _outcomes(20_000, 0)
    r = realised("churn", y, p, d, PROMISE)
    assert r.verdict == "as promised", r.reasons
    assert r.metrics["observed_over_expected"] == pytest.approx(1.0, abs=0.05)
    assert r.by_decile["rows"].sum() == 20_000
    top = r.by_decile.set_index("decile")
    assert top.loc[1, "realised_rate"] > top.loc[10, "realised_rate"]


def test_twice_the_events_is_miscalibration():
    y, p, d = _outcomes(20_000, 1, factor=2.0)
    r = realised("churn", y, p, d, PROMISE)
    assert r.verdict == "off promise"
    assert r.metrics["observed_over_expected"] == pytest.approx(2.0, rel=0.1)
    assert any("miscalibrated" in x and "more than predicted" in x for x in r.reasons)


def test_half_the_events_is_miscalibration_the_other_way():
    y, p, d = _outcomes(20_000, 2, factor=0.5)
    r = realised("card_activation", y, p, d, PROMISE)
    assert any("fewer than predicted" in x for x in r.reasons)


def test_a_weaker_ranking_is_named():
    y, p, d = _outcomes(20_000, 3)
    shuffled = np.random.default_rng(0).permutation(p)
    r = realised("churn", y, shuffled, d, PROMISE)
    assert any(x.startswith("AUC") for x in r.reasons)


def test_list_outcomes_count_per_rm():
    population = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6, 7],
            "branch_id": [1, 1, 1, 1, 2, 2, 2],
            "rm_id": [10, 10, 10, 11, 20, 20, 20],
            "y": [1, 0, 1, 0, 0, 1, 0],
        }
    )
    table = list_outcomes(population, pd.Series([1, 2, 5]), "churned")
    by_rm = table.set_index("rm_id")
    assert list(by_rm.index) == [10, 20]  # RM 11 listed nobody
    assert by_rm.loc[
        10, ["listed", "listed_churned", "not_listed", "not_listed_churned"]
    ].tolist() == [2, 1, 1, 1]
    assert by_rm.loc[
        20, ["listed", "listed_churned", "not_listed", "not_listed_churned"]
    ].tolist() == [1, 0, 2, 1]
    totals = list_totals(table, "churned")
    assert totals["listed"] == 3 and totals["listed_churned"] == 1
    assert totals["not_listed_rate"] == pytest.approx(2 / 3)


def test_caused_measures_treated_against_hold_out_with_an_honest_interval():
    """Many simulated campaigns with a known effect: the interval covers it about 95% of the
    time, and what was kept is the effect times the treated rows."""
    from bookpulse.model.realised import caused

    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(200):
        n = 3_000
        treated = rng.random(n) < 0.9
        y = (rng.random(n) < np.where(treated, 0.10, 0.13)).astype(float)  # the call: -3 points
        rows = pd.DataFrame(
            {
                "treated": treated,
                "y": y,
                "branch_id": rng.integers(1, 4, n),
                "rm_id": rng.integers(1, 10, n),
                "assets": rng.lognormal(10, 1, n),
            }
        )
        c = caused("retention", "churned", "lower", rows, true_effect=-0.03)
        covered += c.totals["effect_low"] <= -0.03 <= c.totals["effect_high"]
        if trial == 0:
            t = c.totals
            assert t["treated"] + t["control"] == n == t["listed"]
            assert t["rows_gained"] == pytest.approx(-t["effect"] * t["treated"])
            assert t["rows_gained_low"] <= t["rows_gained"] <= t["rows_gained_high"]
            assert set(c.by_group["level"]) == {"branch", "rm"}
            per_rm = c.by_group.loc[c.by_group["level"].eq("rm")]
            assert (per_rm["treated"] + per_rm["control"]).sum() == n
    assert 0.90 <= covered / 200 <= 0.99


def test_a_list_is_summarised_per_branch_where_it_told_most_first():
    rng = np.random.default_rng(3)
    n = 600
    population = pd.DataFrame(
        {
            "id": np.arange(n),
            "branch_id": rng.integers(1, 4, n),
            "rm_id": rng.integers(1, 13, n),
            "y": (rng.random(n) < 0.2).astype(int),
        }
    )
    listed = population.loc[rng.random(n) < 0.3, "id"]
    table = list_outcomes(population, listed, "churned")
    branches = by_branch(table, "churned")
    assert branches["branch_id"].tolist() == sorted(
        set(population["branch_id"]),
        key=lambda b: (-branches.set_index("branch_id").loc[b, "difference"], b),
    )
    assert branches["listed"].sum() == len(listed)
    assert branches["difference"].is_monotonic_decreasing
    one = branches.iloc[0]
    mine = population.loc[population["branch_id"] == one["branch_id"]]
    on = mine["id"].isin(set(listed))
    assert one["listed_rate"] == pytest.approx(mine.loc[on, "y"].mean())
    assert one["rms"] == table.loc[table["branch_id"] == one["branch_id"], "rm_id"].nunique()
