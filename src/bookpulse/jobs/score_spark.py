"""`bookpulse score --engine spark`: the same month, the same core, over partitions of customers.

The customers are split into K partitions by id (id mod K). Each Spark task reads only its
customers' slice of the book, plus their linked customers for the relationship features
(`read_frames(customer_ids=...)`), builds the features with the pandas pipeline and scores
them with `score_rows`: the very code the local engine runs. Percentiles need the whole book:
each row's count of strictly lower scores comes from a distributed sort, and the pandas
`add_ranks` turns counts into percentile and decile. Lists are built per RM with the same
`action_list`. The score tables are written by Spark (a folder of Parquet parts each); the
lists, small by construction, by the driver. The tasks' rows are staged as Parquet beside
`out` (removed at the end), not cached. With an online store, each task also builds its rows'
feature documents (`online_rows` and `store.encode`, as the local engine does), staged with
them with their layout; the driver streams them from there into the store in batches.
Local[*] by default; a master URL for a cluster (the book's folder must then be readable by
every executor, e.g. on shared or object storage).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bookpulse.adapters.publish import Manifest, Timer, mark_online, publish_month
from bookpulse.adapters.store import (
    BATCH_ROWS,
    KEYS,
    Encoded,
    Layout,
    Snapshot,
    encode,
    layout_of,
)
from bookpulse.book import io
from bookpulse.errors import BookpulseError
from bookpulse.jobs.score import check_month, short_history
from bookpulse.model.batch import (
    CARD_BASE,
    CUSTOMER_BASE,
    add_ranks,
    online_rows,
    planned_lists,
    score_rows,
)
from bookpulse.model.core import Champion, score_columns
from bookpulse.model.fit import ScoringModel
from bookpulse.model.lists import LIST_COLUMNS, action_list
from bookpulse.specs import FeatureSpec, ModelSpec, Playbook

ROWS_PER_PARTITION = 250_000


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


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """pandas 3 keeps text in Arrow-backed `str` columns, which PySpark's Arrow path cannot
    take yet: hand it plain objects."""
    text = [c for c in df.columns if pd.api.types.is_string_dtype(df[c].dtype)]
    return df.astype({c: object for c in text}) if text else df


def _type(column: str) -> str:
    """Spark SQL type of a score-table column, by its name."""
    if column in ("customer_id", "card_id"):
        return "bigint"
    if column in ("branch_id", "rm_id"):
        return "int"
    if column == "as_of":
        return "timestamp_ntz"
    if column.endswith(("_probability", "_contribution", "_percentile")):
        return "double"
    if column.endswith("_decile"):
        return "tinyint"
    if column == "doc":
        return "binary"
    return "string"


def _schema(columns: list[str]) -> str:
    return ", ".join(f"`{c}` {_type(c)}" for c in columns)


def _columns(champions: dict[str, Champion]) -> tuple[list[str], list[str]]:
    """Columns of the unranked customer and card rows `score_rows` returns."""
    cust, card = list(CUSTOMER_BASE), list(CARD_BASE)
    for champ in champions.values():
        cols = [f"{champ.spec.prefix}_{c}" for c in score_columns()]
        (card if champ.spec.entity == "card" else cust).extend(cols)
    return cust, card


def _models(champions: dict[str, Champion]) -> dict[str, tuple]:
    """What a task needs to rebuild the champions: picklable text, not boosters."""
    return {name: (c.spec, c.model.to_json(), c.version, c.run_id) for name, c in champions.items()}


def _docs(
    champions: dict[str, Champion], entity: str, features: pd.DataFrame, table: pd.DataFrame
) -> pd.Series:
    """The online-store document of each row of the score `table`, as the local engine makes
    it, staged for the driver: a byte 0 before each document, except on the first row, where
    byte 1 and the layout (4-byte length, JSON) come first: the driver needs the layout, and
    only the tasks see the frames' dtypes (see `_ParquetDocs`)."""
    key = KEYS[entity]
    rows = online_rows(champions, entity, features, table)
    layout = layout_of(rows, key)
    made = [pair for batch in encode(rows, key, layout) for pair in batch]
    docs = pd.Series([b"\0" + d for _, d in made], index=[i for i, _ in made], dtype=object)
    staged = docs.reindex(table[key]).to_numpy(copy=True)
    if len(staged):
        text = json.dumps(layout).encode()
        staged[0] = b"\1" + len(text).to_bytes(4, "little") + text + staged[0][1:]
    return pd.Series(staged, index=table.index, dtype=object)


