"""Shared fixtures: small books made by the simulator, once per test session (per worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookpulse.synthetic.simulate import BookSpec, generate_book

SMALL = BookSpec(customers=1_500, months=8, seed=7, end_month="2026-10")
REALISM = BookSpec(customers=20_000, months=24, seed=42, end_month="2026-10")


@pytest.fixture(scope="session")
def small_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 customers x 8 months: fast, for shape and contract checks."""
    out = tmp_path_factory.mktemp("books") / "small"
    generate_book(SMALL, out)
    return out


@pytest.fixture(scope="session")
def realism_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 customers x 24 months: the size the realism targets are stated for."""
    out = tmp_path_factory.mktemp("books") / "realism"
    generate_book(REALISM, out)
    return out


@pytest.fixture(scope="session")
def realism_summary(realism_book: Path):
    from bookpulse.synthetic.summary import summarize

    return summarize(realism_book)


TRAINABLE = BookSpec(customers=2_500, months=24, seed=3, end_month="2026-10")


@pytest.fixture(scope="session")
def trainable_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,500 customers x 24 months: long enough for every spec's out-of-time split."""
    out = tmp_path_factory.mktemp("books") / "trainable"
    generate_book(TRAINABLE, out)
    return out
