"""Labels on tiny inline books, worked out by hand."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from bookpulse import labels
from bookpulse.domain import TIER_LOWER_BOUNDS, TIERS, tier_index
from bookpulse.specs import Population, load_model_specs

SPECS = load_model_specs()
BELOW_TOP = Population(exclude_tiers=["private"])  # tier_upgrade's population rule


def snap(rows: list[tuple[int, str, float, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["customer_id", "status", "aum_total", "txn_count", "digital_logins"]
    )


def test_churn_counts_closing_and_dormancy_in_the_window_and_skips_the_already_gone() -> None:
    at_t = snap(
        [
            (1, "open", 20_000, 5, 3),  # stays
            (2, "open", 20_000, 5, 3),  # closes in the window
            (3, "open", 5_000, 2, 0),  # drifts into dormancy
            (4, "open", 50, 0, 0),  # already dormant at T: not in the population
            (5, "open", 80, 1, 0),  # tiny balance but transacting: active, stays
        ]
    )
    window = snap(
        [
            (1, "open", 21_000, 4, 2),
            (2, "closed", 0, 0, 0),
            (3, "open", 3_000, 1, 0),
            (3, "open", 40, 0, 0),
            (4, "open", 50, 0, 0),
            (5, "open", 90, 2, 0),
        ]
    )
    got = labels.attrition_labels(at_t, window, "churned")
    got = got.set_index("customer_id")["churned"].to_dict()
    assert got == {1: 0, 2: 1, 3: 1, 5: 0}


def test_tier_upgrade_needs_a_higher_tier_at_the_end_and_an_active_customer() -> None:
    at_t = snap(
        [
            (1, "open", 45_000, 5, 3),  # effective -> mid: upgraded
            (2, "open", 45_000, 5, 3),  # effective, stays effective
            (3, "open", 45_000, 5, 3),  # crosses the line, then closes: not an upgrade
            (4, "open", 7_000_000, 5, 3),  # private: top tier, not in the population
            (5, "open", 9_000, 5, 3),  # potential -> mid (two tiers): upgraded
            (6, "open", 60_000, 5, 3),  # mid -> effective: a downgrade
        ]
    )
    end = snap(
        [
            (1, "open", 50_000, 5, 3),
            (2, "open", 49_999.99, 5, 3),
            (4, "open", 9_000_000, 5, 3),
            (5, "open", 80_000, 5, 3),
            (6, "open", 30_000, 5, 3),
        ]
    )
    got = labels.tier_up_labels(at_t, end, "upgraded", BELOW_TOP).set_index("customer_id")
    assert got["upgraded"].to_dict() == {1: 1, 2: 0, 3: 0, 5: 1, 6: 0}
    assert got.loc[1, "tier_at"] == TIERS.index("effective")


def test_take_up_needs_the_product_in_the_window_and_a_customer_without_it_at_t() -> None:
    def with_wealth(rows, held):
        df = snap(rows)
        df["has_wealth"] = held
        return df

    at_t = with_wealth(
        [
            (1, "open", 20_000, 5, 3),  # takes a wealth product up in the window
            (2, "open", 20_000, 5, 3),  # never does
            (3, "open", 20_000, 5, 3),  # already holds one at T: not in the population
            (4, "open", 50, 0, 0),  # dormant at T: not in the population
            (5, "open", 7_000_000, 5, 3),  # private tier: left out by the rule below
            (6, "open", 20_000, 5, 3),  # takes one up, then closes: still took it up
        ],
        [0, 0, 1, 0, 0, 0],
    )
    window = with_wealth(
        [
            (1, "open", 20_000, 5, 3),
            (1, "open", 30_000, 5, 3),
            (2, "open", 20_000, 5, 3),
            (3, "open", 20_000, 5, 3),
            (4, "open", 60_000, 5, 3),
            (5, "open", 7_000_000, 5, 3),
            (6, "open", 30_000, 5, 3),
            (6, "closed", 0, 0, 0),
        ],
        [0, 1, 0, 1, 1, 1, 1, 0],
    )
    got = labels.take_up_labels(at_t, window, "has_wealth", "took_up")
    assert got.set_index("customer_id")["took_up"].to_dict() == {1: 1, 2: 0, 5: 1, 6: 1}
    got = labels.take_up_labels(at_t, window, "has_wealth", "took_up", BELOW_TOP)
    assert got.set_index("customer_id")["took_up"].to_dict() == {1: 1, 2: 0, 6: 1}


def test_the_population_rule_leaves_out_tiers_and_holders() -> None:
    tiers = pd.Series(["mid", "private", "potential", "mid"])
    held = {"has_wealth": [1.0, 0.0, float("nan"), 0.0], "has_funds": [0, 0, 1, 0]}
    rule = Population(exclude_tiers=["private"], without_products=["has_wealth", "has_funds"])
    assert labels.in_population(rule, tiers, lambda f: held[f]).tolist() == [
        False,
        False,
        False,
        True,
    ]
    assert labels.in_population(Population(), tiers, lambda f: held[f]).all()


def test_card_activation_population_and_thirty_day_window() -> None:
    nat = pd.NaT
    cards = pd.DataFrame(
        {
            "card_id": [1, 2, 3, 4, 5, 6],
            "issue_date": pd.to_datetime(
                ["2026-10-05", "2026-10-20", "2026-10-20", "2026-09-30", "2026-10-01", "2026-10-31"]
            ),
            "first_use_date": pd.to_datetime(
                ["2026-11-30", "2026-12-01", nat, "2026-11-02", "2026-10-15", "2026-10-31"]
            ),
        }
    )
    got = labels.first_use_labels(cards, pd.Timestamp("2026-10-31"), 30, "activated")
    # 1: used on day 30 after month-end -> 1; 2: day 31 -> 0; 3: never -> 0;
    # 4: issued in September -> not eligible; 5, 6: already used by month-end -> not eligible
    assert got.set_index("card_id")["activated"].to_dict() == {1: 1, 2: 0, 3: 0}


def test_labelled_months_stop_where_the_window_leaves_the_book() -> None:
    months = [str(p) for p in pd.period_range("2025-11", "2026-10", freq="M")]
    target = {name: spec.target for name, spec in SPECS.items()}
    assert labels.labelled_months(months, target["churn"])[-1] == "2026-07"
    assert labels.labelled_months(months, target["tier_upgrade"])[-1] == "2026-07"
    assert labels.labelled_months(months, target["wealth_take_up"])[-1] == "2026-07"
    # 2026-09-30 + 30 days = 2026-10-30, inside the book; 2026-10 is not
    assert labels.labelled_months(months, target["card_activation"])[-1] == "2026-09"
    # a book ending in February 2026: January's window (Jan 31 + 30 days = Mar 2) is still open
    assert labels.labelled_months(months[:4], target["card_activation"])[-1] == "2025-12"


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_tier_is_the_highest_tier_whose_lower_bound_is_reached(aum: float) -> None:
    tier = int(tier_index([aum])[0])
    assert 0 <= tier < len(TIERS)
    if tier > 0:
        assert aum >= TIER_LOWER_BOUNDS[tier - 1]
    if tier < len(TIERS) - 1:
        assert aum < TIER_LOWER_BOUNDS[tier]


def test_tier_boundaries_are_the_domain_thresholds() -> None:
    names = [TIERS[i] for i in tier_index([9_999.99, 10_000, 50_000, 500_000, 6_000_000])]
    assert names == ["potential", "effective", "mid", "high_end", "private"]


def test_a_month_whose_window_leaves_the_book_is_refused(small_book) -> None:
    import pytest

    from bookpulse.book import io

    months = io.read_meta(small_book)["months"]
    for target, month in (
        ("churn", "2026-09"),
        ("tier_upgrade", "2026-08"),
        ("wealth_take_up", "2026-08"),
        ("card_activation", "2026-10"),
    ):
        with pytest.raises(io.BookError, match="runs past"):
            labels.labels_for_month(small_book, SPECS[target].target, month, months)