def _partition_scorer(
    book: str, as_of: str, k: int, models: dict, catalogs: dict, docs: bool = False
):
    """The function each task runs on its partition numbers: features and scores of the
    customers whose id mod k is one of them, as rows of the union schema (with each row's
    online-store document in `doc` if `docs`)."""

    def run(batches):
        from bookpulse.features import build_features, read_frames
        from bookpulse.features.history import with_linked

        champs = {
            name: Champion(spec, ScoringModel.from_json(text, threads=1), version, run_id)
            for name, (spec, text, version, run_id) in models.items()
        }
        static = io.read_static(Path(book), "customers", ["customer_id", "branch_id", "rm_id"])
        rel = io.read_static(Path(book), "relationships", ["customer_id", "related_customer_id"])
        for batch in batches:
            for part in batch["part"].tolist():
                own = static.loc[static["customer_id"] % k == part, "customer_id"].to_numpy()
                frames = read_frames(Path(book), as_of, customer_ids=with_linked(rel, own))
                customers, cards = build_features(frames, as_of)
                customers = customers.loc[customers["customer_id"].isin(own)]
                cards = cards.loc[cards["customer_id"].isin(own)]
                cust, card = score_rows(champs, catalogs, customers, cards, static)
                if docs:
                    cust["doc"] = _docs(champs, "customer", customers, cust)
                    card["doc"] = _docs(champs, "card", cards, card)
                yield _plain(
                    pd.concat(
                        [cust.assign(entity="customer"), card.assign(entity="card")],
                        ignore_index=True,
                    )
                )

    return run


def _below_counts(spark, df, key: str, column: str):
    """(key, below) for the rows scored in `column`: how many of the book's rows score
    strictly lower. A distributed sort; ties share the count of their first position."""
    from pyspark.sql import functions as F

    scored = df.where(F.col(column).isNotNull()).select(key, column)
    ordered = scored.rdd.map(lambda r: (r[1], r[0])).sortByKey()
    indexed = ordered.zipWithIndex().map(lambda x: (x[0][1], x[0][0], x[1]))
    idx = spark.createDataFrame(indexed, schema=f"`{key}` bigint, p double, idx bigint")
    first = idx.groupBy("p").agg(F.min("idx").alias("below"))
    return idx.join(first, "p").select(key, "below")


