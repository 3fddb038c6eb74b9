"""`bookpulse score --engine spark`: the same month, the same steps, as Spark tasks.

The book's customers are cut into K runs of ids, the local engine's partitions
(`score.customer_partitions`). Three stages of tasks, each running the local engine's own
functions on one partition:
1. the facts linked customers bring to relationship features (`read_linked_facts`),
   gathered to the driver (a few bytes a linked customer) and broadcast;
2. features, scores with reasons (`partition_features`, `score_rows`) and the rows' online
   documents, staged as Parquet in the month's temporary folder;
3. once the driver has the book's sorted probabilities (read back a column at a time, and
   broadcast), each part ranked (`rank_part`) and its list candidates (`merge_candidates`)
   written beside it.
The driver then merges the candidates (each set no longer than its list), cuts the lists,
appends the ranked parts into one `customers.parquet` and publishes the month with the same
code as the local engine: the same files, in the same layout. No row crosses Spark's own
data path; the tasks and the driver share the month's temporary folder, so on a cluster the
book and the output must be on storage every executor can read and write.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bookpulse.adapters.publish import Manifest, Timer, mark_online, write_month
from bookpulse.adapters.store import BATCH_ROWS, KEYS, encode, layout_of
from bookpulse.book import io
from bookpulse.features.history import read_linked_facts
from bookpulse.jobs.score import (
    check_month,
    customer_partitions,
    merge_candidates,
    month_cards,
    month_lists,
    partition_features,
    rank_part,
    short_history,
    write_parts,
)
from bookpulse.model.batch import online_rows, planned_lists, score_rows, uplift_specs
from bookpulse.model.core import Champion, model_versions
from bookpulse.model.fit import ScoringModel
from bookpulse.model.uplift import UpliftChampion, UpliftModel
from bookpulse.specs import FeatureSpec, Playbook

ROWS_PER_PARTITION = 250_000  # as the local engine's partitions


def session(master: str = "local[*]", app: str = "bookpulse-score"):
    """A Spark session whose Python workers run this interpreter (and so this package)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )


def _models(champions: dict[str, Champion]) -> dict[str, tuple]:
    """What a task needs to rebuild the champions: picklable text, not boosters."""
    return {
        name: (
            c.spec,
            c.model.to_json(),
            c.version,
            c.run_id,
            [(u.spec, u.model.to_json(), u.version, u.run_id) for u in c.uplifts],
        )
        for name, c in champions.items()
    }


def _champions(models: dict[str, tuple]) -> dict[str, Champion]:
    return {
        name: Champion(
            spec,
            ScoringModel.from_json(text, threads=1),
            version,
            run_id,
            tuple(
                UpliftChampion(u_spec, UpliftModel.from_json(u_text, threads=1), u_ver, u_run)
                for u_spec, u_text, u_ver, u_run in uplifts
            ),
        )
        for name, (spec, text, version, run_id, uplifts) in models.items()
    }


def _own(book: Path, bounds: tuple[int, int]) -> np.ndarray:
    """The customer ids of one partition, from its first and last id."""
    ids = io.read_static(book, "customers", ["customer_id"])["customer_id"].to_numpy()
    return np.sort(ids[(ids >= bounds[0]) & (ids <= bounds[1])])


def _run_tasks(spark, bounds: list[tuple[int, int]], task, schema: str) -> pd.DataFrame:
    """`task(part number, (first id, last id))` on one Spark task per partition; their
    small result frames gathered to the driver."""

    def run(batches):
        for batch in batches:
            for part in batch["part"].tolist():
                yield task(part, bounds[part])

    parts = spark.createDataFrame(pd.DataFrame({"part": range(len(bounds))}))
    parts = parts.repartition(len(bounds), "part")
    return parts.mapInPandas(run, schema=schema).toPandas()


