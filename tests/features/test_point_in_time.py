"""Point in time: nothing dated after month-end T changes a feature as of T.

A whole book is held in memory; hypothesis picks T and a perturbation of the data dated after
T (rows deleted, values altered, statuses closed, cards used or issued later, relationships
formed later, customers onboarded later), and the customer and card frames as of T must come
out identical. Controls show the same perturbations, moved one month earlier so that they touch
month T, do change the frames: the harness sees a leak when there is one. The on-disk reader
is checked against the in-memory cut, and shown never to open a partition dated after T.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from bookpulse.book import io
from bookpulse.domain import CARD_CHANNELS, CARD_PRODUCTS, REGIONS, RELATIONSHIP_KINDS, SEGMENTS
from bookpulse.features import BookFrames, build_features, build_from_book, read_frames
from bookpulse.synthetic.simulate import BookSpec, generate_book

SPEC = BookSpec(customers=600, months=14, seed=11, end_month="2026-10")
MONTHS = SPEC.month_keys()


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pit") / "book"
    generate_book(SPEC, out)
    return out


def load_whole_book(book: Path) -> BookFrames:
    """Every table of the book, every month, in memory."""
    return BookFrames(
        customers=io.read_static(book, "customers"),
        snapshots=io.read_monthly(book, "snapshots", MONTHS),
        cards=io.read_static(book, "cards"),
        card_spend=io.read_monthly(book, "card_spend", MONTHS),
        relationships=io.read_static(book, "relationships"),
        branches=io.read_static(book, "branches", ["branch_id", "area_type"]),
    )


@pytest.fixture(scope="module")
def frames(book: Path) -> BookFrames:
    return load_whole_book(book)


@pytest.fixture(scope="module")
def baseline(frames: BookFrames) -> Callable[[str], tuple[pd.DataFrame, pd.DataFrame]]:
    """Features of the unperturbed book, computed once per month."""
    cache: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

    def get(month: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        if month not in cache:
            cache[month] = build_features(frames, month)
        return cache[month]

    return get


def assert_same_features(
    got: tuple[pd.DataFrame, pd.DataFrame], want: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])


def features_differ(
    got: tuple[pd.DataFrame, pd.DataFrame], want: tuple[pd.DataFrame, pd.DataFrame]
) -> bool:
    try:
        assert_same_features(got, want)
    except AssertionError:
        return True
    return False


# --- perturbations of everything dated after `cut` ------------------------------------------
# Each takes the frames, a cut-off timestamp and a random generator, and returns new frames in
# which only data dated strictly after the cut-off differs. Column dtypes are kept.

Perturbation = Callable[[BookFrames, pd.Timestamp, np.random.Generator], BookFrames]


def _dates_after(
    cut: pd.Timestamp, rng: np.random.Generator, size: int, days: int = 120
) -> pd.DatetimeIndex:
    return cut.normalize() + pd.to_timedelta(rng.integers(1, days, size=size), unit="D")


def _subset(index: pd.Index, rng: np.random.Generator, share: float = 0.5) -> pd.Index:
    return index[rng.random(len(index)) < share]


def _snapshots_after(f: BookFrames, cut: pd.Timestamp) -> pd.Index:
    return f.snapshots.index[f.snapshots["month"] > cut]


def snapshots_delete_all(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    return replace(f, snapshots=f.snapshots.drop(_snapshots_after(f, cut)))


def snapshots_delete_some(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    return replace(f, snapshots=f.snapshots.drop(_subset(_snapshots_after(f, cut), rng)))


def snapshots_scale_numbers(
    f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator
) -> BookFrames:
    snaps = f.snapshots.copy()
    rows = _snapshots_after(f, cut)
    numeric = [
        c
        for c in snaps.columns
        if c != "customer_id"
        and pd.api.types.is_numeric_dtype(snaps[c])
        and not pd.api.types.is_bool_dtype(snaps[c])
    ]
    for col in numeric:
        factor = rng.uniform(0.0, 5.0, size=len(rows))
        values = snaps.loc[rows, col].to_numpy(float) * factor
        if pd.api.types.is_integer_dtype(snaps[col]):
            values = np.round(values)
        snaps.loc[rows, col] = values.astype(snaps[col].dtype)
    return replace(f, snapshots=snaps)


def snapshots_set_flags(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    snaps = f.snapshots.copy()
    rows = _snapshots_after(f, cut)
    for col in snaps.columns:
        if pd.api.types.is_bool_dtype(snaps[col]):
            snaps.loc[rows, col] = rng.random(len(rows)) < 0.5
    return replace(f, snapshots=snaps)


def snapshots_close(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    snaps = f.snapshots.copy()
    rows = _subset(_snapshots_after(f, cut), rng, 0.7)
    snaps.loc[rows, "status"] = "closed"
    snaps.loc[rows, "aum_total"] = 0.0
    return replace(f, snapshots=snaps)


def snapshots_go_dormant(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    snaps = f.snapshots.copy()
    rows = _subset(_snapshots_after(f, cut), rng, 0.7)
    snaps.loc[rows, "aum_total"] = 50.0
    snaps.loc[rows, ["txn_count", "digital_logins"]] = 0
    return replace(f, snapshots=snaps)


def snapshots_reopen(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """Closed or dormant rows after the cut come back to life."""
    snaps = f.snapshots.copy()
    rows = _snapshots_after(f, cut)
    snaps.loc[rows, "status"] = "open"
    snaps.loc[rows, "aum_total"] = rng.uniform(1_000, 2_000_000, size=len(rows))
    snaps.loc[rows, "txn_count"] = rng.integers(1, 50, size=len(rows)).astype(np.int32)
    return replace(f, snapshots=snaps)


def cards_move_first_use(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """First uses after the cut move to other dates after it, or are forgotten."""
    cards = f.cards.copy()
    rows = cards.index[cards["first_use_date"] > cut]
    new = pd.Series(_dates_after(cut, rng, len(rows)), index=rows)
    new[rng.random(len(rows)) < 0.3] = pd.NaT
    cards.loc[rows, "first_use_date"] = new.astype(cards["first_use_date"].dtype)
    return replace(f, cards=cards)


def cards_use_unused(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """Cards never used get a first use after the cut, within 45 days (so that when the cut
    is a month before T, most of the month's new unused cards are used by T)."""
    cards = f.cards.copy()
    rows = cards.index[cards["first_use_date"].isna()]
    new = pd.Series(_dates_after(cut, rng, len(rows), days=45), index=rows)
    cards.loc[rows, "first_use_date"] = new.astype(cards["first_use_date"].dtype)
    return replace(f, cards=cards)


def cards_issue_new(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """New cards issued after the cut to existing customers, used or not."""
    k = 40
    issue = _dates_after(cut, rng, k)
    first_use = pd.Series(issue + pd.to_timedelta(rng.integers(0, 20, size=k), unit="D"))
    first_use[rng.random(k) < 0.4] = pd.NaT
    dtypes = f.cards.dtypes
    new = pd.DataFrame(
        {
            "card_id": f.cards["card_id"].max() + 1 + np.arange(k),
            "customer_id": rng.choice(f.customers["customer_id"].to_numpy(), size=k),
            "issue_date": issue,
            "channel": pd.Categorical(rng.choice(CARD_CHANNELS, size=k), categories=CARD_CHANNELS),
            "product": pd.Categorical(rng.choice(CARD_PRODUCTS, size=k), categories=CARD_PRODUCTS),
            "credit_limit": rng.uniform(1_000, 100_000, size=k).round(-3),
            "first_use_date": first_use.to_numpy(),
        }
    ).astype(dtypes.to_dict())
    return replace(f, cards=pd.concat([f.cards, new], ignore_index=True))


def cards_alter_later_issues(
    f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator
) -> BookFrames:
    """Cards issued after the cut change holder, date, channel, product, limit and use."""
    cards = f.cards.copy()
    rows = cards.index[cards["issue_date"] > cut]
    k = len(rows)
    cards.loc[rows, "customer_id"] = rng.choice(f.customers["customer_id"].to_numpy(), size=k)
    issue = pd.Series(_dates_after(cut, rng, k), index=rows)
    cards.loc[rows, "issue_date"] = issue.astype(cards["issue_date"].dtype)
    cards.loc[rows, "first_use_date"] = issue.astype(cards["first_use_date"].dtype)
    cards.loc[rows, "channel"] = rng.choice(CARD_CHANNELS, size=k)
    cards.loc[rows, "product"] = rng.choice(CARD_PRODUCTS, size=k)
    cards.loc[rows, "credit_limit"] = rng.uniform(1_000, 100_000, size=k)
    return replace(f, cards=cards)


def relationships_delete(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    rel = f.relationships
    return replace(f, relationships=rel.drop(_subset(rel.index[rel["since"] > cut], rng, 0.7)))


def relationships_alter(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """Links formed after the cut change ends, kind and date (still after the cut)."""
    rel = f.relationships.copy()
    rows = rel.index[rel["since"] > cut]
    ids = f.customers["customer_id"].to_numpy()
    rel.loc[rows, "customer_id"] = rng.choice(ids, size=len(rows))
    rel.loc[rows, "related_customer_id"] = rng.choice(ids, size=len(rows))
    rel.loc[rows, "kind"] = rng.choice(RELATIONSHIP_KINDS, size=len(rows))
    since = pd.Series(_dates_after(cut, rng, len(rows)), index=rows)
    rel.loc[rows, "since"] = since.astype(rel["since"].dtype)
    return replace(f, relationships=rel)


def relationships_add(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """New links, formed after the cut, between existing customers."""
    k = 60
    ids = f.customers["customer_id"].to_numpy()
    new = pd.DataFrame(
        {
            "customer_id": rng.choice(ids, size=k),
            "related_customer_id": rng.choice(ids, size=k),
            "kind": pd.Categorical(
                rng.choice(RELATIONSHIP_KINDS, size=k), categories=RELATIONSHIP_KINDS
            ),
            "since": _dates_after(cut, rng, k),
        }
    ).astype(f.relationships.dtypes.to_dict())
    return replace(f, relationships=pd.concat([f.relationships, new], ignore_index=True))


def card_spend_alter(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    spend = f.card_spend.copy()
    rows = spend.index[spend["month"] > cut]
    spend.loc[rows, "amount"] = spend.loc[rows, "amount"] * rng.uniform(0, 10, size=len(rows))
    spend = spend.drop(_subset(rows, rng, 0.3))
    extra = f.card_spend.loc[_subset(rows, rng, 0.3)].copy()
    extra["card_id"] = rng.choice(f.cards["card_id"].to_numpy(), size=len(extra))
    return replace(f, card_spend=pd.concat([spend, extra], ignore_index=True))


def customers_alter_later(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """Customers onboarded after the cut: every trait changes, onboarding stays after it."""
    cust = f.customers.copy()
    rows = cust.index[cust["onboard_date"] > cut]
    k = len(rows)
    cust.loc[rows, "segment"] = rng.choice(SEGMENTS, size=k)
    cust.loc[rows, "region"] = rng.choice(REGIONS, size=k)
    cust.loc[rows, "gender"] = rng.choice(["F", "M"], size=k)
    cust.loc[rows, "birth_year"] = rng.integers(1930, 2008, size=k).astype(cust["birth_year"].dtype)
    cust.loc[rows, "branch_id"] = rng.choice(f.branches["branch_id"].to_numpy(), size=k)
    cust.loc[rows, "payroll_enrolled"] = rng.random(k) < 0.5
    # onboarding moves but stays after the cut and by the customer's first snapshot month-end
    first_row = f.snapshots.groupby("customer_id")["month"].min()
    first_row = first_row.reindex(cust.loc[rows, "customer_id"].to_numpy())
    room = (first_row - cut.normalize()).dt.days.fillna(119).to_numpy(int)
    days = pd.to_timedelta(rng.integers(1, room + 1, size=k), unit="D")
    onboard = pd.Series(cut.normalize() + days, index=rows)
    cust.loc[rows, "onboard_date"] = onboard.astype(cust["onboard_date"].dtype)
    return replace(f, customers=cust)


def customers_add_later(f: BookFrames, cut: pd.Timestamp, rng: np.random.Generator) -> BookFrames:
    """New customers onboarded after the cut, with snapshot rows after it and links to others."""
    k = 30
    new_ids = f.customers["customer_id"].max() + 1 + np.arange(k)
    cust = f.customers.sample(k, replace=True, random_state=rng).reset_index(drop=True)
    cust["customer_id"] = new_ids
    onboard = pd.Series(_dates_after(cut, rng, k))
    later = f.snapshots.loc[_snapshots_after(f, cut)]
    snaps = later.sample(min(k, len(later)), random_state=rng).copy()
    snaps["customer_id"] = new_ids[: len(snaps)]
    # a customer with a snapshot row was onboarded by that row's month-end (and after the cut)
    room = (snaps["month"] - cut.normalize()).dt.days.to_numpy()
    onboard.iloc[: len(snaps)] = cut.normalize() + pd.to_timedelta(
        rng.integers(1, room + 1, size=len(snaps)), unit="D"
    )
    cust["onboard_date"] = onboard.astype(f.customers["onboard_date"].dtype)
    rel = pd.DataFrame(
        {
            "customer_id": rng.choice(f.customers["customer_id"].to_numpy(), size=k),
            "related_customer_id": new_ids,
            "kind": pd.Categorical(
                rng.choice(RELATIONSHIP_KINDS, size=k), categories=RELATIONSHIP_KINDS
            ),
            "since": onboard.to_numpy(),
        }
    ).astype(f.relationships.dtypes.to_dict())
    return replace(
        f,
        customers=pd.concat([f.customers, cust], ignore_index=True),
        snapshots=pd.concat([f.snapshots, snaps], ignore_index=True),
        relationships=pd.concat([f.relationships, rel], ignore_index=True),
    )


PERTURBATIONS: dict[str, Perturbation] = {
    p.__name__: p
    for p in (
        snapshots_delete_all,
        snapshots_delete_some,
        snapshots_scale_numbers,
        snapshots_set_flags,
        snapshots_close,
        snapshots_go_dormant,
        snapshots_reopen,
        cards_move_first_use,
        cards_use_unused,
        cards_issue_new,
        cards_alter_later_issues,
        relationships_delete,
        relationships_alter,
        relationships_add,
        card_spend_alter,
        customers_alter_later,
        customers_add_later,
    )
}
# card_spend feeds no feature today, so moving it into month T changes nothing either.
NO_CONTROL = {"card_spend_alter"}


def perturb(f: BookFrames, names: list[str], cut: pd.Timestamp, seed: int) -> BookFrames:
    rng = np.random.default_rng(seed)
    for name in names:
        f = PERTURBATIONS[name](f, cut, rng)
    return f


def previous_month_end(month: str) -> pd.Timestamp:
    return io.month_end(pd.Period(month, freq="M") - 1)


# --- the property ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    month=st.sampled_from(MONTHS[1:]),
    names=st.lists(st.sampled_from(sorted(PERTURBATIONS)), min_size=1, max_size=6, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_data_dated_after_t_changes_no_feature_as_of_t(
    frames: BookFrames, baseline, month: str, names: list[str], seed: int
) -> None:
    t = io.month_end(month)
    changed = perturb(frames, names, t, seed)
    note(f"T={month} perturbations={names}")
    assert_same_features(build_features(changed, month), baseline(month))


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
@pytest.mark.parametrize("month", [MONTHS[1], MONTHS[-4]])
def test_each_perturbation_after_t_alone_changes_nothing(
    frames: BookFrames, baseline, name: str, month: str
) -> None:
    changed = perturb(frames, [name], io.month_end(month), seed=2026)
    assert_same_features(build_features(changed, month), baseline(month))


def test_every_perturbation_after_t_at_once_changes_nothing(frames: BookFrames, baseline) -> None:
    month = MONTHS[-5]
    changed = perturb(frames, sorted(PERTURBATIONS), io.month_end(month), seed=7)
    assert changed.snapshots.shape != frames.snapshots.shape  # the book really was altered
    assert_same_features(build_features(changed, month), baseline(month))


# --- controls: the harness sees changes to data dated at T ----------------------------------


@pytest.mark.parametrize("name", sorted(set(PERTURBATIONS) - NO_CONTROL))
def test_control_the_same_perturbation_reaching_month_t_changes_features(
    frames: BookFrames, baseline, name: str
) -> None:
    """Cut one month earlier, each perturbation touches month T, and the frames change."""
    month = MONTHS[-4]
    changed = perturb(frames, [name], previous_month_end(month), seed=2026)
    assert features_differ(build_features(changed, month), baseline(month))


def test_control_aum_at_t_changes_features(frames: BookFrames, baseline) -> None:
    month = MONTHS[-4]
    snaps = frames.snapshots.copy()
    # (scaled only well above the dormancy line, so that the population stays the same)
    at_t = (snaps["month"] == io.month_end(month)) & (snaps["aum_total"] >= 1_000)
    snaps.loc[at_t, "aum_total"] *= 1.5
    cust, _ = build_features(replace(frames, snapshots=snaps), month)
    want, _ = baseline(month)
    assert cust["customer_id"].equals(want["customer_id"])
    assert not np.allclose(cust["aum_total"], want["aum_total"])
    # and an earlier month moves the changes without touching the level at T
    snaps = frames.snapshots.copy()
    before_t = (snaps["month"] == previous_month_end(month)) & (snaps["aum_total"] >= 1_000)
    snaps.loc[before_t, "aum_total"] *= 1.5
    cust, _ = build_features(replace(frames, snapshots=snaps), month)
    np.testing.assert_array_equal(cust["aum_total"], want["aum_total"])
    assert not np.allclose(cust["aum_vol_6m"], want["aum_vol_6m"], equal_nan=True)


# --- the reader on disk ---------------------------------------------------------------------


@pytest.mark.parametrize("month", [MONTHS[1], MONTHS[8], MONTHS[-1]])
def test_read_frames_gives_the_features_of_the_whole_book_cut_at_t(
    book: Path, frames: BookFrames, baseline, month: str
) -> None:
    assert_same_features(build_features(read_frames(book, month), month), baseline(month))


@pytest.mark.parametrize(
    ("month", "outside"),
    [
        (MONTHS[-4], 2 * 3),  # T+1..T+3, for snapshots and card_spend
        (MONTHS[-1], 2 * 1),  # T-13, the book's first month, for both
    ],
)
def test_reader_opens_no_partition_dated_after_t_nor_before_the_window(
    book: Path, tmp_path: Path, baseline, monkeypatch: pytest.MonkeyPatch, month: str, outside: int
) -> None:
    t = pd.Period(month, freq="M")
    copy = tmp_path / "book"
    shutil.copytree(book, copy)
    shutil.rmtree(copy / io.TRUTH_DIR)
    removed = 0
    for table in io.MONTHLY_TABLES:
        for m in io.available_months(copy, table):
            if not t - 12 <= pd.Period(m, freq="M") <= t:
                shutil.rmtree(io.monthly_path(copy, table, m).parent)
                removed += 1
    assert removed == outside

    opened: list[Path] = []
    real_read_table = pq.read_table

    def spy(source, *args, **kwargs):
        opened.append(Path(source))
        return real_read_table(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    got = build_from_book(copy, month)
    assert_same_features(got, baseline(month))

    partitions = [p for p in opened if p.parent.name.startswith("month=")]
    assert partitions, "the spy saw no monthly partition being read"
    for p in partitions:
        assert t - 12 <= pd.Period(p.parent.name.removeprefix("month="), freq="M") <= t, p
    assert not any(io.TRUTH_DIR in p.relative_to(copy).parts for p in opened)


# --- and nothing dated before a feature's declared window ----------------------------------


def scramble_snapshots_up_to(f: BookFrames, cut: pd.Timestamp, seed: int) -> BookFrames:
    """Every snapshot value dated at or before `cut` replaced by noise (statuses included)."""
    rng = np.random.default_rng(seed)
    snaps = f.snapshots.copy()
    old = (snaps["month"] <= cut).to_numpy()
    coin = rng.random((len(snaps), len(snaps.columns))) < 0.5
    factor = rng.uniform(0.0, 5.0, (len(snaps), len(snaps.columns)))
    for j, col in enumerate(snaps.columns):
        if col in ("customer_id", "month"):
            continue
        if col == "status":
            noise = np.where(coin[:, j], "open", "closed")
            values = np.where(old, noise, snaps[col].astype(str).to_numpy())
            snaps[col] = pd.Categorical(values, categories=snaps[col].cat.categories)
        elif pd.api.types.is_bool_dtype(snaps[col]):
            snaps[col] = np.where(old, coin[:, j], snaps[col].to_numpy())
        else:
            values = snaps[col].to_numpy(float)
            noise = values * factor[:, j]
            if pd.api.types.is_integer_dtype(snaps[col]):
                noise = np.round(noise)
            snaps[col] = np.where(old, noise, values).astype(snaps[col].dtype)
    return replace(f, snapshots=snaps)


def test_each_snapshot_feature_reads_no_month_before_its_declared_window(
    frames: BookFrames, baseline
) -> None:
    """`window_months: w` in features/*.yaml: the feature reads month-ends T-(w-1) .. T only."""
    from bookpulse.specs import load_feature_catalog

    catalog = load_feature_catalog()
    month = MONTHS[-1]  # the book holds T-13 .. T: every window fits, with a month to spare
    want = dict(zip(("customer", "card"), baseline(month), strict=True))
    declared = {
        (entity, name): spec.window_months
        for entity in ("customer", "card")
        for name, spec in catalog.for_entity(entity).items()
        if spec.source == "snapshots"
    }
    for window in sorted(set(declared.values())):
        cut = io.month_end(pd.Period(month, freq="M") - window)
        got = dict(
            zip(
                ("customer", "card"),
                build_features(scramble_snapshots_up_to(frames, cut, seed=window), month),
                strict=True,
            )
        )
        assert got["customer"]["customer_id"].equals(want["customer"]["customer_id"])
        for (entity, name), w in declared.items():
            if w <= window:
                pd.testing.assert_series_equal(got[entity][name], want[entity][name], obj=name)
        # control: features whose window reaches one month further do see the scrambled month
        longer = [n for (e, n), w in declared.items() if e == "customer" and w == window + 1]
        if longer:
            assert any(not got["customer"][n].equals(want["customer"][n]) for n in longer), longer
