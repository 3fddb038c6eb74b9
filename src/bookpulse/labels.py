"""The three targets. A label for month-end T reads only what happens in (T, T + horizon].

The population is fixed at T (who is active, which cards are new and unused); the outcome
comes only from the window after T. A month whose window runs past the end of the book gets
no labels: `labelled_months` says which months can be labelled.

* churn: active at T (open and not dormant) and attrited (closed, or dormant: see
  `bookpulse.domain.is_attrited`) at any month-end in (T, T+3]. A customer who closes
  inside the window counts as churned; nobody is dropped for leaving early.
* tier_upgrade: active at T, below the top tier at T, and at T+3 still active with a higher
  tier than at T. A customer who attrites inside the window has not upgraded (label 0).
* card_activation: a card issued in the month ending T and unused at T; positive when its
  first use falls within 30 days after T.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bookpulse.book import io
from bookpulse.domain import (
    ACTIVATION_WINDOW_DAYS,
    CHURN_HORIZON_MONTHS,
    TOP_TIER,
    UPGRADE_HORIZON_MONTHS,
    is_attrited,
    tier_index,
)

SNAPSHOT_COLUMNS = ["customer_id", "status", "aum_total", "txn_count", "digital_logins"]


def _attrited(snap: pd.DataFrame) -> np.ndarray:
    return is_attrited(snap["status"], snap["aum_total"], snap["txn_count"], snap["digital_logins"])


def active_customers(snap_t: pd.DataFrame) -> pd.DataFrame:
    """Rows of the month-end-T snapshot whose customer is active (open and not dormant)."""
    return snap_t.loc[~_attrited(snap_t)]


def churn_labels(snap_t: pd.DataFrame, window: pd.DataFrame) -> pd.DataFrame:
    """customer_id, churned: for customers active at T, attrition in the window's months."""
    active = active_customers(snap_t)["customer_id"]
    gone = window.loc[_attrited(window), "customer_id"].unique()
    return pd.DataFrame(
        {"customer_id": active.to_numpy(), "churned": active.isin(gone).to_numpy(np.int8)}
    )


def tier_upgrade_labels(snap_t: pd.DataFrame, snap_end: pd.DataFrame) -> pd.DataFrame:
    """customer_id, tier_at, upgraded: active below-top customers at T, upgraded at T+3."""
    active = active_customers(snap_t)
    tier_t = tier_index(active["aum_total"])
    below = tier_t < TOP_TIER
    active = active.loc[below]
    tier_t = tier_t[below]
    end_ok = snap_end.loc[~_attrited(snap_end)]
    tier_end = pd.Series(tier_index(end_ok["aum_total"]), index=end_ok["customer_id"].to_numpy())
    later = tier_end.reindex(active["customer_id"].to_numpy()).to_numpy()
    upgraded = np.nan_to_num(later, nan=-1) > tier_t
    return pd.DataFrame(
        {
            "customer_id": active["customer_id"].to_numpy(),
            "tier_at": tier_t.astype(np.int8),
            "upgraded": upgraded.astype(np.int8),
        }
    )


def card_activation_labels(cards: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """card_id, activated: cards issued in the month ending `as_of`, unused at `as_of`."""
    as_of = io.month_end(as_of)
    start = as_of.to_period("M").start_time
    issued = cards["issue_date"].between(start, as_of)
    used_by_t = cards["first_use_date"] <= as_of
    eligible = cards.loc[issued & ~used_by_t]
    deadline = as_of + pd.Timedelta(days=ACTIVATION_WINDOW_DAYS)
    activated = eligible["first_use_date"] <= deadline
    return pd.DataFrame(
        {"card_id": eligible["card_id"].to_numpy(), "activated": activated.to_numpy(np.int8)}
    )


def labelled_months(months: list[str], target: str) -> list[str]:
    """The months of a book whose outcome window for `target` closes inside the book."""
    if target == "card_activation":
        end = io.month_end(months[-1])
        return [
            m for m in months if io.month_end(m) + pd.Timedelta(days=ACTIVATION_WINDOW_DAYS) <= end
        ]
    horizon = {"churn": CHURN_HORIZON_MONTHS, "tier_upgrade": UPGRADE_HORIZON_MONTHS}[target]
    return months[: max(0, len(months) - horizon)]


def labels_for_month(book: Path, target: str, month: str, months: list[str]) -> pd.DataFrame:
    """Read what the label needs from `book` and label month `month` for `target`.

    A month whose outcome window runs past the end of the book has no labels: refused."""
    if target not in ("churn", "tier_upgrade", "card_activation"):
        raise ValueError(f"unknown target {target!r}: use churn, tier_upgrade or card_activation")
    if io.month_key(month) not in labelled_months(months, target):
        raise io.BookError(
            f"no {target} labels for {io.month_key(month)}: its outcome window runs past the "
            f"book's last month ({months[-1]}) or the month is not in the book"
        )
    i = months.index(io.month_key(month))
    if target == "card_activation":
        cards = io.read_static(book, "cards", ["card_id", "issue_date", "first_use_date"])
        return card_activation_labels(cards, io.month_end(month))
    snap_t = io.read_monthly(book, "snapshots", [months[i]], SNAPSHOT_COLUMNS)
    if target == "churn":
        window = io.read_monthly(
            book, "snapshots", months[i + 1 : i + 1 + CHURN_HORIZON_MONTHS], SNAPSHOT_COLUMNS
        )
        return churn_labels(snap_t, window)
    else:  # tier_upgrade
        snap_end = io.read_monthly(
            book, "snapshots", [months[i + UPGRADE_HORIZON_MONTHS]], SNAPSHOT_COLUMNS
        )
        return tier_upgrade_labels(snap_t, snap_end)
