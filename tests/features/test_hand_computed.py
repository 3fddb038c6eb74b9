"""The feature catalog is the contract, and features on tiny books are what a hand computes.

(c) Every feature a model spec uses is declared for its entity (and a spec naming an undeclared
one is refused); every declared feature is built, with exactly its declared dtype, and nothing
undeclared is. (d) On a hand-made book of five customers over fourteen month-ends (plus a month
after T whose values must not be seen), a few features of every group have the values worked
out in the comments.
"""

from __future__ import annotations

import shutil
from math import log
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bookpulse import specs
from bookpulse.features import BookFrames, build_features, build_from_book
from bookpulse.features.history import MONTH_END_COLUMNS, PANEL_COLUMNS

CUSTOMER_KEYS = ["customer_id", "as_of"]
CARD_KEYS = ["card_id", "as_of", "customer_id"]

# --- (c) the catalog ------------------------------------------------------------------------


def test_every_feature_a_model_uses_is_declared_for_its_entity() -> None:
    catalog = specs.load_feature_catalog()
    models = specs.load_model_specs()
    assert (
        sorted(models)
        == specs.model_names()
        == ["card_activation", "churn", "tier_upgrade", "wealth_take_up"]
    )
    for spec in models.values():
        declared = catalog.for_entity(spec.target.entity)
        assert set(spec.features) <= set(declared), spec.name
    assert models["card_activation"].target.entity == "card"
    assert models["churn"].target.entity == "customer"


