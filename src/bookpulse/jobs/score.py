"""`bookpulse score`: the monthly batch. Every row of each champion's population in month T
scored with reasons; the action lists; a manifest for auditors; the month's feature vectors
and score distributions put in the online store for the API.

The work is the pure `bookpulse.model.batch`; this module reads the book, checks it, streams
it through in partitions of customers (memory follows the partition, not the book: see
`score_month`) and publishes the month whole (`bookpulse.adapters.publish`): a crash leaves
nothing half-published and a re-run replaces the month. `--engine spark` runs the same
partition steps as Spark tasks (`jobs.score_spark`).
"""

from __future__ import annotations

import ctypes
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bookpulse.adapters import tracking
from bookpulse.adapters.champions import available_champions
from bookpulse.adapters.publish import (
    Manifest,
    Timer,
    check_writable,
    default_out,
    mark_online,
    write_month,
)
from bookpulse.adapters.store import KEYS, OnlineStore, open_store
from bookpulse.book import io
from bookpulse.book.validate import describe_problems, validate_book
from bookpulse.config import get_settings
from bookpulse.errors import ScoringError
from bookpulse.features import build_features, read_frames
from bookpulse.features.history import HISTORY_MONTHS, read_linked_facts, window_months
from bookpulse.model.batch import (
    add_book_ranks,
    add_ranks,
    online_rows,
    planned_lists,
    require_features,
    score_rows,
    uplift_specs,
)
from bookpulse.model.core import Champion, model_versions
from bookpulse.model.lists import action_list, list_candidates
from bookpulse.specs import (
    FeatureSpec,
    Playbook,
    load_feature_catalog,
    load_model_specs,
    load_playbook,
)

Progress = Callable[[str, int, int], None]  # (stage, rows done, rows in all)
# Customers a partition of the local engine holds at once: peak memory follows it (about
# 1 GiB at 250,000 with four models), not the book's size.
PARTITION_CUSTOMERS = 250_000


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
    _give_back_memory()
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
    return ScoreResult(
        manifest=manifest,
        out=out,
        online=online,
        not_scored=not_scored | lists_by_score(book, playbook, champions),
    )


def lists_by_score(book: Path, playbook: Playbook, champions: dict[str, Champion]) -> dict:
    """For each list whose uplift model could not rank it this month, one line saying why
    (it is ranked by its model's score instead)."""
    have = uplift_specs(champions)
    contacts = bool(io.available_months(book, "contacts"))
    out = {}
    for name, lst in playbook.lists.items():
        if lst.uplift is None or lst.uplift in have or lst.model not in champions:
            continue
        why = (
            "the book has no contacts table, so no uplift model can learn what the action "
            "changes (it needs past lists with randomised hold-outs)"
            if not contacts
            else f"{lst.uplift} has no champion yet (`bookpulse train {lst.uplift}`, then "
            f"`bookpulse promote {lst.uplift}`)"
        )
        out[f"list {name} by expected value"] = (
            f"{why}; the list is ranked by the {lst.model} score"
        )
    return out


