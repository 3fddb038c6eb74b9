"""The online store: each customer's and each eligible card's latest feature vector, keyed by
id, and the month's score distributions (for percentiles), published by the batch run.

Two implementations of one small interface: `SqliteStore` (the embedded default, a file under
$BOOKPULSE_HOME, no server) and `RedisStore` (for many API replicas). A month is published
whole: the SQLite file is written beside the live one and renamed over it; Redis keys are
written under the month's own prefix and a pointer is switched in one command. Readers see
the old month or the new one, never a mix.

Both write the same documents, one JSON text per row, built by `records` column by column in
Arrow (a million customers in seconds); every number reads back bit for bit, so the API
scores a stored customer exactly as the batch did. The Spark engine runs `records` in its
tasks and hands the store the finished documents.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as pdt

from bookpulse.adapters.publish import check_writable
from bookpulse.book import io
from bookpulse.domain import ENTITY_KEYS
from bookpulse.errors import BookpulseError

ENTITIES = tuple(ENTITY_KEYS)
KEYS = ENTITY_KEYS
BATCH_ROWS = 50_000  # docs built and written per batch: bounded memory at any book size
MAX_PAIRED = 4_096  # see `_paired`
Docs = Iterable[list[tuple[int, str]]]  # batches of (id, JSON document)


@dataclass(frozen=True)
class Snapshot:
    """One month's content for the store."""

    as_of: str
    # entity -> id column, context columns and features (one document per row), or the
    # documents already built (`records` run elsewhere, e.g. in Spark tasks)
    rows: dict[str, pd.DataFrame | Docs]
    distributions: dict[str, np.ndarray]  # target prefix -> the month's probabilities

    def docs(self, entity: str) -> Docs:
        """The entity's documents, in batches."""
        rows = self.rows[entity]
        return records(rows, KEYS[entity]) if isinstance(rows, pd.DataFrame) else rows


class OnlineStore(Protocol):
    def put_month(self, snapshot: Snapshot) -> None: ...
    def get(self, entity: str, ids: list[int]) -> dict[int, dict]: ...
    def distribution(self, prefix: str) -> np.ndarray | None: ...
    def as_of(self) -> str | None: ...
    def check(self) -> None: ...


def _text(v) -> str:
    """One value as JSON: NaN and missing as null, numbers as numbers, a date as YYYY-MM-DD,
    anything else as text."""
    if v is None or v is pd.NA or v is pd.NaT:
        return "null"
    if isinstance(v, float | np.floating):
        v = float(v)
        return repr(v) if math.isfinite(v) else "null" if math.isnan(v) else json.dumps(v)
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, pd.Timestamp):
        return json.dumps(v.strftime("%Y-%m-%d"))
    return json.dumps(v if isinstance(v, str) else str(v))


def _float_texts(v: np.ndarray) -> pa.Array:
    """float64 values as JSON numbers that read back bit for bit: Arrow's shortest text that
    round-trips, with ".0" after whole numbers (Arrow writes 2.0 as "2", -0.0 as "-0"), NaN
    as null and infinities as Python's json writes them."""
    texts = pc.cast(pa.array(v, pa.float64()), pa.string())
    with np.errstate(invalid="ignore"):
        whole = v == np.floor(v)
    finite = np.isfinite(v)
    whole &= finite
    if whole.any():
        w = pc.filter(texts, pa.array(whole))
        w = pc.if_else(pc.match_substring(w, "e"), w, pc.binary_join_element_wise(w, ".0", ""))
        texts = pc.replace_with_mask(texts, pa.array(whole), w)
    if not finite.all():
        nan = np.isnan(v)
        texts = pc.if_else(pa.array(nan), "null", texts)
        inf = ~finite & ~nan
        if inf.any():
            texts = pc.replace_with_mask(
                texts, pa.array(inf), pa.array([_text(x) for x in v[inf]], pa.string())
            )
    return texts


class _Coded(NamedTuple):
    """A column as codes into the JSON texts of its distinct values, each text preceded by
    the column's `,"name":` (and "null" last)."""

    codes: np.ndarray
    texts: pa.Array


class _Floats(NamedTuple):
    """A float column of mostly distinct values: formatted batch by batch."""

    values: np.ndarray  # float64 (a float32 widened exactly)
    head: str  # `,"name":`


def _distinct(v: np.ndarray) -> bool:
    """Whether most of a column's values differ (judged on its first rows): then formatting
    them all beats finding the distinct ones first."""
    head = v[:10_000]
    return len(pd.unique(head)) > len(head) // 2


