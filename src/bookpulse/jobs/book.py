"""`bookpulse book generate | validate | summary` and `bookpulse features build`: make a
synthetic book, check a book, describe it, and build one month's features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bookpulse.book import io
from bookpulse.book.validate import Problem, validate_book
from bookpulse.config import get_settings
from bookpulse.errors import BookpulseError
from bookpulse.features.build import (
    FeatureFiles,
    build_and_publish,
    cards_path_for,
    default_paths,
)
from bookpulse.synthetic.simulate import BookSpec, Shock, generate_book
from bookpulse.synthetic.summary import BookSummary, summarize


def last_complete_month() -> str:
    """The default last month of a generated book: the month before this one."""
    return str(pd.Timestamp.today().to_period("M") - 1)


@dataclass(frozen=True)
class GenerateRequest:
    """A synthetic book to write. `None`: `$BOOKPULSE_HOME/book`, the last complete month."""

    out: Path | None = None
    customers: int = 20_000
    months: int = 24
    seed: int = 42
    end_month: str | None = None
    force: bool = False
    shocks: tuple[str, ...] = ()  # KIND@YYYY-MM[:STRENGTH]


@dataclass(frozen=True)
class Generated:
    out: Path
    meta: dict
    shocks: tuple[Shock, ...]


def parse_shocks(texts: tuple[str, ...] | list[str]) -> tuple[Shock, ...]:
    try:
        return tuple(Shock.parse(t) for t in texts)
    except ValueError as exc:
        raise BookpulseError(str(exc)) from None


def generate(
    request: GenerateRequest, progress: Callable[[int, int], None] | None = None
) -> Generated:
    """Simulate the book (refused before any work when its folder holds data, unless
    `force`); `progress(steps done, steps)`: a step is a month of a block of customers."""
    out = request.out or get_settings().book_dir
    shocks = parse_shocks(request.shocks)
    spec = BookSpec(
        customers=request.customers,
        months=request.months,
        seed=request.seed,
        end_month=request.end_month or last_complete_month(),
        shocks=shocks,
    )
    try:
        meta = generate_book(spec, out, force=request.force, progress=progress)
    except ValueError as exc:
        raise BookpulseError(str(exc)) from None
    return Generated(out, meta, shocks)


def validate(book: Path | None = None) -> tuple[Path, list[Problem]]:
    """Every problem of every table of the book (none: valid)."""
    book = book or get_settings().book_dir
    return book, validate_book(book)


def summary(book: Path | None = None) -> tuple[Path, BookSummary]:
    book = book or get_settings().book_dir
    return book, summarize(book)


@dataclass(frozen=True)
class FeaturesRequest:
    """One month's features. `out`: the customer file (cards beside it); `None` takes
    `$BOOKPULSE_HOME/features/YYYY-MM/`."""

    home: Path
    as_of: str
    book: Path | None = None
    out: Path | None = None


def build_features(request: FeaturesRequest) -> FeatureFiles:
    """Features as of a month-end, checked against features/*.yaml, published atomically."""
    book = request.book or get_settings().book_dir
    if request.out is None:
        customers_path, cards_path = default_paths(request.home, request.as_of)
    else:
        customers_path, cards_path = request.out, cards_path_for(request.out)
    io.read_meta(book)  # a missing book is refused before any work
    return build_and_publish(book, request.as_of, customers_path, cards_path)
