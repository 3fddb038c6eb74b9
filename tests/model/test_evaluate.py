"""Validation-pack metrics on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bookpulse.model.evaluate import (
    calibration_metrics,
    calibration_noise,
    evaluate,
    expected_calibration_error,
    gains_table,
    ks_statistic,
    lift_and_capture,
    psi,
)


def test_ks_is_one_for_a_perfect_split_and_zero_for_noise() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    assert ks_statistic(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])) == pytest.approx(1.0)
    assert ks_statistic(y, np.full(6, 0.5)) == pytest.approx(0.0)


def test_calibration_error_by_hand() -> None:
    # two bins of 5: probabilities 0.1 with 1 event (rate 0.2), 0.5 with 3 events (0.6)
    p = np.array([0.1] * 5 + [0.5] * 5)
    y = np.array([1, 0, 0, 0, 0, 1, 1, 1, 0, 0])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0, 1] * 50), np.full(100, 0.5)) == 0.0


def test_lift_and_capture_at_the_top() -> None:
    # 10 rows, 2 events, both in the top 2 scores
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.linspace(1, 0.1, 10)
    lift, capture = lift_and_capture(y, p, 0.2)
    assert lift == pytest.approx(5.0) and capture == pytest.approx(1.0)
    g = gains_table(y, p)
    assert g.loc[0, "decile"] == 1 and g.loc[0, "events"] == 1
    assert g["cum_capture"].iloc[-1] == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=50, max_size=300))
def test_psi_is_zero_against_itself_and_grows_with_a_shift(scores: list[float]) -> None:
    a = np.asarray(scores)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-9)
    assert psi(a, a) <= psi(a, np.clip(a + 0.5, 0, 2)) + 1e-12


def test_psi_sees_a_shift_away_from_constant_training_scores() -> None:
    const = np.full(500, 0.3)
    assert psi(const, const) == pytest.approx(0.0, abs=1e-9)
    assert psi(const, np.full(500, 0.1)) > 1.0


def test_calibration_noise_shrinks_with_rows_and_excess_finds_real_miscalibration() -> None:
    rng = np.random.default_rng(3)
    small, large = rng.uniform(0.1, 0.9, 500), rng.uniform(0.1, 0.9, 50_000)
    assert 0.03 < calibration_noise(small) < 0.07  # ~0.8 * sqrt(0.2 / 50) per bin
    assert calibration_noise(large) < 0.006
    # calibrated outcomes: the excess over the noise is small
    y = (rng.random(500) < small).astype(int)
    assert calibration_metrics(y, small)["ece_excess"] < 0.03
    # every probability 0.15 too high: the excess shows it even on 500 rows
    off = calibration_metrics(y, np.clip(small + 0.15, 0, 1))
    assert off["ece_excess"] > 0.08
    assert off["ece_excess"] == pytest.approx(max(0.0, off["ece"] - off["ece_noise"]))


def test_evaluate_reports_the_ceiling_and_monthly_aucs() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, 2000)
    y = (rng.uniform(0, 1, 2000) < truth).astype(int)
    noisy = np.clip(truth + rng.normal(0, 0.3, 2000), 0, 1)
    months = pd.Series(pd.to_datetime(["2026-05-31", "2026-06-30"] * 1000))
    ev = evaluate(y, noisy, months, noisy, truth)
    m = ev.metrics
    assert m["ceiling_auc"] > m["auc"] > 0.5
    assert m["gap_to_ceiling"] == pytest.approx(m["ceiling_auc"] - m["auc"])
    # calibration against the truth: the noisy scores are off, the truth itself is not
    assert m["ece_truth"] > 0.05
    assert evaluate(y, truth, months, truth, truth).metrics["ece_truth"] == 0.0
    assert set(ev.auc_by_month) == {"2026-05", "2026-06"}
    assert {"pr_auc", "ks", "brier", "ece", "lift_top5", "capture_top20", "psi_train_test"} <= set(
        m
    )


def test_downsampling_keeps_every_event_and_weights_back() -> None:
    from bookpulse.model.fit import downsample

    rng = np.random.default_rng(1)
    y = (rng.random(100_000) < 0.04).astype(int)
    frame = pd.DataFrame({"y": y, "x": rng.random(100_000)})
    small, w = downsample(frame, "y", 20_000)
    assert len(small) <= 21_000 and small["y"].sum() == y.sum()
    negatives = (small["y"] == 0).to_numpy()
    assert w[negatives].sum() == pytest.approx((y == 0).sum(), rel=0.03)
    assert (w[~negatives] == 1).all()
    same, none = downsample(frame, "y", None)
    assert same is frame and none is None


def test_delong_matches_sklearn_and_a_paired_bootstrap() -> None:
    """DeLong's paired test: the AUCs are sklearn's exactly, the standard error of the
    difference is a paired bootstrap's, and identical scores differ by nothing."""
    from sklearn.metrics import roc_auc_score

    from bookpulse.model.evaluate import delong_paired

    rng = np.random.default_rng(3)
    n = 3000
    y = rng.random(n) < 0.15
    signal = rng.normal(size=n) + y
    a = np.round(signal + rng.normal(size=n), 1)  # ties, as calibrated scores have
    b = signal + 0.5 * rng.normal(size=n)
    r = delong_paired(y, a, b)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    boot = []
    for _ in range(300):
        i = rng.integers(0, n, n)
        boot.append(roc_auc_score(y[i], b[i]) - roc_auc_score(y[i], a[i]))
    assert r.se == pytest.approx(np.std(boot), rel=0.15)
    assert r.low < r.diff < r.high and r.p_value < 0.05 and r.verdict(0.01) == "better"
    same = delong_paired(y, a, a)
    assert same.diff == 0 and same.se == 0 and same.p_value == 1.0


@pytest.mark.parametrize(
    "low, high, margin, verdict",
    [
        (0.001, 0.02, 0.01, "better"),
        (-0.004, 0.006, 0.01, "equivalent"),
        (-0.004, 0.03, 0.01, "not worse"),
        (-0.03, -0.02, 0.01, "worse"),
        (-0.03, 0.01, 0.01, "inconclusive"),
    ],
)
def test_the_promotion_verdicts(low, high, margin, verdict) -> None:
    from bookpulse.model.evaluate import PairedAUC

    r = PairedAUC(0.8, 0.8, (low + high) / 2, 0.01, 0.0, 1.0, low, high)
    assert r.verdict(margin) == verdict
