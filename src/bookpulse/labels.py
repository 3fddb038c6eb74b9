"""Target kinds. A label for month-end T reads only what happens in (T, T + horizon].

A model's target is declared in `models/<name>.yaml` as one of these kinds with its
parameters; no model is named here. The population is fixed at T (who is active, who is in
which tier, who holds which product, which cards are new and unused); the outcome comes only
from the window after T. A month whose window runs past the end of the book gets no labels:
`labelled_months` says which months can be labelled.

* attrition (N months): active at T (open and not dormant) and attrited (closed, or dormant:
  see `bookpulse.domain.is_attrited`) at any month-end in (T, T+N]. A customer who closes
  inside the window counts; nobody is dropped for leaving early.
* tier_up (N months): active at T and at T+N, in a higher tier at T+N than at T. A customer
  who attrites inside the window has not moved up (label 0).
* product_take_up (N months, a product line): active at T without the product, holding it at
  some month-end in (T, T+N].
* first_use (N days): a card issued in the month ending T and unused at T; positive when its
  first use falls within N days after T.

On top of its kind's population, a target's `scored` rule (`in_population`) may leave out
tiers or holders of products at T: the same rule, written once, decides who is labelled here
and who is scored by the batch, Spark, the API and the monitor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bookpulse.book import io
from bookpulse.domain import TIERS, is_attrited, tier_index
from bookpulse.specs import Population, TargetSpec

BASE_COLUMNS = ["customer_id", "status", "aum_total", "txn_count", "digital_logins"]
# months -> those month-end snapshots (at least `snapshot_columns(target)`), stacked
Snapshots = Callable[[Sequence[str]], pd.DataFrame]


def snapshot_columns(target: TargetSpec) -> list[str]:
    """The snapshot columns a monthly target's labels read."""
    extra = [*target.scored.without_products, *([target.product] if target.product else [])]
    return [*BASE_COLUMNS, *dict.fromkeys(extra)]


def _attrited(snap: pd.DataFrame) -> np.ndarray:
    return is_attrited(snap["status"], snap["aum_total"], snap["txn_count"], snap["digital_logins"])


def active_customers(snap_t: pd.DataFrame) -> pd.DataFrame:
    """Rows of the month-end-T snapshot whose customer is active (open and not dormant)."""
    return snap_t.loc[~_attrited(snap_t)]


def in_population(
    rule: Population, tier: np.ndarray | pd.Series, held: Callable[[str], np.ndarray]
) -> np.ndarray:
    """Which rows the rule keeps: `tier` is each row's tier name at T, `held(flag)` each
    row's holding of a product line (1 or True when held) at T."""
    keep = ~np.isin(np.asarray(tier, dtype=object), list(rule.exclude_tiers))
    for flag in rule.without_products:
        keep &= ~(np.nan_to_num(np.asarray(held(flag), dtype=float), nan=0.0) > 0)
    return keep


def population_at(snap_t: pd.DataFrame, rule: Population) -> pd.DataFrame:
    """Active customers at T that the rule keeps."""
    active = active_customers(snap_t)
    tier = np.asarray(TIERS, dtype=object)[tier_index(active["aum_total"])]
    return active.loc[in_population(rule, tier, lambda f: active[f].to_numpy())]


def attrition_labels(
    snap_t: pd.DataFrame, window: pd.DataFrame, label: str, rule: Population | None = None
) -> pd.DataFrame:
    """customer_id, <label>: for the population at T, attrition in the window's months."""
    who = population_at(snap_t, rule or Population())["customer_id"]
    gone = window.loc[_attrited(window), "customer_id"].unique()
    return pd.DataFrame({"customer_id": who.to_numpy(), label: who.isin(gone).to_numpy(np.int8)})


def tier_up_labels(
    snap_t: pd.DataFrame, snap_end: pd.DataFrame, label: str, rule: Population | None = None
) -> pd.DataFrame:
    """customer_id, tier_at, <label>: the population at T; 1 when active at the window's end
    in a higher tier."""
    who = population_at(snap_t, rule or Population())
    tier_t = tier_index(who["aum_total"])
    end_ok = snap_end.loc[~_attrited(snap_end)]
    tier_end = pd.Series(tier_index(end_ok["aum_total"]), index=end_ok["customer_id"].to_numpy())
    later = tier_end.reindex(who["customer_id"].to_numpy()).to_numpy()
    up = np.nan_to_num(later, nan=-1) > tier_t
    return pd.DataFrame(
        {
            "customer_id": who["customer_id"].to_numpy(),
            "tier_at": tier_t.astype(np.int8),
            label: up.astype(np.int8),
        }
    )


