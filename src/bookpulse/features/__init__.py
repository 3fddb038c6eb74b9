"""Point-in-time features. One module per group; each is a pure function of the book as of T.

    frames = read_frames(book, "2026-10")            # I/O: only what T may use
    customers, cards = build_features(frames, "2026-10")

Customer frames are keyed (customer_id, as_of), one row per customer active at T; card frames
are keyed (card_id, as_of), one row per card issued in the month ending T and unused at T.
The features each group computes are declared in `features/<group>.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bookpulse.features import balances, cards, care, engagement, products, profile, relationships
from bookpulse.features.history import AsOf, BookFrames, as_of_view, read_frames

CUSTOMER_GROUPS: dict[str, Callable[[AsOf], pd.DataFrame]] = {
    "balances": balances.compute,
    "products": products.compute,
    "engagement": engagement.compute,
    "care": care.compute,
    "profile": profile.compute,
    "relationships": relationships.compute,
}
CARD_GROUPS = ("cards",)
CUSTOMER_KEY = ["customer_id", "as_of"]
CARD_KEY = ["card_id", "as_of"]


def customer_features(v: AsOf) -> pd.DataFrame:
    key = pd.DataFrame({"customer_id": v.ids.astype("int64"), "as_of": v.t})
    return pd.concat([key, *(compute(v) for compute in CUSTOMER_GROUPS.values())], axis=1)


def build_features(
    frames: BookFrames, as_of: str | pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer and card feature frames as of month-end `as_of` (pure: frames in, frames out)."""
    v = as_of_view(frames, as_of)
    cust = customer_features(v)
    card = cards.compute(v, cust)
    card.insert(1, "as_of", v.t)
    return cust, card


def build_from_book(book: Path, as_of: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read what `as_of` may use from the book on disk and build both frames."""
    return build_features(read_frames(book, as_of), as_of)


__all__ = [
    "CARD_KEY",
    "CUSTOMER_GROUPS",
    "CUSTOMER_KEY",
    "BookFrames",
    "build_features",
    "build_from_book",
    "customer_features",
    "read_frames",
]