def _ranked(spark, df, key: str, prefixes: list[str], columns: list[str]):
    """`df` with `<prefix>_percentile` and `<prefix>_decile` for each prefix (pandas
    `add_ranks` on each partition, from the book-wide counts)."""
    for prefix in prefixes:
        col = f"{prefix}_probability"
        n = df.where(df[col].isNotNull()).count()
        counts = _below_counts(spark, df, key, col).withColumnRenamed("below", "_below")
        df = df.join(counts, key, "left")
        at = columns.index(col) + 1
        columns = [*columns[:at], f"{prefix}_percentile", f"{prefix}_decile", *columns[at:]]

        def rank(batches, prefix=prefix, n=n, columns=columns):
            for b in batches:
                yield _plain(add_ranks(b.drop(columns="_below"), prefix, b["_below"], n)[columns])

        df = df.mapInPandas(rank, schema=_schema(columns))
    return df, columns


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
    """Score month `as_of` on Spark and publish it at `out`, like `score.score_month`; with
    `online` (an online store), the month's feature documents and distributions go there
    too, the same as the local engine's."""
    from pyspark.sql import functions as F

    t = timer or Timer()
    started, t0 = t.started, time.perf_counter()
    book = Path(book).resolve()
    as_of = io.month_key(as_of)
    if timer is None:
        check_month(book, as_of, allow_short_history)
        t0 = t.lap("validate", t0)
    spark = session(master)
    meta = io.read_meta(book)
    k = partitions or max(
        spark.sparkContext.defaultParallelism,
        math.ceil(int(meta.get("customers") or 1) / ROWS_PER_PARTITION),
    )
    cust_cols, card_cols = _columns(champions)
    union = list(dict.fromkeys([*cust_cols, *card_cols, "entity"]))
    if online is not None:
        union.append("doc")
    parts = spark.createDataFrame(pd.DataFrame({"part": range(k)})).repartition(k, "part")
    scored = parts.mapInPandas(
        _partition_scorer(str(book), as_of, k, _models(champions), catalogs, online is not None),
        schema=_schema(union),
    )
    # the tasks' rows go to Parquet beside `out` (by entity), not into Spark's cache: the
    # documents alone are ~1.5 KB a row, and the scores are read back without them
    out = Path(out)
    staging = out.parent / f".{out.name}.spark-{uuid.uuid4().hex[:8]}"
    cust = card = None
    try:
        scored.write.partitionBy("entity").parquet(str(staging / "rows"))
        rows = spark.read.parquet(str(staging / "rows"))
        cust = rows.where(F.col("entity") == "customer").select(*cust_cols)
        card = rows.where(F.col("entity") == "card").select(*card_cols)
        cust_prefixes = [c.spec.prefix for c in champions.values() if c.spec.entity == "customer"]
        card_prefixes = [c.spec.prefix for c in champions.values() if c.spec.entity == "card"]
        cust, cust_cols = _ranked(spark, cust, "customer_id", cust_prefixes, cust_cols)
        card, card_cols = _ranked(spark, card, "card_id", card_prefixes, card_cols)
        cust, card = cust.persist(), card.persist()
        n_cust, n_card = cust.count(), card.count()
        t0 = t.lap("scoring", t0)
        rms = io.read_static(book, "rms")
        branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
        specs = {c.name: c.spec for c in champions.values()}
        lists = _lists(cust, card, rms, branches, playbook, specs)
        t0 = t.lap("lists", t0)

        def writer(df, count: int):
            def write(path: Path) -> int:
                df.write.mode("error").parquet(str(path))
                return count

            return write

        manifest = publish_month(
            out,
            as_of,
            book,
            f"spark ({master}, {k} partitions)",
            champions,
            {
                "customers_in_book": int(meta.get("customers") or 0),
                "active_customers": int(n_cust),
                "new_unused_cards": int(n_card),
            },
            {"customers": writer(cust, n_cust), "cards": writer(card, n_card)},
            lists,
            t,
            started,
            short_history(meta["months"], as_of),
            "pending" if online is not None else online_note,
        )
        if online is not None:
            prefixes = {"customer": cust_prefixes, "card": card_prefixes}
            online.put_month(_online_snapshot(as_of, rows, staging / "rows", prefixes))
            manifest = mark_online(out, "published")
        return manifest
    finally:
        for df in (cust, card):
            if df is not None:
                df.unpersist()
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class _ParquetDocs:
    """(id, doc) batches read from the Parquet parts Spark wrote for one entity: streamed,
    never all in memory (and re-readable, so a snapshot can be published more than once).
    Each task's first row brings the layout (`_docs`); every one must be the month's."""

    path: Path
    key: str
    layout: Layout | None = None

    def _parts(self) -> list[Path]:
        if not self.path.is_dir():  # no rows of this entity: Spark made no folder
            return []
        return sorted(self.path.glob("[!._]*.parquet"))

    def _batches(self, columns: list[str]):
        import pyarrow.parquet as pq

        for part in self._parts():
            # file by file, a row group at a time (a dataset scan reads well ahead: GiBs)
            yield from pq.ParquetFile(part).iter_batches(BATCH_ROWS, columns=columns)

    def find_layout(self) -> Layout | None:
        """The layout the first task staged (None: no rows)."""
        for b in self._batches(["doc"]):
            for i in self._flagged(b.column(0)):
                return self._unstage(b.column(0)[i].as_py())[0]
        return None

    def __iter__(self):
        import pyarrow.compute as pc

        for b in self._batches([self.key, "doc"]):
            staged = b.column(1)
            docs = pc.binary_slice(staged, 1, 2**31 - 1).to_pylist()  # the byte 0 off
            for i in self._flagged(staged):
                layout, docs[i] = self._unstage(staged[i].as_py())
                if layout != self.layout:
                    raise BookpulseError(
                        "the Spark tasks built online-store documents of different layouts"
                    )
            yield list(zip(b.column(0).to_pylist(), docs, strict=True))

    @staticmethod
    def _flagged(staged) -> list[int]:
        """The staged rows that bring a layout."""
        import pyarrow as pa
        import pyarrow.compute as pc

        first = pc.binary_slice(staged, 0, 1)
        return pc.indices_nonzero(pc.equal(first, pa.scalar(b"\1", pa.binary()))).to_pylist()

    @staticmethod
    def _unstage(staged: bytes) -> tuple[Layout, bytes]:
        """The layout and the document of a staged row that brings one."""
        n = int.from_bytes(staged[1:5], "little")
        return json.loads(staged[5 : 5 + n]), staged[5 + n :]