def customer_partitions(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """The book's customer ids in id order, cut into runs of `size`: a book written in id
    order (as `bookpulse book generate` writes it) gives each run its own row groups."""
    ids = np.sort(np.asarray(ids))
    return [ids[i : i + size] for i in range(0, len(ids), size)] or [ids]


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
    partition_customers: int = PARTITION_CUSTOMERS,
) -> Manifest:
    """Score month `as_of` of `book` locally and publish it at `out`; return the manifest.
    With `online` (an online store), the month's feature vectors go there too, for the API,
    and the manifest says so once they are; without, `online_note` says why not. `timer`: the
    caller's, when it has run (and timed) `check_month` already.

    The book streams through in partitions of `partition_customers` customers, so memory
    depends on the partition, not the book:
    1. the facts linked customers bring to relationship features, partition by partition;
    2. each partition's features, scores with reasons (staged as Parquet in the month's
       temporary folder) and online documents (written to the store's private copy);
    3. each staged partition ranked against the book's sorted probabilities (exact book-wide
       percentiles and deciles), appended to `customers.parquet`, its list candidates merged;
    4. lists, manifest, the swap into place, then the online store made live.

    `progress(stage, done, total)` is told the customers done so far."""
    t = timer or Timer()
    started, t0 = t.started, time.perf_counter()
    as_of = io.month_key(as_of)
    if timer is None:
        check_month(book, as_of, allow_short_history)
        t0 = t.lap("validate", t0)
    require_features(champions, {e: list(catalog) for e, catalog in catalogs.items()})
    ids = io.read_static(book, "customers", ["customer_id"])["customer_id"].to_numpy()
    parts = customer_partitions(ids, partition_customers)
    linked = linked_facts_by_part(book, as_of, parts)
    t.lap("linked", t0)
    rms = io.read_static(book, "rms")
    branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
    specs = {c.name: c.spec for c in champions.values()}
    prefixes = {e: [c.spec.prefix for c in champions.values() if c.spec.entity == e] for e in KEYS}
    store = online.month_writer(as_of) if online is not None else nullcontext()
    with store as writer:
        with io.publishing(out, replace=True) as tmp:
            staged = _Staged(tmp / "_staged")
            _score_partitions(
                book, as_of, parts, linked, champions, catalogs, staged, writer, t, progress
            )
            del linked
            t0 = time.perf_counter()
            card, card_dists = month_cards(staged.card_parts, prefixes["card"])
            dists = staged.distributions() | card_dists
            columns = {"customer": staged.ranked_columns(dists), "card": list(card)}
            plan = planned_lists(playbook, specs, columns, uplift_specs(champions))
            candidates = staged.write_ranked(tmp / "customers.parquet", dists, plan, rms)
            t0 = t.add("ranks", t0)
            lists = month_lists(plan, candidates, card, rms, branches)
            t.add("lists", t0)
            shutil.rmtree(staged.folder)
            manifest = write_month(
                tmp,
                as_of,
                book,
                f"local, partitions of {partition_customers:,} customers",
                champions,
                {
                    "customers_in_book": int(len(ids)),
                    "active_customers": staged.rows["customer"],
                    "new_unused_cards": staged.rows["card"],
                },
                {"customers": lambda _: staged.rows["customer"], "cards": card},
                lists,
                t,
                started,
                short_history(io.read_meta(book)["months"], as_of),
                "pending" if online is not None else online_note,
            )
        if writer is not None:  # the files are in place: now the store, for the API
            t0 = time.perf_counter()
            writer.commit(dists, model_versions(champions))
            t.add("online", t0)
    if writer is not None:
        manifest = mark_online(out, "published")
    return manifest


def _give_back_memory() -> None:
    """Return what the last partition freed to the system (Arrow's pool and glibc's heap keep
    it otherwise): the peak then follows one partition, not the partitions seen so far."""
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def linked_facts_by_part(book: Path, as_of: str, parts: list[np.ndarray]) -> pd.DataFrame:
    """What every linked customer brings to relationship features (`read_linked_facts`),
    read partition by partition; only the customers someone is linked to are kept."""
    related = io.read_static(book, "relationships", ["related_customer_id"])
    related = np.unique(related["related_customer_id"].to_numpy())
    return pd.concat([read_linked_facts(book, as_of, own, keep=related) for own in parts])


def partition_features(
    book: Path, as_of: str, own: np.ndarray, linked: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Customer and card feature frames of the customers `own` (one partition), equal to the
    whole book's rows for them, and their branch and RM (`score_rows`'s `static`)."""
    frames = read_frames(book, as_of, customer_ids=own, linked=linked)
    customers_f, cards_f = build_features(frames, as_of)
    return customers_f, cards_f, frames.customers[["customer_id", "branch_id", "rm_id"]]


def month_cards(
    parts: list[pd.DataFrame], prefixes: list[str]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The month's card rows from the partitions' (a month's new cards: few), in card order
    as the whole book's feature frame has them, ranked; and each card model's sorted
    probabilities."""
    rows = [p for p in parts if len(p)] or parts[:1]  # an empty part keeps the columns
    card = pd.concat(rows, ignore_index=True).sort_values("card_id", kind="stable")
    card = card.reset_index(drop=True)
    dists = {}
    for prefix in prefixes:
        dists[prefix] = np.sort(card[f"{prefix}_probability"].dropna().to_numpy(np.float64))
        card = add_ranks(card, prefix)
    return card, dists


def rank_part(part: pd.DataFrame, dists: dict[str, np.ndarray]) -> pd.DataFrame:
    """A part of the month's customer rows with each model's percentile and decile in the
    book (`dists`: each model's sorted probabilities over the book), inserted in place."""
    for prefix, book_probabilities in dists.items():
        if f"{prefix}_probability" in part:
            add_book_ranks(part, prefix, book_probabilities, inplace=True)
    return part