@pytest.mark.parametrize(
    "extra",
    [
        "no_such_feature",  # declared nowhere
        "days_since_issue",  # declared, but for cards: churn scores customers
    ],
)
def test_a_spec_naming_a_feature_not_declared_for_its_entity_is_refused(
    tmp_path: Path, extra: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(specs.models_dir(), models)
    # the unmodified copies load (control)
    assert set(specs.load_model_specs(directory=models)) == set(specs.model_names())
    path = models / "churn.yaml"
    data = yaml.safe_load(path.read_text())
    data["features"].append(extra)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(specs.SpecError, match=extra):
        specs.load_model_spec("churn", directory=models)
    with pytest.raises(specs.SpecError, match=extra):
        specs.load_model_specs(directory=models)


def assert_matches_catalog(frame: pd.DataFrame, keys: list[str], entity: str) -> None:
    declared = specs.load_feature_catalog().for_entity(entity)
    columns = list(frame.columns)
    assert len(columns) == len(set(columns)), "a column is built twice"
    assert columns[: len(keys)] == keys
    built = columns[len(keys) :]
    assert sorted(set(declared) - set(built)) == [], "declared but not built"
    assert sorted(set(built) - set(declared)) == [], "built but not declared"
    for name, spec in declared.items():
        dtype = frame[name].dtype
        if spec.dtype == "category":
            assert isinstance(dtype, pd.CategoricalDtype), (name, dtype)
        else:
            assert dtype == np.dtype(spec.dtype), (name, dtype, spec.dtype)


@pytest.mark.parametrize("month", ["2026-03", "2026-10"])  # the book's first and last months
def test_every_declared_feature_is_built_with_its_declared_dtype_and_nothing_else(
    small_book: Path, month: str
) -> None:
    cust, card = build_from_book(small_book, month)
    assert len(cust) > 1_000 and len(card) > 10
    assert_matches_catalog(cust, CUSTOMER_KEYS, "customer")
    assert_matches_catalog(card, CARD_KEYS, "card")
    assert cust["customer_id"].dtype == np.int64 and card["card_id"].dtype == np.int64
    assert pd.api.types.is_datetime64_dtype(cust["as_of"])
    assert (cust["as_of"] == pd.Timestamp(month) + pd.offsets.MonthEnd(0)).all()
    assert cust["customer_id"].is_unique and card["card_id"].is_unique


# --- (d) a book made by hand ----------------------------------------------------------------
#
# T = 2026-10-31. "back k" is the month-end k months before T (back 0 = T, back 12 = 2025-10,
# back 13 = 2025-09 is just outside the 13-month window, back -1 = 2026-11 is after T).
#
# customer 1: the main subject, onboarded 2020-03-15, born 1996, branch 1 (urban).
# customer 2: onboarded 2025-12-10 (rows from back 10), born 1997, branch 2 (rural), payroll
#             that stopped, two quiet months.
# customer 3: linked to 1; closes at back 1 (one closed row, then no rows).
# customer 4: dormant from back 4 (AUM 50, no transaction, no login): not active at T.
# customer 5: onboarded 2026-11-10, after T; rows only after T.

T = pd.Timestamp("2026-10-31")
BACKS = range(13, -2, -1)  # back 13 .. back -1


def month_of(back: int) -> pd.Timestamp:
    return T - pd.offsets.MonthEnd(back) if back > 0 else T + pd.offsets.MonthEnd(-back)


DEFAULT_ROW = {
    "status": "open",
    "aum_total": 20_000.0,
    "transfer_in": 0.0,
    "transfer_out": 0.0,
    "payroll_inflow": 0.0,
    "products_held": 2,
    "txn_count": 5,
    "txn_amount": 1_000.0,
    "digital_logins": 3,
    "branch_visits": 0,
    "rm_contacts": 0,
    "vas_used": 0,
    "complaints": 0,
    "aum_current": 20_000.0,
    "aum_time_deposit": 0.0,
    "aum_wealth": 0.0,
    "aum_funds": 0.0,
    "aum_insurance": 0.0,
    "loan_mortgage": 0.0,
    "loan_consumer": 0.0,
    "loan_business": 0.0,
    "has_time_deposit": False,
    "has_wealth": False,
    "has_funds": False,
    "has_insurance": False,
    "has_credit_card": False,
    "has_mobile_banking": True,
    "has_payroll": False,
    "has_loan": False,
    "external_assets_est": 0.0,
}
SNAPSHOT_DTYPES = {
    "customer_id": "int64",
    "month": "datetime64[us]",
    "status": pd.CategoricalDtype(["open", "closed"]),
    "products_held": "int8",
    "txn_count": "int32",
    "digital_logins": "int16",
    "branch_visits": "int16",
    "rm_contacts": "int16",
    "vas_used": "int16",
    "complaints": "int16",
}
CLOSED = {"status": "closed", "aum_total": 0.0, "aum_current": 0.0, "products_held": 0}
CLOSED |= {"txn_count": 0, "digital_logins": 0, "txn_amount": 0.0}
DORMANT = {"aum_total": 50.0, "aum_current": 50.0, "txn_count": 0, "digital_logins": 0}


def customer_1() -> dict[int, dict]:
    """back -> values that differ from DEFAULT_ROW."""
    aum = {13: 8_000, 6: 12_000, 5: 9_000, 4: 7_000, 3: 5_000, 2: 6_000, 1: 8_000, 0: 10_000}
    rows: dict[int, dict] = {}
    for back in range(13, -2, -1):
        a = float(aum.get(back, 8_000))
        rows[back] = {"aum_total": a, "aum_current": a}
    for back, (tin, tout) in {2: (1_000, 400), 1: (2_000, 0), 0: (3_000, 600)}.items():
        rows[back] |= {"transfer_in": float(tin), "transfer_out": float(tout)}
    rows[3]["transfer_out"] = 5_000.0  # large, but four month-ends back: not in the last three
    rows[12]["products_held"] = 1
    rows[0]["products_held"] = 4
    for back, n in {5: 4, 4: 4, 3: 4, 2: 10, 1: 20, 0: 30}.items():
        rows[back]["txn_count"] = n
    for back in (2, 1, 0):
        rows[back]["branch_visits"] = 1
    rows[13]["rm_contacts"] = 5  # outside the window
    rows[10]["rm_contacts"] = 1
    rows[4]["rm_contacts"] = 2
    rows[12]["complaints"] = 4  # T-12: in the 13-month panel, not in the last twelve months
    rows[11]["complaints"] = 2
    rows[2]["complaints"] = 1
    # month-end T: AUM 10,000 exactly, split 4,000 current, 2,000 time deposit, 3,000 wealth,
    # 1,000 insurance; holds current + time deposit + wealth + insurance = 4 product lines
    rows[0] |= {
        "aum_current": 4_000.0,
        "aum_time_deposit": 2_000.0,
        "aum_wealth": 3_000.0,
        "aum_insurance": 1_000.0,
        "has_time_deposit": True,
        "has_wealth": True,
        "has_insurance": True,
        "external_assets_est": 490_000.0,
    }
    # after T: a fortune and a flood of activity that no feature as of T may see
    rows[-1] |= {"aum_total": 9_000_000.0, "txn_count": 900, "rm_contacts": 9, "products_held": 9}
    return rows


def customer_2() -> dict[int, dict]:
    rows = {back: {"aum_total": 60_000.0, "aum_current": 60_000.0} for back in range(10, -1, -1)}
    for back in range(10, 2, -1):
        rows[back]["payroll_inflow"] = 3_000.0  # paid through T-3, then nothing
    for back in (8, 7):
        rows[back] |= {"digital_logins": 0, "txn_count": 1}  # quiet months
    rows[-1] = dict(CLOSED)
    return rows


def customer_3(closes_back: int) -> dict[int, dict]:
    rows: dict[int, dict] = {back: {} for back in range(13, closes_back, -1)}
    rows[closes_back] = dict(CLOSED)
    return rows


def customer_4(dormant_from_back: int) -> dict[int, dict]:
    return {
        back: (dict(DORMANT) if back <= dormant_from_back else {}) for back in range(13, -2, -1)
    }


def snapshots(per_customer: dict[int, dict[int, dict]]) -> pd.DataFrame:
    rows = [
        {"customer_id": cid, "month": month_of(back), **DEFAULT_ROW, **values}
        for cid, months in per_customer.items()
        for back, values in months.items()
    ]
    frame = pd.DataFrame(rows)[["customer_id", "month", *PANEL_COLUMNS, *MONTH_END_COLUMNS]]
    return frame.astype(SNAPSHOT_DTYPES)


def dates(values: list[str | None]) -> pd.Series:
    return pd.Series(pd.to_datetime(values)).astype("datetime64[ms]")


def hand_book(c3_closes_back: int = 1, c4_dormant_from_back: int = 4) -> BookFrames:
    snaps = snapshots(
        {
            1: customer_1(),
            2: customer_2(),
            3: customer_3(c3_closes_back),
            4: customer_4(c4_dormant_from_back),
            5: {-1: {}},
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": np.array([1, 2, 3, 4, 5], dtype=np.int64),
            "segment": ["women", "mass", "elderly", "grower", "merchant"],
            "birth_year": np.array([1996, 1997, 1950, 1970, 1985], dtype=np.int16),
            "gender": ["F", "M", "F", "M", "F"],
            "region": ["east", "north", "east", "north", "east"],
            "branch_id": np.array([1, 2, 1, 2, 1], dtype=np.int32),
            "rm_id": np.array([1, 2, 1, 2, 1], dtype=np.int32),
            "onboard_date": dates(
                ["2020-03-15", "2025-12-10", "2019-05-01", "2018-01-01", "2026-11-10"]
            ),
            "onboard_channel": ["branch", "online", "referral", "agri_program", "club"],
            "payroll_enrolled": [True, False, False, False, False],
        }
    )
    for col in ("segment", "gender", "region", "onboard_channel"):
        customers[col] = customers[col].astype("category")
    # card 11: issued in October, unused at T                               -> in the frame
    # card 12: issued in October, used on Oct 25                            -> not in the frame
    # card 13: issued on T itself, first used Nov 3 (after T: unknown at T) -> in the frame
    # card 14: customer 1's, issued 2025-06, used                           -> an earlier card
    # card 15: customer 1's, issued 2026-02, first used after T             -> earlier, unused
    # card 16: customer 1's, issued in November, after T                    -> unknown at T
    # card 17: dormant customer 4's, issued in October                      -> in the frame
    # card 18: customer 2's, issued Sep 30, the day before T's month        -> an earlier card
    cards = pd.DataFrame(
        {
            "card_id": np.arange(11, 19, dtype=np.int64),
            "customer_id": np.array([1, 1, 2, 1, 1, 1, 4, 2], dtype=np.int64),
            "issue_date": dates(
                [
                    "2026-10-05",
                    "2026-10-20",
                    "2026-10-31",
                    "2025-06-01",
                    "2026-02-01",
                    "2026-11-02",
                    "2026-10-10",
                    "2026-09-30",
                ]
            ),
            "channel": pd.Categorical(
                ["online", "branch", "bulk_corporate", "branch", "branch", "online", "branch"]
                + ["telemarketing"]
            ),
            "product": pd.Categorical(["gold"] * 3 + ["standard"] * 5),
            "credit_limit": [30_000.0, 10_000.0, 20_000.0, 10_000.0, 10_000.0, 9_000.0]
            + [8_000.0, 5_000.0],
            "first_use_date": dates(
                [None, "2026-10-25", "2026-11-03", "2025-06-10", "2026-11-10", "2026-11-05"]
                + [None, None]
            ),
        }
    )
    card_spend = pd.DataFrame(
        {
            "card_id": np.array([14, 12, 15], dtype=np.int64),
            "month": pd.Series([month_of(4), T, month_of(-1)]).astype("datetime64[us]"),
            "txn_count": np.array([2, 1, 40], dtype=np.int16),
            "amount": [500.0, 80.0, 99_000.0],
        }
    )
    # 1 -> 4 is formed after T (2026-11-15), and so is 1 -> 5: neither counts at T
    relationships = pd.DataFrame(
        {
            "customer_id": np.array([1, 1, 1, 1, 2, 2], dtype=np.int64),
            "related_customer_id": np.array([2, 3, 4, 5, 1, 4], dtype=np.int64),
            "kind": pd.Categorical(
                ["family", "friend", "business", "friend", "family", "business"]
            ),
            "since": dates(
                ["2026-01-05", "2021-06-01", "2026-11-15", "2026-11-20", "2026-01-05"]
                + ["2026-02-01"]
            ),
        }
    )
    branches = pd.DataFrame(
        {
            "branch_id": np.array([1, 2], dtype=np.int32),
            "area_type": pd.Categorical(["urban", "rural"]),
        }
    )
    return BookFrames(customers, snaps, cards, card_spend, relationships, branches)


def assert_values(row: pd.Series, expected: dict) -> None:
    for name, want in expected.items():
        got = row[name]
        if isinstance(want, str):
            assert got == want, (name, got, want)
        elif want is None or (isinstance(want, float) and np.isnan(want)):
            assert pd.isna(got), (name, got)
        else:
            assert got == pytest.approx(want, rel=1e-6, abs=1e-7), (name, got, want)


@pytest.fixture(scope="module")
def built() -> tuple[pd.DataFrame, pd.DataFrame]:
    cust, card = build_features(hand_book(), "2026-10")
    return cust.set_index("customer_id"), card.set_index("card_id")


def test_population_active_customers_and_new_unused_cards(built) -> None:
    cust, card = built
    # 3 closed at T-1, 4 is dormant at T, 5 is onboarded after T
    assert list(cust.index) == [1, 2]
    assert (cust["as_of"] == T).all()
    # 12 was used on Oct 25; 14, 15, 18 were issued before October; 16 after T
    assert list(card.index) == [11, 13, 17]


def test_an_empty_card_frame_still_has_the_declared_columns_and_dtypes() -> None:
    cust, card = build_features(hand_book(), "2026-05")  # no card issued in May 2026
    assert card.empty and len(cust) == 4  # 1, 2, 3 and 4 (not yet dormant)
    assert_matches_catalog(card, CARD_KEYS, "card")
    assert_matches_catalog(cust, CUSTOMER_KEYS, "customer")


def test_balances_by_hand(built) -> None:
    c1 = built[0].loc[1]
    assert_values(
        c1,
        {
            "aum_total": 10_000.0,
            "aum_log": log(10_001),
            "tier": "effective",  # 10,000 exactly reaches the effective tier
            # next bound 50,000: log(50,000) - log(1 + 10,000); (50,000 - 10,000) / 50,000
            "dist_next_tier_log": log(50_000) - log(10_001),
            "dist_next_tier_pct": 0.8,
            # AUM 5,000 at T-3, 12,000 at T-6, 8,000 at T-12
            "aum_chg_3m": log(10_001) - log(5_001),
            "aum_chg_6m": log(10_001) - log(12_001),
            "aum_chg_12m": log(10_001) - log(8_001),
            # peak of the 13 month-ends T-12..T is 12,000 (the 9,000,000 after T is unseen)
            "aum_drawdown_12m": 10_000 / 12_000 - 1,
            # flows (in - out) T-2..T: 600 + 2,000 + 2,400 = 5,000; average AUM T-3..T:
            # (5,000 + 6,000 + 8,000 + 10,000) / 4 = 7,250; 5,000 / (7,250 + 1,000)
            "net_flow_3m_ratio": 5_000 / 8_250,
            # largest transfer out T-2..T is 600 (5,000 at T-3 is older); largest AUM is 10,000
            "outflow_max_3m_ratio": 600 / 11_000,
            # wealth 3,000 + funds 0 + insurance 1,000 = 4,000 of 10,000; time deposit 2,000
            "wealth_products_share": 0.4,
            "time_deposit_share": 0.2,
            "loans_total": 0.0,
            "external_assets_est": 490_000.0,
            "share_of_wallet": 10_000 / 500_000,
            "external_gap_log": log(490_001) - log(10_001),
        },
    )
    # six monthly changes of log(1 + AUM) over 12,000 9,000 7,000 5,000 6,000 8,000 10,000
    changes = np.diff(np.log1p([12_000, 9_000, 7_000, 5_000, 6_000, 8_000, 10_000]))
    assert c1["aum_vol_6m"] == pytest.approx(np.sqrt(np.mean((changes - changes.mean()) ** 2)))

    c2 = built[0].loc[2]
    assert_values(
        c2,
        {
            "tier": "mid",
            "dist_next_tier_log": log(500_000) - log(60_001),
            "dist_next_tier_pct": (500_000 - 60_000) / 500_000,
            "aum_chg_3m": 0.0,
            "aum_chg_12m": None,  # no snapshot at T-12: onboarded in December 2025
            "aum_vol_6m": 0.0,
            "net_flow_3m_ratio": 0.0,  # payroll stopped after T-3, no transfers
        },
    )


def test_products_by_hand(built) -> None:
    cust = built[0]
    assert_values(
        cust.loc[1],
        {
            "products_held": 4,
            "products_chg_3m": 2,  # 4 at T, 2 at T-3
            "products_chg_12m": 3,  # 1 at T-12 (the 9 product lines after T are unseen)
            "four_plus_products": 1,
            "has_wealth": 1,
            "has_funds": 0,
        },
    )
    assert_values(cust.loc[2], {"products_chg_3m": 0, "products_chg_12m": None})


def test_engagement_by_hand(built) -> None:
    cust = built[0]
    assert_values(
        cust.loc[1],
        {
            "txn_count_1m": 30,
            "txn_count_3m": 20,  # (10 + 20 + 30) / 3
            # log(1 + 20) - log(1 + mean of T-5..T-3 = 4)
            "txn_trend_3m": log(21) - log(5),
            # T-12..T-1: seven months of 5, three of 4, then 10 and 20: 77 / 12
            "txn_vs_12m": log(31) - log(1 + 77 / 12),
            "logins_trend_3m": 0.0,
            "branch_visits_3m": 3,
            "payroll_months_6m": 0,
            "payroll_stopped": 0,
            "months_observed": 13,  # T-12..T; the row at T-13 is outside the window
            "inactive_months_12m": 0,
        },
    )
    assert_values(
        cust.loc[2],
        {
            "payroll_months_6m": 3,  # paid at T-5, T-4, T-3
            "payroll_stopped": 1,  # paid within T-5..T-3, nothing at T
            "inactive_months_12m": 2,  # T-8 and T-7: no login, one transaction
            "months_observed": 11,  # rows from T-10
            "txn_trend_3m": 0.0,
        },
    )


def test_care_by_hand(built) -> None:
    cust = built[0]
    assert_values(
        cust.loc[1],
        {
            "months_since_rm_contact": 4,  # contacts at T-4 and T-10 (and T-13, outside)
            "rm_contacts_1m": 0,
            "rm_contacts_3m": 0,
            "rm_contacts_12m": 3,  # 2 at T-4 + 1 at T-10
            "complaints_3m": 1,
            "complaints_12m": 3,  # 1 at T-2 + 2 at T-11; the 4 at T-12 is 13 months back
            # household 10,000 + 490,000 = 500,000 is high_end (3); AUM 10,000 is effective (1)
            "household_tier_gap": 2,
        },
    )
    assert_values(
        cust.loc[2],
        {"months_since_rm_contact": 13, "rm_contacts_1m": 0, "household_tier_gap": 0},
    )


def test_profile_by_hand(built) -> None:
    cust = built[0]
    assert_values(
        cust.loc[1],
        {
            "age": 30,  # 2026 - 1996
            "age_band": "30_44",  # 30 is the band's lower bound
            "tenure_months": 79,  # March 2020 -> October 2026: 6 * 12 + 7
            "segment": "women",
            "area_type": "urban",
            "payroll_enrolled": 1,
            "calendar_month": 10,
        },
    )
    assert_values(
        cust.loc[2],
        {
            "age": 29,
            "age_band": "under_30",
            "tenure_months": 10,  # December 2025 -> October 2026
            "area_type": "rural",
            "payroll_enrolled": 0,
        },
    )


def test_relationships_by_hand(built) -> None:
    cust = built[0]
    assert_values(
        cust.loc[1],
        {
            # 1 -> 2 (family), 1 -> 3 (friend); 1 -> 4 and 1 -> 5 are formed after T
            "links_total": 2,
            "links_family": 1,
            "links_friend": 1,
            "links_business": 0,
            "linked_active": 1,  # 2; 3 closed at T-1
            "linked_max_tier": 2,  # 2 holds 60,000: mid
            "linked_high_end": 0,
            "linked_aum_log_mean": log(60_001),
            "linked_attrited_3m": 1,  # 3 closed at T-1, inside (T-3, T]
        },
    )
    assert_values(
        cust.loc[2],
        {
            # 2 -> 1 (family), 2 -> 4 (business); 4 is dormant since T-4: not active, and not
            # a recent leaver either (already dormant at T-3)
            "links_total": 2,
            "links_family": 1,
            "links_business": 1,
            "linked_active": 1,
            "linked_max_tier": 1,  # 1 holds 10,000: effective
            "linked_aum_log_mean": log(10_001),
            "linked_attrited_3m": 0,
        },
    )


@pytest.mark.parametrize(
    ("closes_back", "recent"),
    [(0, 1), (1, 1), (2, 1), (3, 0), (5, 0)],  # the window is (T-3, T]
)
def test_linked_attrited_3m_counts_closings_in_the_last_three_months(
    closes_back: int, recent: int
) -> None:
    cust, _ = build_features(hand_book(c3_closes_back=closes_back), "2026-10")
    assert cust.set_index("customer_id").loc[1, "linked_attrited_3m"] == recent


@pytest.mark.parametrize(
    ("dormant_from_back", "recent"),
    [(1, 1), (2, 1), (3, 0), (4, 0)],  # dormant at T-3 already: not a recent leaver
)
def test_linked_attrited_3m_counts_dormancy_begun_in_the_last_three_months(
    dormant_from_back: int, recent: int
) -> None:
    cust, _ = build_features(hand_book(c4_dormant_from_back=dormant_from_back), "2026-10")
    assert cust.set_index("customer_id").loc[2, "linked_attrited_3m"] == recent


def test_cards_by_hand(built) -> None:
    _, card = built
    assert_values(
        card.loc[11],
        {
            "customer_id": 1,
            "days_since_issue": 26,  # Oct 5 -> Oct 31
            "issue_channel": "online",
            "card_product": "gold",
            "credit_limit": 30_000.0,
            # issued before October: 14 (used in 2025) and 15 (first used after T: unused)
            "holder_other_cards": 2,
            "holder_cards_used": 1,
            "holder_active": 1,
            "holder_tier": "effective",
            "holder_products_held": 4,
            "holder_tenure_months": 79,
            "holder_age": 30,
            "holder_segment": "women",
        },
    )
    assert_values(
        card.loc[13],
        {
            "customer_id": 2,
            "days_since_issue": 0,  # issued on T itself
            "issue_channel": "bulk_corporate",
            "holder_other_cards": 1,  # 18, issued Sep 30
            "holder_cards_used": 0,
            "holder_active": 1,
            "holder_tier": "mid",
        },
    )
    assert_values(
        card.loc[17],
        {
            "customer_id": 4,
            "days_since_issue": 21,
            "holder_active": 0,  # dormant at T: no customer features
            "holder_tier": None,
            "holder_aum_log": None,
            "holder_other_cards": 0,
        },
    )


def test_hand_book_after_t_is_invisible() -> None:
    """Dropping everything dated after T from the hand book changes nothing."""
    f = hand_book()
    cut = BookFrames(
        customers=f.customers.loc[f.customers["onboard_date"] <= T],
        snapshots=f.snapshots.loc[f.snapshots["month"] <= T],
        cards=f.cards.loc[f.cards["issue_date"] <= T].assign(
            first_use_date=lambda c: c["first_use_date"].where(c["first_use_date"] <= T)
        ),
        card_spend=f.card_spend.loc[f.card_spend["month"] <= T],
        relationships=f.relationships.loc[f.relationships["since"] <= T],
        branches=f.branches,
    )
    assert len(cut.snapshots) < len(f.snapshots) and len(cut.cards) < len(f.cards)
    for got, want in zip(build_features(cut, "2026-10"), build_features(f, "2026-10"), strict=True):
        pd.testing.assert_frame_equal(got, want)