def score_month_spark(
    book: Path,
    as_of: str,
    champions: dict[str, Champion],
    catalogs: dict[str, dict[str, FeatureSpec]],
    playbook: Playbook,
    out: Path,
    master: str = "local[*]",
    partitions: int | None = None,
    online=None,
    timer: Timer | None = None,
    allow_short_history: bool = False,
    online_note: str = "not asked",
) -> Manifest:
    """Score month `as_of` on Spark and publish it at `out`, as `score.score_month` does
    locally (the same files); with `online` (an online store), the month's documents and
    distributions go there too, the same as the local engine's."""
    t = timer or Timer()
    started, t0 = t.started, time.perf_counter()
    book = Path(book).resolve()
    as_of = io.month_key(as_of)
    if timer is None:
        check_month(book, as_of, allow_short_history)
        t0 = t.lap("validate", t0)
    spark = session(master)
    ids = io.read_static(book, "customers", ["customer_id"])["customer_id"].to_numpy()
    k = partitions or max(
        spark.sparkContext.defaultParallelism, math.ceil(len(ids) / ROWS_PER_PARTITION)
    )
    parts = customer_partitions(ids, max(1, math.ceil(len(ids) / k)))
    bounds = [(int(p[0]), int(p[-1])) if len(p) else (0, -1) for p in parts]
    sc = spark.sparkContext
    linked = _linked_facts(spark, book, as_of, bounds)
    t0 = t.lap("linked", t0)
    n = len(bounds)
    docs = online is not None
    prefixes = {e: [c.spec.prefix for c in champions.values() if c.spec.entity == e] for e in KEYS}
    rms = io.read_static(book, "rms")
    branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
    specs = {c.name: c.spec for c in champions.values()}
    with online.month_writer(as_of) if docs else nullcontext() as writer:
        with io.publishing(Path(out), replace=True) as tmp:
            staged = tmp / "_staged"
            staged.mkdir()
            task = _score_task(book, as_of, _models(champions), catalogs, linked, staged, docs)
            counts = _run_tasks(spark, bounds, task, "part int, customers bigint, cards bigint")
            linked.unpersist()
            t0 = t.lap("scoring", t0)
            cards = [pd.read_parquet(staged / f"cards-{p:05d}.parquet") for p in range(n)]
            card, dists = month_cards(cards, prefixes["card"])
            dists |= {p: _sorted_probabilities(staged, n, p) for p in prefixes["customer"]}
            first = pd.read_parquet(staged / "customers-00000.parquet").head(0)
            columns = {"customer": list(rank_part(first, dists)), "card": list(card)}
            plan = planned_lists(playbook, specs, columns, uplift_specs(champions))
            book_dists = sc.broadcast({p: dists[p] for p in prefixes["customer"]})
            _run_tasks(spark, bounds, _rank_task(staged, book_dists, plan, rms), "part int")
            book_dists.unpersist()
            candidates: dict[str, pd.DataFrame] = {}
            lists_of_customers = [name for name, _, spec, _ in plan if spec.entity == "customer"]
            for p in range(n):
                part = {
                    name: pd.read_parquet(staged / f"candidates-{name}-{p:05d}.parquet")
                    for name in lists_of_customers
                }
                candidates = merge_candidates(candidates, part, plan, rms)
            t0 = t.lap("ranks", t0)
            lists = month_lists(plan, candidates, card, rms, branches)
            t0 = t.lap("lists", t0)
            ranked = (pd.read_parquet(staged / f"ranked-{p:05d}.parquet") for p in range(n))
            write_parts(tmp / "customers.parquet", ranked)
            if docs:
                for entity in KEYS:
                    _send_docs(writer, entity, staged, n)
                t0 = t.lap("online", t0)
            rows = {"customer": int(counts["customers"].sum()), "card": int(counts["cards"].sum())}
            shutil.rmtree(staged)
            manifest = write_month(
                tmp,
                as_of,
                book,
                f"spark ({master}), {n} partitions",
                champions,
                {
                    "customers_in_book": int(len(ids)),
                    "active_customers": rows["customer"],
                    "new_unused_cards": rows["card"],
                },
                {"customers": lambda _: rows["customer"], "cards": card},
                lists,
                t,
                started,
                short_history(io.read_meta(book)["months"], as_of),
                "pending" if docs else online_note,
            )
        if docs:  # the files are in place: now the store, for the API
            writer.commit(dists, model_versions(champions))
    if docs:
        manifest = mark_online(out, "published")
    return manifest


