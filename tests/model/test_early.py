"""Early outcome reads and the label-free performance estimate, on hand-made data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bookpulse.model.early import (
    AS_EXPECTED,
    BELOW,
    FEWER,
    MORE,
    Elapsed,
    early_read,
    elapsed,
    estimate,
    expected_auc,
    partial_hazard,
    partial_labels,
    timing,
)
from bookpulse.specs import load_model_specs

MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]
SPECS = load_model_specs()
CHURN, UPGRADE, WEALTH, CARDS = (
    SPECS[n].target for n in ("churn", "tier_upgrade", "wealth_take_up", "card_activation")
)


def test_the_partial_hazard_is_the_constant_monthly_hazard():
    h = np.array([0.01, 0.05, 0.2])
    p = 1 - (1 - h) ** 3  # three months of a constant monthly hazard
    assert partial_hazard(p, 1 / 3) == pytest.approx(h)
    assert partial_hazard(p, 2 / 3) == pytest.approx(1 - (1 - h) ** 2)
    assert partial_hazard(p, 1.0) == pytest.approx(p)
    assert partial_hazard(p, 0.0) == pytest.approx(0.0)


def test_the_window_is_open_between_its_month_and_its_end():
    assert elapsed(CHURN, "2026-05", "2026-05", MONTHS) is None  # not started
    assert elapsed(CHURN, "2026-05", "2026-06", MONTHS) == Elapsed(1, 3, "months")
    assert elapsed(CHURN, "2026-05", "2026-07", MONTHS).fraction == pytest.approx(2 / 3)
    assert elapsed(CHURN, "2026-05", "2026-08", MONTHS) is None  # closed: the review's turn
    # 30 days after a month-end: closed by the next month-end, except after January
    assert elapsed(CARDS, "2026-06", "2026-07", MONTHS) is None
    assert elapsed(CARDS, "2026-01", "2026-02", MONTHS) == Elapsed(28, 30, "days")


def _snap(rows) -> pd.DataFrame:
    cols = ["customer_id", "status", "aum_total", "txn_count", "digital_logins", "has_wealth"]
    return pd.DataFrame(rows, columns=cols)


class Snapshots:
    """Snapshots by month, recording which months were asked for."""

    def __init__(self, by_month: dict[str, pd.DataFrame]) -> None:
        self.by_month, self.asked = by_month, set()

    def __call__(self, wanted):
        self.asked |= set(wanted)
        return pd.concat([self.by_month[m] for m in wanted], ignore_index=True)


@pytest.fixture
def book() -> Snapshots:
    """Four customers over T = 2026-05 and the three months after it."""
    return Snapshots(
        {
            "2026-05": _snap(
                [
                    (1, "open", 20_000, 5, 3, 0),
                    (2, "open", 20_000, 5, 3, 0),
                    (3, "open", 45_000, 5, 3, 0),
                    (4, "open", 20_000, 5, 3, 1),
                ]
            ),
            "2026-06": _snap(
                [
                    (1, "closed", 0, 0, 0, 0),  # gone in the first month
                    (2, "open", 20_000, 5, 3, 0),
                    (3, "open", 60_000, 5, 3, 1),  # moved up a tier, took a wealth product
                    (4, "open", 20_000, 5, 3, 1),
                ]
            ),
            "2026-07": _snap(
                [
                    (1, "closed", 0, 0, 0, 0),
                    (2, "closed", 0, 0, 0, 0),  # gone in the second month
                    (3, "open", 48_000, 5, 3, 0),  # and back down
                    (4, "open", 20_000, 5, 3, 1),
                ]
            ),
            "2026-08": _snap([(i, "closed", 0, 0, 0, 0) for i in (1, 2, 3, 4)]),
        }
    )


def test_partial_labels_use_the_targets_own_rules_up_to_the_month_read(book):
    one = partial_labels(CHURN, "2026-05", "2026-06", MONTHS, book)
    assert dict(zip(one["customer_id"], one["churned"], strict=True)) == {1: 1, 2: 0, 3: 0, 4: 0}
    two = partial_labels(CHURN, "2026-05", "2026-07", MONTHS, book)
    assert dict(zip(two["customer_id"], two["churned"], strict=True)) == {1: 1, 2: 1, 3: 0, 4: 0}
    assert "2026-08" not in book.asked  # point in time: nothing after the month read
    up = partial_labels(UPGRADE, "2026-05", "2026-06", MONTHS, book)
    assert dict(zip(up["customer_id"], up["upgraded"], strict=True))[3] == 1  # higher tier now
    up = partial_labels(UPGRADE, "2026-05", "2026-07", MONTHS, book)
    assert dict(zip(up["customer_id"], up["upgraded"], strict=True))[3] == 0  # a state, undone
    took = partial_labels(WEALTH, "2026-05", "2026-07", MONTHS, book)
    # customer 4 held the product at T: not in the population; 3 held it at a month-end
    assert dict(zip(took["customer_id"], took["took_up"], strict=True)) == {1: 0, 2: 0, 3: 1}
    with pytest.raises(ValueError, match="not open"):
        partial_labels(CHURN, "2026-05", "2026-08", MONTHS, book)


def test_first_use_is_read_over_the_days_elapsed():
    cards = pd.DataFrame(
        {
            "card_id": [1, 2, 3, 4],
            "issue_date": pd.to_datetime(["2026-01-10", "2026-01-20", "2026-01-25", "2025-12-01"]),
            "first_use_date": pd.to_datetime(["2026-02-10", "2026-03-01", pd.NaT, "2026-02-01"]),
        }
    )
    got = partial_labels(CARDS, "2026-01", "2026-02", MONTHS, lambda _: pd.DataFrame(), cards)
    # card 2 is used on day 29 (after the month-end read): not yet; card 4 was issued earlier
    assert dict(zip(got["card_id"], got["activated"], strict=True)) == {1: 1, 2: 0, 3: 0}


def _draws(p: np.ndarray, fraction: float, seed: int, scale: float = 1.0) -> np.ndarray:
    q = np.clip(partial_hazard(p, fraction) * scale, 0, 1)
    return (np.random.default_rng(seed).random(p.size) < q).astype(int)


P = np.random.default_rng(0).beta(1.2, 25, 20_000)  # ~4.5% over the window
PART = Elapsed(1, 3, "months")


def test_events_drawn_as_expected_are_not_flagged():
    reads = [early_read("m", "2026-05", "2026-06", PART, _draws(P, 1 / 3, s), P) for s in range(40)]
    assert all(r.verdict == AS_EXPECTED for r in reads), [r.z for r in reads]
    assert np.mean([r.observed_over_expected for r in reads]) == pytest.approx(1.0, abs=0.03)
    r = reads[0]
    assert r.expected == pytest.approx(partial_hazard(P, 1 / 3).sum())
    assert r.expected_full == pytest.approx(P.sum())
    assert r.expected_low < r.observed < r.expected_high


def test_a_level_shift_is_flagged_both_ways():
    more = early_read("m", "2026-05", "2026-06", PART, _draws(P, 1 / 3, 1, 1.5), P)
    assert more.verdict == MORE and more.z > 3 and "more than the scores" in more.why
    fewer = early_read("m", "2026-05", "2026-06", PART, _draws(P, 1 / 3, 1, 0.5), P)
    assert fewer.verdict == FEWER and fewer.z < -3


def test_a_small_or_slight_move_is_not_flagged():
    small = P[:150]
    y = np.zeros(small.size, dtype=int)
    y[:6] = 1  # about twice the expected count, on a few rows: within noise
    r = early_read("m", "2026-05", "2026-06", PART, y, small)
    assert r.observed_over_expected > 1.5 and abs(r.z) < 3 and r.verdict == AS_EXPECTED
    # significant but within the band the validation pack allows (30% here)
    r = early_read("m", "2026-05", "2026-06", PART, _draws(P, 1 / 3, 2, 1.2), P, band=0.3)
    assert r.verdict == AS_EXPECTED and r.band == 0.3


def test_expected_auc_is_the_mean_auc_of_outcomes_drawn_from_the_scores():
    p = np.random.default_rng(3).beta(1, 8, 3_000)
    rng = np.random.default_rng(4)
    draws = [roc_auc_score(rng.random(p.size) < p, p) for _ in range(300)]
    assert expected_auc(p) == pytest.approx(np.mean(draws), abs=0.003)
    # the weighted-rows form (each row an event with weight p, a non-event with 1 - p)
    y = np.r_[np.ones(p.size), np.zeros(p.size)]
    weighted = roc_auc_score(y, np.r_[p, p], sample_weight=np.r_[p, 1 - p])
    assert expected_auc(p) == pytest.approx(weighted, abs=1e-3)
    assert expected_auc(np.full(100, 0.1)) == pytest.approx(0.5)
    assert np.isnan(expected_auc(np.array([0.3])))


def test_the_estimate_stands_beside_the_promise():
    p = np.random.default_rng(5).beta(1, 8, 5_000)
    e = estimate("m", "2026-07", p, {"auc": expected_auc(p) + 0.01, "event_rate": 0.1})
    assert e.verdict == "as promised" and e.expected_event_rate == pytest.approx(p.mean())
    assert "blind to concept drift" in e.why
    flat = np.random.default_rng(6).uniform(0.09, 0.11, 5_000)  # scores that hardly rank
    assert estimate("m", "2026-07", flat, {"auc": 0.8}).verdict == BELOW


def test_the_timing_is_measured_on_the_books_closed_windows_up_to_the_month_read():
    # 70 customers, ten leaving at each month-end from February to August: a third of a
    # three-month window's leavers go in its first month
    months = [f"2026-{m:02d}" for m in range(1, 9)]
    gone_at = np.repeat(np.arange(1, 8), 10)  # index of the month-end each customer is gone
    by_month = {
        m: _snap(
            [
                (i + 1, "closed" if gone_at[i] <= k else "open", 20_000, 5, 3, 0)
                for i in range(gone_at.size)
            ]
        )
        for k, m in enumerate(months)
    }
    book = Snapshots(by_month)
    t = timing(CHURN, Elapsed(1, 3, "months"), "2026-06", months, book)
    assert t.windows == ("2026-01", "2026-02", "2026-03")  # closed by 2026-06
    assert t.share == pytest.approx(1 / 3) and t.by_window == ((10, 30),) * 3
    assert t.usual_variance == 0.0 and t.variance == pytest.approx((1 / 3) * (2 / 3) / 90)
    assert max(book.asked) == "2026-06"  # nothing after the month read
    assert timing(CHURN, Elapsed(1, 3, "months"), "2026-03", months, book) is None  # none closed
    # a read with the measured timing expects s x p of each row
    p = np.full(3_000, 0.09)
    r = early_read(
        "m", "2026-05", "2026-06", Elapsed(1, 3, "months"), np.zeros(3_000), p, measured=t
    )
    assert r.expected == pytest.approx(3_000 * 0.03) and "as in the book's windows" in r.expectation
    assert r.sd > np.sqrt(3_000 * 0.03 * 0.97)  # widened by the share's own uncertainty
