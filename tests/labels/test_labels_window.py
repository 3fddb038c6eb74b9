"""Labels for month-end T read only the population at T and the outcome window (T, T+horizon].

On the small book on disk: deleting every snapshot partition outside [T, T+3] leaves the churn,
tier-upgrade and wealth take-up labels unchanged, and so does rewriting a partition before T or
after T+3; rewriting one inside the window changes them (control). Card activation: moving
first uses that fall later than T + 30 days, or of cards not issued in month T, changes
nothing; moving one into or out of (T, T + 30 days] does. On generated panels, churn and
tier-upgrade labels agree with the events the panels were generated from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bookpulse import labels
from bookpulse.book import io
from bookpulse.domain import (
    ACTIVATION_WINDOW_DAYS,
    CHURN_HORIZON_MONTHS,
    TOP_TIER,
    UPGRADE_HORIZON_MONTHS,
    tier_index,
)
from bookpulse.specs import Population, load_model_specs

T = "2026-05"  # small book: 2026-03 .. 2026-10, so T-2 .. T+5 exist
CARD_T = "2026-08"  # 2026-08-31 + 30 days = 2026-09-30, inside the book
SPECS = load_model_specs()
BELOW_TOP = Population(exclude_tiers=["private"])  # tier_upgrade's population rule


def shifted(month: str, k: int) -> str:
    return str(pd.Period(month, freq="M") + k)


@pytest.fixture(scope="module")
def months(small_book: Path) -> list[str]:
    return io.read_meta(small_book)["months"]


@pytest.fixture
def book_copy(small_book: Path, tmp_path: Path) -> Path:
    out = tmp_path / "book"
    shutil.copytree(small_book, out)
    return out


def read_partition(book: Path, month: str) -> pd.DataFrame:
    return pq.read_table(io.monthly_path(book, "snapshots", month)).to_pandas()


def write_partition(book: Path, month: str, snap: pd.DataFrame) -> None:
    io.write_parquet(snap, io.monthly_path(book, "snapshots", month))


def close_everyone(book: Path, month: str) -> None:
    snap = read_partition(book, month)
    snap["status"] = "closed"
    snap["status"] = snap["status"].astype(pd.CategoricalDtype(["open", "closed"]))
    snap["aum_total"] = 0.0
    write_partition(book, month, snap)


def enrich_everyone(book: Path, month: str) -> None:
    """Every customer open, transacting and private-tier rich: upgrades and no churn."""
    snap = read_partition(book, month)
    snap["status"] = pd.Categorical(["open"] * len(snap), categories=["open", "closed"])
    snap["aum_total"] = snap["aum_total"] + 7_000_000
    snap["txn_count"] = snap["txn_count"] + 1
    write_partition(book, month, snap)


def label(book: Path, model: str, month: str, months: list[str]) -> pd.DataFrame:
    return labels.labels_for_month(book, SPECS[model].target, month, months)


MONTHLY = ("churn", "tier_upgrade", "wealth_take_up")  # the models labelled from snapshots


@pytest.fixture(scope="module")
def baseline(small_book: Path, months: list[str]):
    return {target: label(small_book, target, T, months) for target in MONTHLY}


# --- churn and tier upgrade on disk ---------------------------------------------------------


@pytest.mark.parametrize("target", MONTHLY)
def test_labels_need_only_the_partitions_of_t_and_its_window(
    book_copy: Path, months: list[str], baseline, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = {shifted(T, k) for k in range(4)}
    for m in months:
        if m not in keep:
            shutil.rmtree(io.monthly_path(book_copy, "snapshots", m).parent)
    shutil.rmtree(book_copy / "card_spend")
    shutil.rmtree(book_copy / io.TRUTH_DIR)
    assert sorted(io.available_months(book_copy)) == sorted(keep)

    opened: list[Path] = []
    real_read_table = pq.read_table

    def spy(source, *args, **kwargs):
        opened.append(Path(source))
        return real_read_table(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    got = label(book_copy, target, T, months)
    pd.testing.assert_frame_equal(got, baseline[target])

    read = {p.parent.name.removeprefix("month=") for p in opened}
    horizon = {
        "churn": CHURN_HORIZON_MONTHS,
        "tier_upgrade": UPGRADE_HORIZON_MONTHS,
        "wealth_take_up": SPECS["wealth_take_up"].target.horizon_months,
    }[target]
    if target != "tier_upgrade":  # every month-end of the window
        assert read == {shifted(T, k) for k in range(horizon + 1)}
    else:
        assert read == {T, shifted(T, horizon)}
    assert all(p.parent.parent.name == "snapshots" for p in opened)


@pytest.mark.parametrize("target", MONTHLY)
@pytest.mark.parametrize("rewrite", [close_everyone, enrich_everyone], ids=["close", "enrich"])
@pytest.mark.parametrize("offset", [-2, -1, 4, 5])
def test_rewriting_a_partition_outside_the_window_changes_no_label(
    book_copy: Path, months: list[str], baseline, target: str, rewrite, offset: int
) -> None:
    rewrite(book_copy, shifted(T, offset))
    pd.testing.assert_frame_equal(label(book_copy, target, T, months), baseline[target])


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_control_closing_everyone_inside_the_churn_window_changes_churn(
    book_copy: Path, months: list[str], baseline, offset: int
) -> None:
    close_everyone(book_copy, shifted(T, offset))
    got = label(book_copy, "churn", T, months)
    want = baseline["churn"]
    assert got["customer_id"].equals(want["customer_id"])  # the population is fixed at T
    assert want["churned"].mean() < 0.2
    assert (got["churned"] == 1).all()


def test_control_the_end_of_the_upgrade_window_changes_tier_upgrade(
    book_copy: Path, months: list[str], baseline
) -> None:
    end = shifted(T, UPGRADE_HORIZON_MONTHS)
    enrich_everyone(book_copy, end)
    got = label(book_copy, "tier_upgrade", T, months)
    want = baseline["tier_upgrade"]
    assert got[["customer_id", "tier_at"]].equals(want[["customer_id", "tier_at"]])
    assert want["upgraded"].mean() < 0.2
    # everyone still there at T+3 is now private-tier rich: upgraded; those who closed are not
    there = got["customer_id"].isin(read_partition(book_copy, end)["customer_id"])
    assert there.mean() > 0.9
    assert (got["upgraded"] == there.astype(np.int8)).all()


@pytest.mark.parametrize("target", MONTHLY)
def test_control_the_partition_at_t_sets_the_population(
    book_copy: Path, months: list[str], baseline, target: str
) -> None:
    close_everyone(book_copy, T)
    assert label(book_copy, target, T, months).empty
    assert not baseline[target].empty


def test_label_populations_are_the_feature_populations(
    small_book: Path, months: list[str], baseline
) -> None:
    """Who gets a label at T is who gets a feature row at T (customers active at T; cards
    issued in month T and unused at T)."""
    from bookpulse.features import build_from_book

    cust, _ = build_from_book(small_book, T)
    churn, upgrade = baseline["churn"], baseline["tier_upgrade"]
    assert sorted(churn["customer_id"]) == sorted(cust["customer_id"])
    below_top = cust.loc[cust["tier"] != "private", "customer_id"]
    assert sorted(upgrade["customer_id"]) == sorted(below_top)
    wealth = label(small_book, "wealth_take_up", T, months)
    without = cust.loc[cust["has_wealth"] == 0, "customer_id"]
    assert 0 < len(without) < len(cust)
    assert sorted(wealth["customer_id"]) == sorted(without)
    _, card = build_from_book(small_book, CARD_T)
    activation = label(small_book, "card_activation", CARD_T, months)
    assert len(card) > 0
    assert sorted(activation["card_id"]) == sorted(card["card_id"])


# --- card activation on disk ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cards(small_book: Path) -> pd.DataFrame:
    return io.read_static(small_book, "cards")


def card_labels(book: Path, months: list[str]) -> pd.DataFrame:
    return label(book, "card_activation", CARD_T, months)


def write_cards(book: Path, cards: pd.DataFrame) -> None:
    io.write_parquet(cards, book / "cards.parquet")


def card_groups(cards: pd.DataFrame) -> dict[str, pd.Index]:
    t = io.month_end(CARD_T)
    deadline = t + pd.Timedelta(days=ACTIVATION_WINDOW_DAYS)
    start = t.to_period("M").start_time
    issued_in_t = cards["issue_date"].between(start, t)
    use = cards["first_use_date"]
    eligible = issued_in_t & ~(use <= t)
    return {
        "eligible_late_or_never": cards.index[eligible & ~(use <= deadline)],
        "eligible_in_window": cards.index[eligible & (use <= deadline)],
        "used_by_t": cards.index[issued_in_t & (use <= t)],
        "issued_before_t": cards.index[cards["issue_date"] < start],
        "issued_after_t": cards.index[cards["issue_date"] > t],
    }


def days_after(t: pd.Timestamp, lo: int, hi: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (t + pd.to_timedelta(rng.integers(lo, hi + 1, size=size), unit="D")).to_numpy()


def test_card_activation_reads_only_the_cards_table(
    small_book: Path, tmp_path: Path, months: list[str]
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(small_book / "cards.parquet", bare / "cards.parquet")
    pd.testing.assert_frame_equal(card_labels(bare, months), card_labels(small_book, months))


def test_card_first_uses_after_the_window_or_of_other_months_cards_change_nothing(
    book_copy: Path, cards: pd.DataFrame, months: list[str]
) -> None:
    want = card_labels(book_copy, months)
    g = card_groups(cards)
    assert len(g["eligible_late_or_never"]) >= 5 and len(g["eligible_in_window"]) >= 5
    assert len(g["issued_before_t"]) > 100 and len(g["issued_after_t"]) > 10
    t = io.month_end(CARD_T)
    changed = cards.copy()
    dtype = changed["first_use_date"].dtype
    # eligible cards not used within 30 days: used later still, or never
    late = g["eligible_late_or_never"]
    new = pd.Series(days_after(t, ACTIVATION_WINDOW_DAYS + 1, 400, len(late), 1), index=late)
    new.iloc[::3] = pd.NaT
    changed.loc[late, "first_use_date"] = new.astype(dtype)
    # eligible cards used within 30 days: another day within them
    within = g["eligible_in_window"]
    new = pd.Series(days_after(t, 1, ACTIVATION_WINDOW_DAYS, len(within), 2), index=within)
    changed.loc[within, "first_use_date"] = new.astype(dtype)
    # cards issued before month T or after T: first used anywhere in the window, or never
    for group, seed in (("issued_before_t", 3), ("issued_after_t", 4)):
        rows = g[group]
        new = pd.Series(days_after(t, 1, ACTIVATION_WINDOW_DAYS, len(rows), seed), index=rows)
        new.iloc[::2] = pd.NaT
        changed.loc[rows, "first_use_date"] = new.astype(dtype)
    assert not changed["first_use_date"].equals(cards["first_use_date"])
    write_cards(book_copy, changed)
    pd.testing.assert_frame_equal(card_labels(book_copy, months), want)


@pytest.mark.parametrize(
    ("group", "lo", "hi"),
    [
        ("eligible_late_or_never", 1, ACTIVATION_WINDOW_DAYS),  # now activates in the window
        ("eligible_in_window", ACTIVATION_WINDOW_DAYS + 1, 90),  # now activates too late
        ("used_by_t", 1, ACTIVATION_WINDOW_DAYS),  # no longer used at T: joins the population
    ],
)
def test_control_first_uses_moved_across_t_or_the_window_change_the_labels(
    book_copy: Path, cards: pd.DataFrame, months: list[str], group: str, lo: int, hi: int
) -> None:
    want = card_labels(book_copy, months)
    rows = card_groups(cards)[group]
    assert len(rows) > 0
    changed = cards.copy()
    new = pd.Series(days_after(io.month_end(CARD_T), lo, hi, len(rows), 5), index=rows)
    changed.loc[rows, "first_use_date"] = new.astype(changed["first_use_date"].dtype)
    write_cards(book_copy, changed)
    got = card_labels(book_copy, months)
    assert not got.equals(want)
    moved = set(changed.loc[rows, "card_id"])
    if group == "used_by_t":
        assert set(got["card_id"]) - set(want["card_id"]) == moved
        assert got.loc[got["card_id"].isin(moved), "activated"].eq(1).all()
    else:
        flipped = got.merge(want, on="card_id", suffixes=("", "_before"))
        flipped = flipped.loc[flipped["activated"] != flipped["activated_before"], "card_id"]
        assert set(flipped) == moved


# --- churn and tier upgrade on generated panels ---------------------------------------------

AUMS = [
    0.0,
    50.0,
    99.99,
    100.0,
    9_999.99,
    10_000.0,
    30_000.0,
    49_999.99,
    50_000.0,
    499_999.99,
    500_000.0,
    5_999_999.99,
    6_000_000.0,
    9_000_000.0,
]
N_MONTHS = 8
NEVER = N_MONTHS  # attrition month index meaning "not within the panel"


@st.composite
def customer_paths(draw):
    """One customer's months: onboarded at `start`, attrited at `end` (closed: the rows stop;
    dormant: the rows stay dormant), live rows always transacting (as in the simulator)."""
    start = draw(st.integers(0, N_MONTHS - 1))
    end = draw(st.integers(start, NEVER))
    closes = draw(st.booleans())
    aum = draw(st.lists(st.sampled_from(AUMS), min_size=N_MONTHS, max_size=N_MONTHS))
    txn = draw(st.lists(st.integers(1, 3), min_size=N_MONTHS, max_size=N_MONTHS))
    logins = draw(st.lists(st.integers(0, 2), min_size=N_MONTHS, max_size=N_MONTHS))
    dormant_aum = draw(st.sampled_from([0.0, 12.5, 99.99]))
    return start, end, closes, aum, txn, logins, dormant_aum


def panel_rows(paths) -> pd.DataFrame:
    rows = []
    for cid, (start, end, closes, aum, txn, logins, dormant_aum) in enumerate(paths, start=1):
        for m in range(start, N_MONTHS):
            if m < end:
                rows.append((m, cid, "open", aum[m], txn[m], logins[m]))
            elif closes:
                rows.append((m, cid, "closed", 0.0, 0, 0))
                break
            else:
                rows.append((m, cid, "open", dormant_aum, 0, 0))
    snap = pd.DataFrame(
        rows,
        columns=["m", "customer_id", "status", "aum_total", "txn_count", "digital_logins"],
    )
    snap["status"] = snap["status"].astype(pd.CategoricalDtype(["open", "closed"]))
    return snap


@settings(max_examples=150, deadline=None)
@given(
    paths=st.lists(customer_paths(), min_size=1, max_size=8),
    t=st.integers(0, N_MONTHS - 1 - CHURN_HORIZON_MONTHS),
)
def test_churn_and_upgrade_labels_match_the_generated_events(paths, t: int) -> None:
    panel = panel_rows(paths)
    snap_t = panel.loc[panel["m"] == t].drop(columns="m")
    window = panel.loc[panel["m"].between(t + 1, t + CHURN_HORIZON_MONTHS)].drop(columns="m")
    snap_end = panel.loc[panel["m"] == t + UPGRADE_HORIZON_MONTHS].drop(columns="m")

    churn = labels.attrition_labels(snap_t, window, "churned").set_index("customer_id")["churned"]
    upgrade = labels.tier_up_labels(snap_t, snap_end, "upgraded", BELOW_TOP)
    upgrade = upgrade.set_index("customer_id")

    want_churn, want_upgrade = {}, {}
    for cid, (start, end, _closes, aum, *_rest) in enumerate(paths, start=1):
        if not start <= t < end:
            continue  # not yet a customer, or already gone, at T
        want_churn[cid] = int(end <= t + CHURN_HORIZON_MONTHS)
        tier_t = int(tier_index([aum[t]])[0])
        if tier_t < TOP_TIER:
            h = t + UPGRADE_HORIZON_MONTHS
            still_here = end > h
            want_upgrade[cid] = int(still_here and tier_index([aum[h]])[0] > tier_t)
    assert churn.to_dict() == want_churn
    assert upgrade["upgraded"].to_dict() == want_upgrade
    assert set(upgrade.index) <= set(churn.index)


@settings(max_examples=60, deadline=None)
@given(
    paths=st.lists(customer_paths(), min_size=1, max_size=8),
    t=st.integers(0, N_MONTHS - 1 - CHURN_HORIZON_MONTHS),
    data=st.data(),
)
def test_window_rows_of_customers_outside_the_population_change_no_label(
    paths, t: int, data
) -> None:
    """Appending, to the window frames, rows of other customers (not active at T) changes
    nothing; the labels depend on the window only through the population's own rows."""
    panel = panel_rows(paths)
    snap_t = panel.loc[panel["m"] == t].drop(columns="m")
    window = panel.loc[panel["m"].between(t + 1, t + CHURN_HORIZON_MONTHS)].drop(columns="m")
    snap_end = panel.loc[panel["m"] == t + UPGRADE_HORIZON_MONTHS].drop(columns="m")
    want_churn = labels.attrition_labels(snap_t, window, "churned")
    want_upgrade = labels.tier_up_labels(snap_t, snap_end, "upgraded", BELOW_TOP)

    outsiders = data.draw(st.lists(customer_paths(), min_size=1, max_size=4))
    extra = panel_rows(outsiders).drop(columns="m")
    extra["customer_id"] += 1_000  # customers that are not in the panel at T
    pd.testing.assert_frame_equal(
        labels.attrition_labels(snap_t, pd.concat([window, extra]), "churned"), want_churn
    )
    pd.testing.assert_frame_equal(
        labels.tier_up_labels(
            snap_t,
            pd.concat([snap_end, extra.drop_duplicates("customer_id")]),
            "upgraded",
            BELOW_TOP,
        ),
        want_upgrade,
    )