def _linked_facts(spark, book: Path, as_of: str, bounds: list[tuple[int, int]]):
    """Stage 1: the linked customers' facts (`read_linked_facts`), a task a partition,
    gathered and broadcast (a few bytes a linked customer)."""
    related = io.read_static(book, "relationships", ["related_customer_id"])
    keep = spark.sparkContext.broadcast(np.unique(related["related_customer_id"].to_numpy()))
    del related

    def facts(part: int, b: tuple[int, int]) -> pd.DataFrame:
        got = read_linked_facts(book, as_of, _own(book, b), keep=keep.value)
        return got.reset_index()

    schema = "customer_id bigint, aum double, attrited_3m boolean"
    linked = _run_tasks(spark, bounds, facts, schema).set_index("customer_id")
    keep.unpersist()
    return spark.sparkContext.broadcast(linked)


def _score_task(book: Path, as_of: str, models: dict, catalogs: dict, linked, staged: Path, docs):
    """Stage 2, one partition: features, scores with reasons and (with `docs`) the online
    documents, staged as Parquet; returns the partition's row counts."""

    def score(part: int, b: tuple[int, int]) -> pd.DataFrame:
        champs = _champions(models)
        customers_f, cards_f, static = partition_features(book, as_of, _own(book, b), linked.value)
        cust, card = score_rows(champs, catalogs, customers_f, cards_f, static)
        io.write_parquet(cust, staged / f"customers-{part:05d}.parquet")
        io.write_parquet(card, staged / f"cards-{part:05d}.parquet")
        if docs:
            for entity, f, table in (("customer", customers_f, cust), ("card", cards_f, card)):
                rows = online_rows(champs, entity, f, table)
                _stage_docs(rows, KEYS[entity], staged / f"docs-{entity}-{part:05d}")
        return pd.DataFrame({"part": [part], "customers": [len(cust)], "cards": [len(card)]})

    return score


def _sorted_probabilities(staged: Path, parts: int, prefix: str) -> np.ndarray:
    """A customer model's probabilities over the book, read back from the staged parts (one
    column: 8 bytes a row), sorted."""
    col = [f"{prefix}_probability"]
    return np.sort(
        np.concatenate(
            [
                pq.read_table(staged / f"customers-{p:05d}.parquet", columns=col)
                .column(0)
                .drop_null()
                .to_numpy()
                for p in range(parts)
            ]
        )
    )


def _rank_task(staged: Path, book_dists, plan: list, rms: pd.DataFrame):
    """Stage 3, one partition: its rows ranked in the book (`rank_part`), staged, and each
    list's candidates among them beside them."""

    def rank(part: int, b: tuple[int, int]) -> pd.DataFrame:
        ranked = rank_part(
            pd.read_parquet(staged / f"customers-{part:05d}.parquet"), book_dists.value
        )
        io.write_parquet(ranked, staged / f"ranked-{part:05d}.parquet")
        for name, got in merge_candidates({}, ranked, plan, rms).items():
            io.write_parquet(got, staged / f"candidates-{name}-{part:05d}.parquet")
        return pd.DataFrame({"part": [part]})

    return rank


DOCS_SCHEMA = pa.schema([("id", pa.int64()), ("doc", pa.binary())])


def _stage_docs(rows: pd.DataFrame, key: str, base: Path) -> None:
    """A task's online documents (`encode`, as the local engine's store writer encodes
    them), staged as Parquet, with their layout beside them."""
    layout = layout_of(rows, key)
    base.with_suffix(".json").write_text(json.dumps(layout))
    with pq.ParquetWriter(base.with_suffix(".parquet"), DOCS_SCHEMA) as w:
        for batch in encode(rows, key, layout):
            ids, docs = zip(*batch, strict=True)
            w.write_table(pa.table([pa.array(ids, pa.int64()), pa.array(docs)], schema=DOCS_SCHEMA))


def _send_docs(writer, entity: str, staged: Path, parts: int) -> None:
    """The staged documents of every task into the store's month, streamed a batch at a
    time (the writer refuses a task whose layout differs from the others')."""
    for part in range(parts):
        base = staged / f"docs-{entity}-{part:05d}"
        layout = json.loads(base.with_suffix(".json").read_text())
        batches = pq.ParquetFile(base.with_suffix(".parquet")).iter_batches(BATCH_ROWS)
        writer.add_docs(
            entity,
            layout,
            (
                list(zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True))
                for b in batches
            ),
        )