def take_up_labels(
    snap_t: pd.DataFrame,
    window: pd.DataFrame,
    product: str,
    label: str,
    rule: Population | None = None,
) -> pd.DataFrame:
    """customer_id, <label>: the population at T without `product`; 1 when they hold it at a
    month-end of the window."""
    rule = rule or Population()
    if product not in rule.without_products:
        rule = rule.model_copy(update={"without_products": [*rule.without_products, product]})
    who = population_at(snap_t, rule)["customer_id"]
    took = window.loc[window[product].astype(bool), "customer_id"].unique()
    return pd.DataFrame({"customer_id": who.to_numpy(), label: who.isin(took).to_numpy(np.int8)})


def first_use_labels(
    cards: pd.DataFrame, as_of: pd.Timestamp, days: int, label: str
) -> pd.DataFrame:
    """card_id, <label>: cards issued in the month ending `as_of`, unused at `as_of`; 1 when
    first used within `days` after it."""
    as_of = io.month_end(as_of)
    start = as_of.to_period("M").start_time
    issued = cards["issue_date"].between(start, as_of)
    used_by_t = cards["first_use_date"] <= as_of
    eligible = cards.loc[issued & ~used_by_t]
    used = eligible["first_use_date"] <= as_of + pd.Timedelta(days=days)
    return pd.DataFrame({"card_id": eligible["card_id"].to_numpy(), label: used.to_numpy(np.int8)})


def labelled_months(months: list[str], target: TargetSpec) -> list[str]:
    """The months of a book whose outcome window for `target` closes inside the book."""
    if target.horizon_days is not None:
        end = io.month_end(months[-1])
        days = pd.Timedelta(days=target.horizon_days)
        return [m for m in months if io.month_end(m) + days <= end]
    return months[: max(0, len(months) - int(target.horizon_months or 0))]


def window_of(target: TargetSpec, month: str, months: list[str]) -> list[str]:
    """The month-ends (T, T+N] a monthly target's outcome reads."""
    i = months.index(io.month_key(month))
    return months[i + 1 : i + 1 + int(target.horizon_months or 0)]


class BookSnapshots:
    """Month-end snapshots read from a book, each month once however often it is asked for (a
    training set labels many months whose windows overlap, for several targets). Months are
    asked in order, so `forget_before` keeps only the window still ahead in memory."""

    def __init__(self, book: Path, columns: list[str]) -> None:
        self.book, self.columns = book, columns
        self._cache: dict[str, pd.DataFrame] = {}

    def __call__(self, wanted: Sequence[str]) -> pd.DataFrame:
        for m in wanted:
            if m not in self._cache:
                self._cache[m] = io.read_monthly(self.book, "snapshots", [m], self.columns)
        return pd.concat([self._cache[m] for m in wanted], ignore_index=True)

    def forget_before(self, month: str) -> None:
        for m in [m for m in self._cache if m < month]:
            del self._cache[m]


def label_month(
    target: TargetSpec,
    month: str,
    months: list[str],
    snapshots: Snapshots,
    cards: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The id column and `target.label` for month `month` (labelled: see `labelled_months`).
    Monthly kinds read `snapshots`; first_use reads `cards` (card_id, issue_date,
    first_use_date)."""
    if target.kind == "first_use":
        return first_use_labels(cards, io.month_end(month), int(target.horizon_days), target.label)
    snap_t = snapshots([io.month_key(month)])
    window_months = window_of(target, month, months)
    if target.kind == "tier_up":
        end = snapshots(window_months[-1:])
        return tier_up_labels(snap_t, end, target.label, target.scored)
    window = snapshots(window_months)
    if target.kind == "attrition":
        return attrition_labels(snap_t, window, target.label, target.scored)
    return take_up_labels(snap_t, window, str(target.product), target.label, target.scored)


def labels_for_month(book: Path, target: TargetSpec, month: str, months: list[str]) -> pd.DataFrame:
    """Read what the label needs from `book` and label month `month` for `target`.

    A month whose outcome window runs past the end of the book has no labels: refused."""
    if io.month_key(month) not in labelled_months(months, target):
        raise io.BookError(
            f"no {target.label} labels for {io.month_key(month)}: its outcome window runs past "
            f"the book's last month ({months[-1]}) or the month is not in the book"
        )
    if target.kind == "first_use":
        cards = io.read_static(book, "cards", ["card_id", "issue_date", "first_use_date"])
        return label_month(target, month, months, lambda _: pd.DataFrame(), cards)
    return label_month(target, month, months, BookSnapshots(book, snapshot_columns(target)))
