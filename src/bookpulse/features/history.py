"""What the bank knew at a month-end: the book cut at T, and the customer-by-month panel.

`read_frames` (I/O) reads only partitions dated in the window that ends at T and the static
tables; `point_in_time` (pure) removes or blanks everything dated after T, whatever it is
given; every feature function works on the `AsOf` that `as_of_view` builds from it. So a
feature as of T cannot see data dated after T even when a caller hands it a whole book.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bookpulse.book import io
from bookpulse.domain import AUM_PARTS, LOAN_PARTS, PRODUCT_FLAGS, is_attrited

HISTORY_MONTHS = 13  # T and the 12 month-ends before it: enough for 12-month changes

# Snapshot columns read for every month of the window, and those read at T only.
PANEL_COLUMNS = [
    "status",
    "aum_total",
    "transfer_in",
    "transfer_out",
    "payroll_inflow",
    "products_held",
    "txn_count",
    "txn_amount",
    "digital_logins",
    "branch_visits",
    "rm_contacts",
    "vas_used",
    "complaints",
]
MONTH_END_COLUMNS = [
    *AUM_PARTS,
    *LOAN_PARTS,
    *PRODUCT_FLAGS,
    "external_assets_est",
]


@dataclass(frozen=True)
class BookFrames:
    """Book tables in memory. `snapshots` and `card_spend` carry a `month` column.

    `month_end` is optional: when set, `snapshots` may hold only the panel's columns and
    `month_end` the columns read at T alone (flags, AUM by product line, loans, external
    assets), keyed (customer_id, month). That is how `read_frames` keeps a large book's
    13-month window small; a whole book in memory can leave it out."""

    customers: pd.DataFrame
    snapshots: pd.DataFrame
    cards: pd.DataFrame
    card_spend: pd.DataFrame
    relationships: pd.DataFrame
    branches: pd.DataFrame
    month_end: pd.DataFrame | None = None
    # For a slice of the book (one partition of customers): what every linked customer,
    # in the slice or not, brings to the relationship features (`linked_facts`), computed
    # from the whole book. None: computed from `snapshots`, which then hold them all.
    linked: pd.DataFrame | None = None


def window_months(as_of: str, months: int = HISTORY_MONTHS) -> list[str]:
    end = pd.Period(as_of, freq="M")
    return [str(p) for p in pd.period_range(end - (months - 1), end, freq="M")]


def read_frames(
    book: Path,
    as_of: str,
    months: int = HISTORY_MONTHS,
    customer_ids: np.ndarray | None = None,
    linked: pd.DataFrame | None = None,
) -> BookFrames:
    """Read what features as of `as_of` may use: the window's partitions and static tables.

    Month T's snapshot is read whole; earlier months only the panel's columns. With
    `customer_ids`, only those customers' rows (and their cards') are read: a slice of the
    book for one partition of a job, whose relationship features need the facts of the
    customers they are linked to: either pass those facts for the whole book as `linked`
    (`read_linked_facts`), or include the linked customers in `customer_ids` (`with_linked`)."""
    meta = io.read_meta(book)
    as_of = io.month_key(as_of)
    if as_of not in meta["months"]:
        raise io.BookError(
            f"{as_of} is not a month of the book at {book} "
            f"({meta['months'][0]} .. {meta['months'][-1]})"
        )
    wanted = [m for m in window_months(as_of, months) if m in meta["months"]]
    by_customer = None if customer_ids is None else ("customer_id", customer_ids)
    # Month by month, compacted as read: the 13-month window of a large book is never held
    # twice; the columns needed at T only are read at T only.
    snapshots = pd.concat(
        [
            _compact(
                io.read_monthly(
                    book, "snapshots", [m], ["customer_id", *PANEL_COLUMNS], by_customer
                )
            )
            for m in wanted
        ],
        ignore_index=True,
    )
    month_end = io.read_monthly(
        book, "snapshots", [as_of], ["customer_id", *MONTH_END_COLUMNS], by_customer
    )
    cards = io.read_static(book, "cards", where=by_customer)
    by_card = None if customer_ids is None else ("card_id", cards["card_id"].to_numpy())
    frames = BookFrames(
        customers=io.read_static(book, "customers", where=by_customer),
        snapshots=snapshots,
        cards=cards,
        card_spend=io.read_monthly(book, "card_spend", wanted[-3:], where=by_card),
        relationships=io.read_static(book, "relationships", where=by_customer),
        branches=io.read_static(book, "branches", ["branch_id", "area_type"]),
        month_end=month_end,
        linked=linked,
    )
    return point_in_time(frames, as_of)


# What a linked customer brings to relationship features: month T's standing and the last
# three months' attrition (the months T-3 .. T).
LINKED_MONTHS = 4
LINKED_COLUMNS = ["customer_id", "status", "aum_total", "txn_count", "digital_logins"]


def linked_facts(snapshots: pd.DataFrame, as_of: str | pd.Timestamp) -> pd.DataFrame:
    """Per customer of `snapshots` (which must hold months T-3 .. T of LINKED_COLUMNS), indexed
    by customer_id: `aum` (assets at T if active at T, else NaN) and `attrited_3m` (attrited
    in (T-3 months, T]: an attrited row in that window and none at T-3). Pure; per customer,
    so a book's facts are the union of its partitions' facts."""
    t = io.month_end(as_of)
    snaps = snapshots.loc[snapshots["month"] <= t]
    at_t = snaps.loc[snaps["month"] == t]
    active = ~is_attrited(
        at_t["status"], at_t["aum_total"], at_t["txn_count"], at_t["digital_logins"]
    )
    ids = at_t["customer_id"].to_numpy()
    aum = pd.Series(at_t["aum_total"].to_numpy(float)[active], index=ids[active])
    recent = snaps.loc[snaps["month"] > t - pd.offsets.MonthEnd(3)]
    gone = is_attrited(
        recent["status"], recent["aum_total"], recent["txn_count"], recent["digital_logins"]
    )
    earlier = snaps.loc[snaps["month"] == t - pd.offsets.MonthEnd(3)]
    gone_before = is_attrited(
        earlier["status"], earlier["aum_total"], earlier["txn_count"], earlier["digital_logins"]
    )
    attrited = np.setdiff1d(
        recent["customer_id"].to_numpy()[gone], earlier["customer_id"].to_numpy()[gone_before]
    )
    index = pd.Index(np.union1d(aum.index.to_numpy(), attrited), name="customer_id")
    return pd.DataFrame(
        {"aum": aum.reindex(index).to_numpy(float), "attrited_3m": index.isin(attrited)},
        index=index,
    )


def read_linked_facts(
    book: Path, as_of: str, customer_ids: np.ndarray, keep: np.ndarray | None = None
) -> pd.DataFrame:
    """`linked_facts` of the customers `customer_ids` (one partition), read from the book;
    with `keep`, only those customers' (the ones someone is linked to)."""
    meta = io.read_meta(book)
    months = [m for m in window_months(io.month_key(as_of), LINKED_MONTHS) if m in meta["months"]]
    where = ("customer_id", customer_ids)
    snaps = io.read_monthly(book, "snapshots", months, LINKED_COLUMNS, where)
    facts = linked_facts(snaps, as_of)
    return facts if keep is None else facts.loc[facts.index.isin(keep)]