def _column(s: pd.Series, head: str) -> _Coded | _Floats:
    """A column made ready for `records` (`head` is its `,"name":`)."""
    dtype = s.dtype
    if pdt.is_float_dtype(dtype):
        v = s.to_numpy(np.float64, na_value=np.nan)
        bits = v.view(np.int64)  # -0.0 is not 0.0; a NaN is NaN
        if _distinct(bits):
            return _Floats(v, head)
        codes, uniq = pd.factorize(bits)
        texts = _float_texts(uniq.view(np.float64))
    elif isinstance(dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy()
        texts = pa.array([_text(x) for x in s.cat.categories], pa.string())
    elif pdt.is_integer_dtype(dtype) and not pdt.is_bool_dtype(dtype):
        codes, uniq = pd.factorize(s)
        texts = pc.cast(pa.array(np.asarray(uniq)), pa.string())
    elif pdt.is_object_dtype(dtype) and pdt.infer_dtype(s, skipna=True) != "string":
        codes = np.arange(len(s))  # mixed Python objects: one by one (1 and True hash alike)
        texts = pa.array([_text(x) for x in s.to_numpy(object)], pa.string())
    else:  # text, booleans, dates
        codes, uniq = pd.factorize(s)
        texts = pa.array([_text(x) for x in uniq], pa.string())
    texts = pa.concat_arrays([texts, pa.array(["null"])])
    texts = pc.binary_replace_slice(texts, 0, 0, head)
    codes = np.asarray(codes, np.intp)
    return _Coded(np.where(codes < 0, len(texts) - 1, codes), texts)


def _paired(ready: list[_Coded | _Floats]) -> list[_Coded | _Floats]:
    """Neighbouring coded columns made one (a text for every pair of their texts) while
    that is at most MAX_PAIRED texts: fewer, longer pieces to join per document."""
    out: list[_Coded | _Floats] = []
    for r in ready:
        last = out[-1] if out else None
        if isinstance(r, _Coded) and isinstance(last, _Coded):
            na, nb = len(last.texts), len(r.texts)
            if na * nb <= MAX_PAIRED:
                every = np.arange(na * nb)
                texts = pc.binary_join_element_wise(
                    last.texts.take(every // nb), r.texts.take(every % nb), ""
                )
                out[-1] = _Coded(last.codes * nb + r.codes, texts)
                continue
        out.append(r)
    return out


def records(
    frame: pd.DataFrame, key: str, rows: int = BATCH_ROWS
) -> Iterator[list[tuple[int, str]]]:
    """(id, JSON document) for each row of `frame`, in batches of `rows`: numbers as JSON
    numbers that read back bit for bit (float32 as the float64 it widens to), NaN and missing
    as null, dates as "YYYY-MM-DD", categories and text as text.

    Built column by column in Arrow (each distinct value formatted once), not row by row:
    a month of a million customers takes seconds, not minutes."""
    cols = [c for c in frame.columns if c != key]
    heads = [("{" if i == 0 else ",") + json.dumps(c) + ":" for i, c in enumerate(cols)]
    ready = _paired([_column(frame[c], h) for c, h in zip(cols, heads, strict=True)])
    ids = frame[key].to_numpy()
    for start in range(0, len(frame), rows):
        stop = min(start + rows, len(frame))
        parts = [
            pc.binary_replace_slice(_float_texts(r.values[start:stop]), 0, 0, r.head)
            if isinstance(r, _Floats)
            else r.texts.take(pa.array(r.codes[start:stop]))
            for r in ready
        ]
        n = stop - start
        docs = pc.binary_join_element_wise(*parts, "}", "").to_pylist() if parts else ["{}"] * n
        yield list(zip(ids[start:stop].tolist(), docs, strict=True))


class SqliteStore:
    """A single SQLite file: tables customer(id, doc), card(id, doc), dist(prefix, blob), meta."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._opened: float | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if not self.path.is_file():
            return None
        mtime = self.path.stat().st_mtime_ns
        if self._conn is None or self._opened != mtime:  # a new month was swapped in
            if self._conn is not None:
                self._conn.close()
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
            )
            self._opened = mtime
        return self._conn

    def put_month(self, snapshot: Snapshot) -> None:
        """Write the month into a private file, then rename it over the live one (readers see
        the old month or the new one). Runs take turns, and each removes the half-written
        files of killed runs first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with io.locked(self.path):
            for debris in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                debris.unlink(missing_ok=True)
            self._write(snapshot)

    def _write(self, snapshot: Snapshot) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            conn = sqlite3.connect(tmp)
            # a private file until it is complete: no journal, one fsync at the end; pages
            # that hold several documents of ~1.5 KB each (written in half the time)
            conn.execute("PRAGMA page_size = 16384")
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            with conn:
                conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                conn.execute("INSERT INTO meta VALUES ('as_of', ?)", (snapshot.as_of,))
                conn.execute("CREATE TABLE dist (prefix TEXT PRIMARY KEY, probs BLOB)")
                for prefix, probs in snapshot.distributions.items():
                    blob = np.sort(np.asarray(probs, dtype=np.float64)).tobytes()
                    conn.execute("INSERT INTO dist VALUES (?, ?)", (prefix, blob))
                for entity in snapshot.rows:
                    conn.execute(f"CREATE TABLE {entity} (id INTEGER PRIMARY KEY, doc TEXT)")
                    for batch in snapshot.docs(entity):
                        conn.executemany(f"INSERT INTO {entity} VALUES (?, ?)", batch)
            conn.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, entity: str, ids: list[int]) -> dict[int, dict]:
        conn = self._connection()
        if conn is None or entity not in ENTITIES or not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT id, doc FROM {entity} WHERE id IN ({marks})", list(ids))
        return {int(i): json.loads(doc) for i, doc in rows}

    def distribution(self, prefix: str) -> np.ndarray | None:
        conn = self._connection()
        if conn is None:
            return None
        row = conn.execute("SELECT probs FROM dist WHERE prefix = ?", (prefix,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float64)

    def check(self) -> None:
        """Refuse, before any work, a store file that cannot be written."""
        check_writable(self.path.parent, "the online store's folder")
        check_writable(self.path, "the online store", folder=False)

    def as_of(self) -> str | None:
        conn = self._connection()
        if conn is None:
            return None
        row = conn.execute("SELECT value FROM meta WHERE key = 'as_of'").fetchone()
        return None if row is None else row[0]


class RedisStore:
    """Keys `<ns>:<version>:<entity>:<id>` (JSON), `<ns>:<version>:dist:<prefix>` (float64
    bytes), and `<ns>:current` naming the live version. Publishing writes a new version, then
    switches `current`, then removes the old version's keys."""

    def __init__(self, url: str, namespace: str = "bookpulse") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.ns = namespace

    def _current(self) -> str | None:
        v = self.client.get(f"{self.ns}:current")
        return None if v is None else v.decode()

    def put_month(self, snapshot: Snapshot) -> None:
        version = f"{snapshot.as_of}-{uuid.uuid4().hex[:8]}"
        prefix = f"{self.ns}:{version}"
        for entity in snapshot.rows:
            for batch in snapshot.docs(entity):
                for s in range(0, len(batch), 10_000):
                    part = batch[s : s + 10_000]
                    self.client.mset({f"{prefix}:{entity}:{i}": doc for i, doc in part})
        pipe = self.client.pipeline(transaction=False)
        for p, probs in snapshot.distributions.items():
            pipe.set(f"{prefix}:dist:{p}", np.sort(np.asarray(probs, np.float64)).tobytes())
        pipe.set(f"{prefix}:as_of", snapshot.as_of)
        pipe.execute()
        old = self._current()
        self.client.set(f"{self.ns}:current", version)
        if old and old != version:
            for key in self.client.scan_iter(f"{self.ns}:{old}:*", count=10_000):
                self.client.delete(key)

    def get(self, entity: str, ids: list[int]) -> dict[int, dict]:
        version = self._current()
        if version is None or entity not in ENTITIES or not ids:
            return {}
        docs = self.client.mget([f"{self.ns}:{version}:{entity}:{i}" for i in ids])
        return {int(i): json.loads(d) for i, d in zip(ids, docs, strict=True) if d is not None}

    def distribution(self, prefix: str) -> np.ndarray | None:
        version = self._current()
        blob = None if version is None else self.client.get(f"{self.ns}:{version}:dist:{prefix}")
        return None if blob is None else np.frombuffer(blob, dtype=np.float64)

    def check(self) -> None:
        """Refuse, before any work, a Redis that does not answer."""
        import redis

        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise BookpulseError(
                f"the online store (Redis, BOOKPULSE_ONLINE_STORE) does not answer: {exc}"
            ) from None

    def as_of(self) -> str | None:
        version = self._current()
        v = None if version is None else self.client.get(f"{self.ns}:{version}:as_of")
        return None if v is None else v.decode()


def open_store(home: Path, url: str | None = None) -> OnlineStore:
    """Redis when a URL (redis://...) is given, else the SQLite file under `home`."""
    if url:
        return RedisStore(url)
    return SqliteStore(Path(home) / "online" / "features.sqlite")
