"""`bookpulse score`: the monthly batch. Every row of each champion's population in month T
scored with reasons; the action lists; a manifest for auditors; the month's feature vectors
and score distributions put in the online store for the API.

The work is the pure `bookpulse.model.batch`; this module reads the book, checks it, and
publishes the month whole (`bookpulse.adapters.publish`): a crash leaves nothing
half-published and a re-run replaces the month. `--engine spark` runs the same functions over
partitions of customers (`jobs.score_spark`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from bookpulse.adapters import tracking
from bookpulse.adapters.champions import available_champions
from bookpulse.adapters.publish import (
    Manifest,
    Timer,
    check_writable,
    default_out,
    mark_online,
    publish_month,
)
from bookpulse.adapters.store import OnlineStore, Snapshot, open_store
from bookpulse.book import io
from bookpulse.book.validate import describe_problems, validate_book
from bookpulse.config import get_settings
from bookpulse.errors import ScoringError
from bookpulse.features import build_features, read_frames
from bookpulse.features.history import HISTORY_MONTHS, window_months
from bookpulse.model.batch import (
    add_ranks,
    build_lists,
    online_rows,
    require_features,
    score_rows,
    scored_population,
)
from bookpulse.model.core import Champion
from bookpulse.specs import (
    FeatureSpec,
    Playbook,
    load_feature_catalog,
    load_model_specs,
    load_playbook,
)

Progress = Callable[[str, int, int], None]  # (stage, rows done, rows in all)


@dataclass(frozen=True)
class ScoreRequest:
    """One month to score. `None` takes the default: the home's book, the book's latest
    month, `$BOOKPULSE_HOME/scores/YYYY-MM`."""

    home: Path
    book: Path | None = None
    as_of: str | None = None
    out: Path | None = None
    engine: Literal["local", "spark"] = "local"
    spark_master: str = "local[*]"
    threads: int = 0  # scoring threads on the local engine (0: all cores)
    allow_short_history: bool = False  # score a month with less history than features read


@dataclass(frozen=True)
class ScoreResult:
    manifest: Manifest
    out: Path
    online: str  # what became of the online store, in a sentence
    not_scored: dict[str, str]  # model -> why (no champion yet)


def latest_month(book: Path) -> str:
    """The book's latest month-end: what `score`, `monitor` and the demo default to."""
    return io.read_meta(book)["months"][-1]


def require_month(book: Path, as_of: str) -> list[str]:
    """Refuse a month the book does not hold (cheap: before any model is loaded); the book's
    months."""
    months = io.read_meta(book)["months"]
    if io.month_key(as_of) not in months:
        raise ScoringError(
            f"{io.month_key(as_of)} is not a month of the book at {book} ({months[0]} .. "
            f"{months[-1]}); pick --as-of within it"
        )
    return months


def short_history(months: list[str], as_of: str) -> bool:
    """True when the book holds fewer month-ends up to `as_of` than the features read (13:
    12-month changes and habits would be computed on a part of their window)."""
    return months.index(io.month_key(as_of)) < HISTORY_MONTHS - 1


def check_month(book: Path, as_of: str, allow_short_history: bool = False) -> None:
    """Refuse a month the book cannot score: not in it, with less history than the features
    read (unless allowed), or failing validation on what the month reads."""
    as_of = io.month_key(as_of)
    months = require_month(book, as_of)
    if short_history(months, as_of) and not allow_short_history:
        have = months.index(as_of) + 1
        earliest = months[HISTORY_MONTHS - 1] if len(months) >= HISTORY_MONTHS else None
        where = (
            f"the earliest month of this book that can be scored is {earliest}"
            if earliest
            else f"this book holds only {len(months)} month-ends: none can be scored in full"
        )
        raise ScoringError(
            f"{as_of} has {have} month-end(s) of history in the book; the features read "
            f"{HISTORY_MONTHS} (12-month changes and habits), so its scores would be off: "
            f"{where}. Pass --allow-short-history to score it anyway (marked in the manifest)."
        )
    window = [m for m in window_months(as_of, HISTORY_MONTHS) if m in months]
    problems = validate_book(book, months=window)
    if problems:
        raise ScoringError(describe_problems(book, problems))


def online_store_for(month: str, home: Path) -> tuple[OnlineStore | None, str]:
    """The online store to put `month` in, unless it already serves a later month:
    re-scoring a past month (for a review, or a correction) must not roll the API back."""
    store = open_store(home, get_settings().online_store)
    store.check()
    live = store.as_of()
    if live is not None and live > month:
        return None, f"online store left on {live} (newer than {month}): the API keeps serving it"
    return store, f"online store now serves {month}"