def _online_snapshot(as_of: str, rows, staged: Path, prefixes: dict[str, list[str]]) -> Snapshot:
    """The month for the online store: the documents the tasks built (streamed from the
    staged Parquet, with their layout) and the distributions (the probabilities, gathered to
    the driver)."""
    from pyspark.sql import functions as F

    dists = {}
    for entity, entity_prefixes in prefixes.items():
        for prefix in entity_prefixes:
            col = f"{prefix}_probability"
            mine = rows.where((F.col("entity") == entity) & F.col(col).isNotNull())
            dists[prefix] = mine.select(col).toPandas()[col].to_numpy()
    docs = {}
    for e, key in KEYS.items():
        layout = _ParquetDocs(staged / f"entity={e}", key).find_layout()
        if layout is not None:
            docs[e] = Encoded(layout, _ParquetDocs(staged / f"entity={e}", key, layout))
    return Snapshot(as_of=as_of, rows=docs, distributions=dists)


def _lists(
    cust, card, rms, branches, playbook: Playbook, specs: dict[str, ModelSpec]
) -> dict[str, pd.DataFrame]:
    """Each list built per RM by `action_list` on Spark, gathered to the driver (a list is
    capped by the RMs' capacity, so it is small)."""
    out = {}
    tables = {"customer": cust, "card": card}
    columns = {e: list(t.columns) for e, t in tables.items()}
    for name, lst, spec in planned_lists(playbook, specs, columns):
        scored, prefix = tables[spec.entity], spec.prefix
        build = _list_builder(name, lst, prefix, spec.id_column, rms, branches)

        schema = ", ".join(f"`{c}` {_list_type(c)}" for c in LIST_COLUMNS)
        df = scored.groupBy("rm_id").applyInPandas(build, schema=schema).toPandas()
        df["card_id"] = df["card_id"].astype("Int64")
        df["rank"] = df["rank"].astype("int32")
        out[name] = df.sort_values(["branch_id", "rm_id", "rank"], kind="stable").reset_index(
            drop=True
        )
    return out


def _list_builder(name: str, lst, prefix: str, key: str, rms: pd.DataFrame, branches: pd.DataFrame):
    def build(pdf: pd.DataFrame) -> pd.DataFrame:
        return _plain(action_list(name, lst, pdf, prefix, key, rms, branches))

    return build


def _list_type(column: str) -> str:
    return {
        "as_of": "timestamp_ntz",
        "branch_id": "int",
        "rm_id": "int",
        "rank": "int",
        "customer_id": "bigint",
        "card_id": "bigint",
        "probability": "double",
        "percentile": "double",
        "decile": "tinyint",
    }.get(column, "string")