def merge_candidates(
    candidates: dict[str, pd.DataFrame],
    part: pd.DataFrame | dict[str, pd.DataFrame],
    plan: list,
    rms: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Each customer list's candidates so far merged with a part's (`list_candidates` of a
    ranked part, or taken already: a dict by list): never more rows than the list itself."""
    out = dict(candidates)
    for name, lst, spec, uplift in plan:
        if spec.entity == "customer":
            if isinstance(part, dict):
                mine = part[name]
            else:
                mine = list_candidates(lst, part, spec.prefix, spec.id_column, rms, uplift)
            both = pd.concat([out[name], mine]) if name in out else mine
            out[name] = list_candidates(lst, both, spec.prefix, spec.id_column, rms, uplift)
    return out


def month_lists(
    plan: list,
    candidates: dict[str, pd.DataFrame],
    card: pd.DataFrame,
    rms: pd.DataFrame,
    branches: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """The month's lists: customer lists from their candidates, card lists from the cards."""
    return {
        name: action_list(
            name,
            lst,
            candidates[name] if spec.entity == "customer" else card,
            spec.prefix,
            spec.id_column,
            rms,
            branches,
            uplift,
        )
        for name, lst, spec, uplift in plan
    }


class _Staged:
    """The month's scored partitions, staged as Parquet (customer rows without ranks), and
    what the book-wide pass needs kept in memory: each customer model's probabilities (8
    bytes a row), the card rows (a month's new cards: few) and the row counts."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        self.paths: list[Path] = []
        self.probabilities: dict[str, list[np.ndarray]] = {}
        self.card_parts: list[pd.DataFrame] = []
        self.rows = {"customer": 0, "card": 0}
        self.columns: list[str] = []

    def add(self, cust: pd.DataFrame, card: pd.DataFrame, prefixes: list[str]) -> None:
        for prefix in prefixes:
            p = cust[f"{prefix}_probability"].dropna().to_numpy(np.float64)
            self.probabilities.setdefault(prefix, []).append(p)
        path = self.folder / f"customers-{len(self.paths):05d}.parquet"
        io.write_parquet(cust, path)
        self.paths.append(path)
        self.columns = list(cust.columns)
        self.card_parts.append(card)
        self.rows["customer"] += len(cust)
        self.rows["card"] += len(card)

    def distributions(self) -> dict[str, np.ndarray]:
        """Each customer model's probabilities over the book, sorted."""
        return {p: np.sort(np.concatenate(a)) for p, a in self.probabilities.items()}

    def parts(self):
        """The staged customer rows, a partition at a time, in id order."""
        for path in self.paths:
            yield pd.read_parquet(path)

    def ranked_columns(self, dists: dict[str, np.ndarray]) -> list[str]:
        """The customer table's columns once ranked (percentile and decile after each
        probability)."""
        out = []
        for c in self.columns:
            out.append(c)
            if c.endswith("_probability") and c.removesuffix("_probability") in dists:
                out += [c.replace("_probability", f"_{r}") for r in ("percentile", "decile")]
        return out

    def write_ranked(
        self, path: Path, dists: dict[str, np.ndarray], plan: list, rms: pd.DataFrame
    ) -> dict[str, pd.DataFrame]:
        """Each staged part ranked against the book's sorted probabilities `dists` and
        appended to the Parquet file `path`; returns each customer list's candidates
        (`list_candidates`, merged part by part)."""
        candidates: dict[str, pd.DataFrame] = {}

        def ranked():
            nonlocal candidates
            for part in self.parts():
                part = rank_part(part, dists)
                candidates = merge_candidates(candidates, part, plan, rms)
                yield part

        write_parts(path, ranked())
        return candidates


def write_parts(path: Path, parts) -> None:
    """One Parquet file from frames of one table (a row group or more each), written as
    `io.write_parquet` writes the whole table."""
    writer = None
    try:
        for part in parts:
            table = pa.Table.from_pandas(part, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema, **io.PARQUET_OPTIONS)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def _score_partitions(
    book: Path,
    as_of: str,
    parts: list[np.ndarray],
    linked: pd.DataFrame,
    champions: dict[str, Champion],
    catalogs: dict[str, dict[str, FeatureSpec]],
    staged: _Staged,
    writer,
    t: Timer,
    progress: Progress | None,
) -> None:
    """Features, scores with reasons and online documents, partition by partition."""
    prefixes = [c.spec.prefix for c in champions.values() if c.spec.entity == "customer"]
    total, done = sum(len(p) for p in parts), 0
    for own in parts:
        t0 = time.perf_counter()
        customers_f, cards_f, static = partition_features(book, as_of, own, linked)
        t0 = t.add("features", t0)
        cust, card = score_rows(champions, catalogs, customers_f, cards_f, static)
        t0 = t.add("scoring", t0)
        staged.add(cust, card, prefixes)
        if writer is not None:
            writer.add("customer", online_rows(champions, "customer", customers_f, cust))
            writer.add("card", online_rows(champions, "card", cards_f, card))
            t0 = t.add("online", t0)
        del customers_f, cards_f, static, cust, card  # before the next partition is read
        _give_back_memory()
        done += len(own)
        if progress:
            progress("scoring", done, total)
