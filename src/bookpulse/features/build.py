"""Build a month's feature frames from a book on disk, check them, and publish them."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bookpulse.book import io
from bookpulse.features import build_from_book
from bookpulse.features.schema import validate_features
from bookpulse.specs import load_feature_catalog


@dataclass(frozen=True)
class FeatureFiles:
    customers: Path
    cards: Path
    customer_rows: int
    card_rows: int


def default_paths(home: Path, as_of: str) -> tuple[Path, Path]:
    folder = home / "features" / io.month_key(as_of)
    return folder / "customers.parquet", folder / "cards.parquet"


def cards_path_for(customers_path: Path) -> Path:
    """Where the card frame goes when the customer frame is written to `customers_path`."""
    return customers_path.with_name(f"{customers_path.stem}_cards{customers_path.suffix}")


def _publish(df: pd.DataFrame, path: Path) -> None:
    """Write next to `path`, then rename into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        io.write_parquet(df, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_and_publish(
    book: Path, as_of: str, customers_path: Path, cards_path: Path
) -> FeatureFiles:
    """Features as of `as_of`, validated against the catalog, then written (both or neither)."""
    customers, cards = build_from_book(book, as_of)
    catalog = load_feature_catalog()
    validate_features(customers, catalog, "customer")
    validate_features(cards, catalog, "card")
    _publish(customers, customers_path)
    _publish(cards, cards_path)
    return FeatureFiles(customers_path, cards_path, len(customers), len(cards))