def with_linked(relationships: pd.DataFrame, customer_ids: np.ndarray) -> np.ndarray:
    """`customer_ids` and every customer they are linked to: what must be read for their
    relationship features to be computed as on the whole book."""
    linked = relationships.loc[
        relationships["customer_id"].isin(customer_ids), "related_customer_id"
    ].to_numpy()
    return np.union1d(customer_ids, linked)


# Flows and amounts are kept as float32 in memory (a 1,000,000-customer window is large);
# aum_total stays float64 because tiers are cut on it to the cent.
_FLOAT32 = ["transfer_in", "transfer_out", "payroll_inflow", "txn_amount"]


def _compact(snap: pd.DataFrame) -> pd.DataFrame:
    return snap.astype({c: np.float32 for c in _FLOAT32 if c in snap})


def _keep(df: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    """Rows where `mask` holds; the frame itself (no copy) when it holds everywhere."""
    return df if bool(mask.all()) else df.loc[mask]


def point_in_time(frames: BookFrames, as_of: str | pd.Timestamp) -> BookFrames:
    """The book as the bank knew it at month-end `as_of`: nothing dated after it survives."""
    t = io.month_end(as_of)
    cards = frames.cards.loc[frames.cards["issue_date"] <= t].copy()
    cards["first_use_date"] = cards["first_use_date"].where(cards["first_use_date"] <= t)
    month_end = frames.month_end
    if month_end is not None:
        month_end = _keep(month_end, month_end["month"] <= t)
    return replace(
        frames,
        customers=_keep(frames.customers, frames.customers["onboard_date"] <= t),
        snapshots=_keep(frames.snapshots, frames.snapshots["month"] <= t),
        cards=cards,
        card_spend=_keep(frames.card_spend, frames.card_spend["month"] <= t),
        relationships=_keep(frames.relationships, frames.relationships["since"] <= t),
        month_end=month_end,
    )


@dataclass(frozen=True)
class AsOf:
    """Everything a feature function needs for month-end `t`.

    `ids` are the customers active at T (open and not dormant), in a fixed order; `panel`
    maps each panel column to an (n customers, HISTORY_MONTHS) float array (float64 for
    aum_total, float32 for the rest) whose last column
    is T and whose earlier columns go back a month each (NaN where there was no row);
    `at_t` is month T's snapshot row for each customer, in the same order."""

    t: pd.Timestamp
    ids: np.ndarray
    panel: dict[str, np.ndarray]
    at_t: pd.DataFrame
    frames: BookFrames

    def col(self, name: str, months_back: int = 0) -> np.ndarray:
        """A panel column `months_back` month-ends before T."""
        return self.panel[name][:, HISTORY_MONTHS - 1 - months_back]

    def last(self, name: str, months: int) -> np.ndarray:
        """The panel column over the last `months` month-ends up to T: (n, months)."""
        return self.panel[name][:, HISTORY_MONTHS - months :]


def as_of_view(frames: BookFrames, as_of: str | pd.Timestamp) -> AsOf:
    """Cut the book at `as_of` and lay out the customer-by-month panel."""
    t = io.month_end(as_of)
    frames = point_in_time(frames, t)
    snaps = frames.snapshots
    at_t = snaps.loc[snaps["month"] == t]
    if frames.month_end is not None:
        extra = frames.month_end.loc[frames.month_end["month"] == t].drop(columns="month")
        at_t = at_t.drop(columns=[c for c in extra.columns if c != "customer_id" and c in at_t])
        at_t = at_t.merge(extra, on="customer_id", how="left", validate="one_to_one")
    active = ~is_attrited(
        at_t["status"], at_t["aum_total"], at_t["txn_count"], at_t["digital_logins"]
    )
    at_t = at_t.loc[active].sort_values("customer_id").reset_index(drop=True)
    ids = at_t["customer_id"].to_numpy()
    start = t.to_period("M") - (HISTORY_MONTHS - 1)
    window = _keep(snaps, snaps["month"] >= io.month_end(start.to_timestamp()))
    rows = pd.Index(ids).get_indexer(window["customer_id"].to_numpy())
    month = window["month"]
    cols = ((month.dt.year * 12 + month.dt.month) - (start.year * 12 + start.month)).to_numpy()
    keep = rows >= 0
    rows, cols = rows[keep], cols[keep]
    panel: dict[str, np.ndarray] = {}
    for name in PANEL_COLUMNS:
        dtype = np.float64 if name == "aum_total" else np.float32
        if name == "status":
            values = (window["status"] == "open").to_numpy(dtype)
        else:
            values = window[name].to_numpy(dtype)
        arr = np.full((ids.size, HISTORY_MONTHS), np.nan, dtype=dtype)
        arr[rows, cols] = values[keep]
        panel[name] = arr
    return AsOf(t=t, ids=ids, panel=panel, at_t=at_t, frames=frames)