def score(request: ScoreRequest, progress: Progress | None = None) -> ScoreResult:
    """Score one month with the champions of every model in `models/` and publish it."""
    home = Path(request.home)
    book = request.book or get_settings().book_dir
    month = io.month_key(request.as_of) if request.as_of else latest_month(book)
    allow = request.allow_short_history
    # everything that can be refused is refused before a model is loaded
    timer = Timer()
    check_month(book, month, allow)
    timer.lap("validate", timer.started)
    out = Path(request.out) if request.out else default_out(home, month)
    check_writable(out, "the output folder")
    catalog = load_feature_catalog()
    catalogs = {e: catalog.for_entity(e) for e in ("customer", "card")}
    playbook = load_playbook()
    store, online = online_store_for(month, home)
    tracking.configure(home)
    champions, not_scored = available_champions(list(load_model_specs().values()))
    args = (book, month, champions, catalogs, playbook, out)
    same = {"online": store, "timer": timer, "allow_short_history": allow, "online_note": online}
    if request.engine == "spark":
        from bookpulse.jobs.score_spark import score_month_spark

        manifest = score_month_spark(*args, request.spark_master, **same)
    else:
        for c in champions.values():
            c.model.threads = request.threads
        manifest = score_month(*args, progress, **same)
    return ScoreResult(manifest=manifest, out=out, online=online, not_scored=not_scored)


def score_month(
    book: Path,
    as_of: str,
    champions: dict[str, Champion],
    catalogs: dict[str, dict[str, FeatureSpec]],
    playbook: Playbook,
    out: Path,
    progress: Progress | None = None,
    online: OnlineStore | None = None,
    timer: Timer | None = None,
    allow_short_history: bool = False,
    online_note: str = "not asked",
) -> Manifest:
    """Score month `as_of` of `book` locally and publish it at `out`; return the manifest.
    With `online` (an online store), the month's feature vectors go there too, for the API,
    and the manifest says so once they are; without, `online_note` says why not. `timer`: the
    caller's, when it has run (and timed) `check_month` already.

    `progress(stage, done, total)` is told the rows scored so far."""
    t = timer or Timer()
    started, t0 = t.started, time.perf_counter()
    as_of = io.month_key(as_of)
    if timer is None:
        check_month(book, as_of, allow_short_history)
        t0 = t.lap("validate", t0)
    customers_f, cards_f = build_features(read_frames(book, as_of), as_of)
    frames = {"customer": customers_f, "card": cards_f}
    require_features(champions, frames)
    t0 = t.lap("features", t0)
    static = io.read_static(book, "customers", ["customer_id", "branch_id", "rm_id"])
    rms = io.read_static(book, "rms")
    branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
    total = sum(len(scored_population(c.spec, frames[c.spec.entity])) for c in champions.values())
    done = 0

    def tick(rows: int) -> None:
        nonlocal done
        done += rows
        if progress:
            progress("scoring", done, total)

    cust, card = score_rows(champions, catalogs, customers_f, cards_f, static, tick)
    for c in champions.values():
        if c.spec.entity == "customer":
            cust = add_ranks(cust, c.spec.prefix)
        else:
            card = add_ranks(card, c.spec.prefix)
    t0 = t.lap("scoring", t0)
    specs = {c.name: c.spec for c in champions.values()}
    lists = build_lists(cust, card, rms, branches, playbook, specs)
    t0 = t.lap("lists", t0)
    rows_in = {
        "customers_in_book": int(len(static)),
        "active_customers": int(len(customers_f)),
        "new_unused_cards": int(len(cards_f)),
    }
    manifest = publish_month(
        out,
        as_of,
        book,
        "local",
        champions,
        rows_in,
        {"customers": cust, "cards": card},
        lists,
        t,
        started,
        short_history(io.read_meta(book)["months"], as_of),
        "pending" if online is not None else online_note,
    )
    if online is not None:
        online.put_month(online_snapshot(as_of, champions, customers_f, cards_f, cust, card))
        manifest = mark_online(out, "published")
    return manifest


def online_snapshot(
    as_of: str,
    champions: dict[str, Champion],
    customers_f: pd.DataFrame,
    cards_f: pd.DataFrame,
    cust: pd.DataFrame,
    card: pd.DataFrame,
) -> Snapshot:
    """What the API needs of this month: each row's features (those the champions use) with
    its context, and the month's score distributions (for percentiles)."""
    tables = {"customer": cust, "card": card}
    dists = {
        c.spec.prefix: tables[c.spec.entity][f"{c.spec.prefix}_probability"].dropna().to_numpy()
        for c in champions.values()
    }
    return Snapshot(
        as_of=as_of,
        rows={
            "customer": online_rows(champions, "customer", customers_f, cust),
            "card": online_rows(champions, "card", cards_f, card),
        },
        distributions=dists,
    )
