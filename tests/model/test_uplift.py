"""The uplift core (`bookpulse.model.uplift`): the measures by hand and by their invariants, and
the X-learner recovering a known effect, kept as plain LightGBM boosters that score as EconML
does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bookpulse.model import uplift

PARAMS = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 4, "min_child_samples": 50}


def test_qini_curve_and_coefficient_by_hand():
    # ranked: t1 y1, c y0, t1 y0, c y1
    score = np.array([4.0, 3.0, 2.0, 1.0])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    t = np.array([True, False, True, False])
    q = uplift.qini_curve(score, y, t)
    # k=1: 1 - 0 (no control yet); k=2: 1 - 0*1/1; k=3: 1 - 0*2/1; k=4: 1 - 1*2/2
    assert q.tolist() == [1.0, 1.0, 1.0, 0.0]
    line = np.array([0.0, 0.0, 0.0, 0.0])
    assert uplift.qini_coefficient(score, y, t) == pytest.approx(np.mean(q - line) / 4)
    # AUUC: (rate_t - rate_c) x k / n, zero until both arms are in
    gains = [0.0, (1 - 0) * 2, (0.5 - 0) * 3, (0.5 - 0.5) * 4]
    assert uplift.auuc(score, y, t) == pytest.approx(np.mean(gains) / 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=60, unique=True))
def test_expected_gain_is_largest_for_the_true_ranking_and_antisymmetric(effects):
    e = np.array(effects)
    rng = np.random.default_rng(len(effects))
    other = rng.permutation(e.size).astype(float)
    best = uplift.expected_gain(e, e)
    assert uplift.expected_gain(other, e) <= best + 1e-12
    assert uplift.expected_gain(-e, e) == pytest.approx(-best, abs=1e-12)
    assert best >= 0


def test_uplift_by_decile_counts_every_row_once():
    rng = np.random.default_rng(1)
    n = 1_000
    score, y, t = rng.random(n), rng.random(n) < 0.3, rng.random(n) < 0.9
    table = uplift.uplift_by_decile(score, y.astype(float), t, effect=score)
    assert table["rows"].sum() == n and (table["rows"] == 100).all()
    assert (table["treated"] + table["control"]).eq(table["rows"]).all()
    assert table["predicted"].is_monotonic_decreasing
    assert (table["uplift_low"] <= table["uplift"]).all()


def _trial(n: int = 20_000, seed: int = 3) -> pd.DataFrame:
    """A randomised trial: 90% treated; the action adds 20 points where x > 0.5, nothing
    below; a segment column the effect ignores."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    treated = rng.random(n) < 0.9
    p = 0.2 + 0.2 * treated * (x > 0.5)
    return pd.DataFrame(
        {
            "x": x,
            "segment": pd.Categorical(rng.choice(["a", "b"], n)),
            "assignment": np.where(treated, "treated", "control"),
            "event": (rng.random(n) < p).astype(np.int8),
        }
    )


def test_the_x_learner_finds_where_the_action_works_and_scores_as_econml_does():
    rows = _trial()
    model = uplift.fit_uplift(["x", "segment"], rows, "event", PARAMS, PARAMS, threads=1)
    effect = model.effect(rows)
    high, low = effect[rows["x"] > 0.6].mean(), effect[rows["x"] < 0.4].mean()
    assert high == pytest.approx(0.2, abs=0.06) and low == pytest.approx(0.0, abs=0.05)
    # the kept boosters and blend are EconML's own effect
    learner = uplift.x_learner(PARAMS, PARAMS, threads=1)
    X = uplift.feature_matrix(rows, ["x", "segment"], model.categories)
    learner.fit(rows["event"].to_numpy(float), rows["assignment"].eq("treated").to_numpy(int), X=X)
    np.testing.assert_allclose(effect, learner.effect(X), rtol=1e-9, atol=1e-12)
    # and survive the JSON round trip, strings for categoricals included
    again = uplift.UpliftModel.from_json(model.to_json(), threads=1)
    as_text = rows.assign(segment=rows["segment"].astype(str))
    np.testing.assert_allclose(again.effect(as_text), effect)


def test_a_list_without_a_hold_out_is_refused():
    rows = _trial(500).assign(assignment="treated")
    with pytest.raises(ValueError, match="randomised hold-out"):
        uplift.fit_uplift(["x"], rows, "event", PARAMS, PARAMS)


def test_evaluate_against_the_truth():
    rows = _trial(30_000, seed=5)
    true = 0.2 * 0.9 * (rows["x"] > 0.5).to_numpy()  # not needed exactly: a ranking check
    t = rows["assignment"].eq("treated").to_numpy()
    y = rows["event"].to_numpy(float)
    ev = uplift.evaluate(rows["x"].to_numpy(), y, t, true)
    assert ev.metrics["expected_gain_ratio"] == pytest.approx(1.0)  # x ranks as the truth
    assert ev.metrics["ate_realised_low"] < 0.1 < ev.metrics["ate_realised_high"]
    assert ev.metrics["qini"] > 0
    bad = uplift.evaluate(-rows["x"].to_numpy(), y, t, true)
    assert bad.metrics["expected_gain_ratio"] == pytest.approx(-1.0)
    assert bad.metrics["qini"] < 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["retention", "upgrade"]))
def test_the_hold_out_is_a_fixed_share_whatever_the_order_or_the_part(seed, name):
    from bookpulse.model.lists import held_out

    ids = np.random.default_rng(seed).choice(10**9, size=4_000, replace=False) + 100_001
    control = held_out(name, "2026-10-31", ids, 0.1)
    assert 0.08 < control.mean() < 0.12
    order = np.random.default_rng(seed + 1).permutation(ids.size)
    assert (held_out(name, "2026-10-31", ids[order], 0.1) == control[order]).all()
    assert (held_out(name, "2026-10-31", ids[:100], 0.1) == control[:100]).all()  # a part
    assert (held_out(name, "2026-11-30", ids, 0.1) != control).any()  # a new draw each month


def test_the_sentence_an_rm_reads():
    from bookpulse.model.lists import effect_sentences
    from bookpulse.specs import load_uplift_specs

    spec = load_uplift_specs()["retention_call_uplift"][0]
    said = effect_sentences(
        spec,
        "customer",
        np.array([0.18, 0.06, 0.2]),
        np.array([-0.09, 0.001, np.nan]),
        np.array([420_000.0, 1_200_000.0, 10.0]),
    )
    assert said[0] == (
        "a call lowers this customer's 3-month churn risk from 18% to 9%; CNY 420k at stake"
    )
    assert said[1] == (
        "a call raises this customer's 3-month churn risk from 6.0% to 6.1%; CNY 1.2M at stake"
    )
    assert said[2] == ""
