"""The online store: each customer's and each eligible card's latest feature vector, keyed by
id, and the month's score distributions (for percentiles), published by the batch run.

Two implementations of one small interface: `SqliteStore` (the embedded default, a file under
$BOOKPULSE_HOME, no server) and `RedisStore` (for many API replicas). A month is written by a
`month_writer`, batch by batch as the engine makes them, in private, and made live whole by
its `commit`: the SQLite file is written beside the live one and renamed over it; Redis keys
are written under the month's own version and the `current` pointer is switched in one
command. Readers see the old month or the new one, never a mix. A writer that stops without
committing (an error, a kill -9) leaves the live month as it was, and its debris (a private
file, a version's keys) to the next writer, which removes it.

Documents are binary and compact (about 230 bytes a customer, where JSON took 1.6 KB): one
fixed-size packed record per row (numpy: each float and int at its own width, a category as
its code, a date as days since 1970), then the row's text columns as UTF-8, whose lengths are
in the record. What the bytes mean is the month's *layout* (`layout_of`: column names, kinds,
category levels), stored once per month and entity. A layout depends only on the frame's
column names and dtypes (and a categorical's declared levels), never on its values, so the
documents of a month built partition by partition (a streaming engine, Spark tasks) all
decode with its one layout, and a partition whose columns differ is refused.

`encode` builds documents a batch at a time in numpy and Arrow (a million customers in a few
seconds), and every value reads back as the JSON documents of earlier months did: float32 as
the float64 it widens to, float64 and ints bit for bit, NaN and missing as None, dates as
"YYYY-MM-DD", categories and text as text, so the API scores a stored customer exactly as the
batch did. A month stored as JSON by an earlier version still reads.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import functools
import json
import math
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

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
FORMAT = 1  # of the documents a layout describes
Layout = dict[str, Any]  # JSON-serialisable: see `layout_of`
Docs = Iterable[list[tuple[int, bytes]]]  # batches of (id, document)
NO_TEXT = 0xFFFF_FFFF  # the length recorded for a missing text
NO_DAY = -(2**31)  # the day recorded for a missing date
NO_BOOL = 255  # the byte recorded for a missing boolean


class Encoded(NamedTuple):
    """An entity's documents built elsewhere (`encode` run in Spark tasks), with their layout."""

    layout: Layout
    batches: Docs


@dataclass(frozen=True)
class Snapshot:
    """One month's content for the store, whole (`put_month`)."""

    as_of: str
    # entity -> id column, context columns and features (one document per row), or the
    # documents already built
    rows: dict[str, pd.DataFrame | Encoded]
    distributions: dict[str, np.ndarray]  # target prefix -> the month's probabilities


class MonthWriter(Protocol):
    def add(self, entity: str, rows: pd.DataFrame) -> None: ...
    def add_docs(self, entity: str, layout: Layout, batches: Docs) -> None: ...
    def commit(
        self, distributions: dict[str, np.ndarray], models: dict[str, str] | None = None
    ) -> None: ...


class OnlineStore(Protocol):
    def month_writer(self, as_of: str) -> contextlib.AbstractContextManager[MonthWriter]: ...
    def put_month(self, snapshot: Snapshot) -> None: ...
    def get(self, entity: str, ids: list[int]) -> dict[int, dict]: ...
    def distribution(self, prefix: str) -> np.ndarray | None: ...
    def as_of(self) -> str | None: ...
    def check(self) -> None: ...
    def live_id(self) -> str | None: ...
    def pinned(self) -> MonthView | None: ...


def _storable(ids: list[int]) -> list[int]:
    """The ids a store can hold (signed 64-bit, as the books' ids are): any other is simply
    not found (SQLite would overflow on it)."""
    return [i for i in ids if -(2**63) <= i < 2**63]


def _text(v) -> str:
    """One value as JSON: NaN and missing as null, numbers as numbers, a date as YYYY-MM-DD,
    anything else as text (the JSON documents' rule, kept for category levels and columns of
    Python objects)."""
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


# --- layout ----------------------------------------------------------------------------------


def _column_layout(name: str, dtype) -> dict:
    """How a column of this dtype is stored, from the dtype alone. Kinds: float and int (at
    the dtype's own width; a nullable int with a presence byte), bool (a byte), category (the
    code, at the width the number of levels needs), date (int32 days), text (UTF-8) and json
    (each value's JSON text: columns of Python objects and any other dtype)."""
    if isinstance(dtype, pd.CategoricalDtype):
        n = len(dtype.categories)
        code = "|i1" if n < 2**7 else "<i2" if n < 2**15 else "<i4"
        levels = [json.loads(_text(c)) for c in dtype.categories]
        return {"name": name, "kind": "category", "dtype": code, "levels": levels}
    if isinstance(dtype, pd.StringDtype):
        return {"name": name, "kind": "text"}
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        return {"name": name, "kind": "date"}
    nullable = not isinstance(dtype, np.dtype)  # pandas' masked dtypes, Arrow's
    if pdt.is_bool_dtype(dtype):
        return {"name": name, "kind": "bool", "nullable": nullable}
    if pdt.is_integer_dtype(dtype) or pdt.is_float_dtype(dtype):
        width = np.dtype(dtype.numpy_dtype if nullable else dtype).newbyteorder("<").str
        if pdt.is_float_dtype(dtype):  # NaN stands for missing
            return {"name": name, "kind": "float", "dtype": width}
        return {"name": name, "kind": "int", "dtype": width, "nullable": nullable}
    return {"name": name, "kind": "json"}


def layout_of(frame: pd.DataFrame, key: str) -> Layout:
    """What the documents of `frame` (one per row, keyed by its `key` column) hold: every other
    column, in order, with its kind. JSON-serialisable; it depends only on the columns' names
    and dtypes, so every partition of a month has the same one."""
    if key not in frame.columns:
        raise BookpulseError(f"the rows for the online store have no {key} column")
    columns = [_column_layout(str(c), t) for c, t in frame.dtypes.items() if c != key]
    return {"format": FORMAT, "key": key, "columns": columns}


def _canonical(layout: Layout) -> str:
    return json.dumps(layout, sort_keys=True)


def _describe(col: dict) -> str:
    if col["kind"] == "category":
        return f"category of {len(col['levels'])} levels"
    return " ".join(str(col[k]) for k in ("kind", "dtype") if k in col) + (
        " (nullable)" if col.get("nullable") else ""
    )


def _differs(entity: str, first: Layout, now: Layout) -> str:
    """Why two layouts of one entity's rows differ, for the engineer who must fix it."""
    a = {c["name"]: c for c in first["columns"]}
    b = {c["name"]: c for c in now["columns"]}
    notes = []
    if first.get("key") != now.get("key"):
        notes.append(f"keyed by {now.get('key')} instead of {first.get('key')}")
    if gone := [n for n in a if n not in b]:
        notes.append(f"without {', '.join(gone)}")
    if new := [n for n in b if n not in a]:
        notes.append(f"with {', '.join(new)} too")
    for n in a:
        if n in b and _canonical(a[n]) != _canonical(b[n]):
            notes.append(f"{n} is {_describe(b[n])}, not {_describe(a[n])}")
    if not notes and list(a) != list(b):
        notes.append("the same columns in another order")
    return (
        f"the online store got {entity} rows of another shape than before in the same month "
        f"({'; '.join(notes) or 'another format'}): every batch of a month must have the same "
        "columns and dtypes (categories with the same declared levels)"
    )


class _Codec(NamedTuple):
    """A layout made ready to use: the record's numpy dtype and what to do with each column."""

    columns: list[dict]
    names: list[str]
    record: np.dtype  # packed: field c<i> for column i (n<i>: a nullable int's presence)
    tails: int  # how many columns hold text after the record
    levels: dict[int, np.ndarray]  # category column -> its levels, then None (code -1)


_KINDS = ("float", "int", "bool", "category", "date", "text", "json")
_FIELD = {"bool": "|u1", "date": "<i4", "text": "<u4", "json": "<u4"}


@functools.lru_cache(maxsize=32)
def _compiled(canonical: str) -> _Codec:
    layout = json.loads(canonical)
    if not isinstance(layout, dict) or layout.get("format") != FORMAT:
        raise BookpulseError(
            "an online-store layout of another format than this version of bookpulse reads"
        )
    try:
        fields: list[tuple[str, str]] = []
        levels: dict[int, np.ndarray] = {}
        for i, col in enumerate(layout["columns"]):
            if col["kind"] not in _KINDS:
                raise ValueError(f"kind {col['kind']!r}")
            fields.append((f"c{i}", col["dtype"] if "dtype" in col else _FIELD[col["kind"]]))
            if col["kind"] == "int" and col["nullable"]:
                fields.append((f"n{i}", "|u1"))
            if col["kind"] == "category":
                lv = np.empty(len(col["levels"]) + 1, dtype=object)
                lv[:-1] = col["levels"]
                levels[i] = lv
        columns = layout["columns"]
        return _Codec(
            columns,
            [c["name"] for c in columns],
            np.dtype(fields),
            sum(c["kind"] in ("text", "json") for c in columns),
            levels,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BookpulseError(f"not an online-store layout ({exc!r})") from None


def _codec(layout: Layout) -> _Codec:
    return _compiled(_canonical(layout))


# --- documents -------------------------------------------------------------------------------


class _Ready(NamedTuple):
    """A column made ready to pack: its record fields' values (whole column) and its text
    (UTF-8 or JSON, as large_binary; missing ones empty), if it has any."""

    fields: dict[str, np.ndarray]
    tail: pa.Array | None


def _json_texts(s: pd.Series) -> pa.Array:
    """Each value's JSON text, as the JSON documents wrote it: distinct values formatted once,
    except in columns of mixed Python objects (1 and True hash alike)."""
    if pdt.is_object_dtype(s.dtype) and pdt.infer_dtype(s, skipna=True) != "string":
        return pa.array([_text(x) for x in s.to_numpy(object)], pa.string())
    codes, uniq = pd.factorize(s)
    texts = pa.array([*(_text(x) for x in uniq), "null"], pa.string())
    return texts.take(pa.array(np.where(codes < 0, len(texts) - 1, codes)))


def _ready(i: int, col: dict, s: pd.Series) -> _Ready:
    kind, name = col["kind"], f"c{i}"
    if kind == "float":
        return _Ready({name: s.to_numpy(np.dtype(col["dtype"]), na_value=np.nan)}, None)
    if kind == "int" and not col["nullable"]:
        return _Ready({name: s.to_numpy(np.dtype(col["dtype"]))}, None)
    if kind == "int":
        present = ~s.isna().to_numpy()
        values = s.to_numpy(np.dtype(col["dtype"]), na_value=0)
        return _Ready({name: values, f"n{i}": present.astype(np.uint8)}, None)
    if kind == "bool":
        if not col["nullable"]:
            return _Ready({name: s.to_numpy(np.uint8)}, None)
        values = s.to_numpy(np.uint8, na_value=0)
        return _Ready({name: np.where(s.isna().to_numpy(), NO_BOOL, values)}, None)
    if kind == "category":
        return _Ready({name: s.cat.codes.to_numpy()}, None)
    if kind == "date":
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_localize(None)  # the local date, as the JSON documents had it
        stamps = s.to_numpy()
        days = stamps.astype("datetime64[D]").view(np.int64)  # floored, also before 1970
        missing = np.isnat(stamps)
        if (np.abs(days[~missing]) >= 2**31).any():
            raise BookpulseError(f"{col['name']}: a date beyond what the online store holds")
        return _Ready({name: np.where(missing, NO_DAY, days).astype(np.int32)}, None)
    texts = (
        pa.array(s, pa.large_string(), from_pandas=True) if kind == "text" else _json_texts(s)
    ).cast(pa.large_binary())
    lengths = pc.fill_null(pc.binary_length(texts), NO_TEXT).to_numpy()
    return _Ready({name: lengths.astype(np.uint32)}, pc.fill_null(texts, b""))


_JOIN = pa.scalar(b"", pa.large_binary())


def _pack(codec: _Codec, ready: list[_Ready], start: int, stop: int) -> list[bytes]:
    """The documents of rows [start, stop): each row's record, then its texts."""
    n = stop - start
    if not codec.columns:
        return [b""] * n
    record = np.zeros(n, codec.record)
    for r in ready:
        for name, values in r.fields.items():
            record[name] = values[start:stop]
    offsets = np.arange(n + 1, dtype=np.int64) * codec.record.itemsize
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(record.view(np.uint8))]
    docs = pa.Array.from_buffers(pa.large_binary(), n, buffers)
    tails = [r.tail.slice(start, n) for r in ready if r.tail is not None]
    if tails:
        docs = pc.binary_join_element_wise(docs, *tails, _JOIN)
    return docs.to_pylist()


def encode(
    frame: pd.DataFrame, key: str, layout: Layout | None = None, rows: int = BATCH_ROWS
) -> Iterator[list[tuple[int, bytes]]]:
    """(id, document) for each row of `frame`, in batches of `rows`, by the frame's layout
    (`layout_of`; given `layout`, the frame must have that one). Column by column in numpy and
    Arrow, not row by row: a million customers take seconds."""
    own = layout_of(frame, key)
    if layout is not None and _canonical(layout) != _canonical(own):
        raise BookpulseError(_differs(str(key), layout, own))
    codec = _codec(own)
    at = [j for j, c in enumerate(frame.columns) if c != key]
    ready = [
        _ready(i, col, frame.iloc[:, j])
        for i, (col, j) in enumerate(zip(codec.columns, at, strict=True))
    ]
    ids = frame[key].to_numpy()
    for start in range(0, len(frame), rows):
        stop = min(start + rows, len(frame))
        docs = _pack(codec, ready, start, stop)
        yield list(zip(ids[start:stop].tolist(), docs, strict=True))


def _corrupt() -> BookpulseError:
    return BookpulseError(
        "an online-store document does not match its month's layout: the store is damaged; "
        "publish the month again (bookpulse score)"
    )


def _day(days: int) -> str | None:
    if days == NO_DAY:
        return None
    return pd.Timestamp(np.datetime64(days, "D")).strftime("%Y-%m-%d")


_BOOLS = np.array([False, True, None], dtype=object)


def decode(layout: Layout, docs: list[bytes]) -> list[dict]:
    """The rows of `docs` (documents of one layout) as the JSON documents read: a dict per
    row, the columns in order, each value a Python float, int, bool, str or None."""
    codec = _codec(layout)
    return _unpack(codec, docs)


def _unpack(codec: _Codec, docs: list[bytes]) -> list[dict]:
    if len(docs) <= FEW_DOCS:  # the API's few: one record at a time, no per-column arrays
        return [_unpack_one(codec, d) for d in docs]
    return _unpack_many(codec, docs)


FEW_DOCS = 4


def _unpack_one(codec: _Codec, doc: bytes) -> dict:
    """`_unpack_many` of one document, field by field (the same values, faster for one)."""
    size = codec.record.itemsize
    if len(doc) < size:
        raise _corrupt()
    fields = np.frombuffer(doc, codec.record, count=1)[0].item()  # one tuple of scalars
    names = codec.record.names
    got = dict(zip(names, fields, strict=True))
    at = size
    out = {}
    for i, col in enumerate(codec.columns):
        kind, v = col["kind"], got[f"c{i}"]
        if kind == "float":
            value = None if v != v else float(v)
        elif kind == "int":
            value = None if col["nullable"] and got[f"n{i}"] == 0 else int(v)
        elif kind == "bool":
            value = _BOOLS[min(v, 2)] if col["nullable"] else bool(v)
        elif kind == "category":
            if v < -1 or v >= len(codec.levels[i]) - 1:
                raise _corrupt()
            value = codec.levels[i][v]
        elif kind == "date":
            value = _day(int(v))
        else:  # text or json, after the record
            length = 0 if v == NO_TEXT else int(v)
            piece = doc[at : at + length]
            at += length
            try:
                if kind == "json":
                    value = json.loads(piece)
                else:
                    value = None if v == NO_TEXT else piece.decode()
            except ValueError:  # not JSON, not UTF-8
                raise _corrupt() from None
        out[col["name"]] = value
    if at != len(doc):
        raise _corrupt()
    return out


def _unpack_many(codec: _Codec, docs: list[bytes]) -> list[dict]:
    n, size = len(docs), codec.record.itemsize
    if not codec.columns:
        return [{} for _ in docs]
    blob = b"".join(docs)
    texts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # column -> at, length, gap
    if not codec.tails:
        if len(blob) != n * size:
            raise _corrupt()
        record = np.frombuffer(blob, codec.record)
    else:
        lengths = np.fromiter(map(len, docs), np.int64, n)
        if (lengths < size).any():
            raise _corrupt()
        starts = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        raw = np.frombuffer(blob, np.uint8)
        record = raw[starts[:, None] + np.arange(size)].view(codec.record).reshape(n)
        at = starts + size
        for i, col in enumerate(codec.columns):
            if col["kind"] in ("text", "json"):
                length = record[f"c{i}"].astype(np.int64)
                gap = length == NO_TEXT
                length[gap] = 0
                texts[i] = at, length, gap
                at = at + length
        if not np.array_equal(at, starts + lengths):
            raise _corrupt()
    values: list[list] = []
    for i, col in enumerate(codec.columns):
        kind, v = col["kind"], record[f"c{i}"]
        if kind == "float":
            v = v.astype(np.float64)
            out = v.astype(object)
            out[np.isnan(v)] = None
        elif kind == "int":
            out = v.astype(object)
            if col["nullable"]:
                out[record[f"n{i}"] == 0] = None
        elif kind == "bool":
            out = _BOOLS[np.minimum(v, 2)] if col["nullable"] else v.astype(bool)
        elif kind == "category":
            if ((v < -1) | (v >= len(codec.levels[i]) - 1)).any():
                raise _corrupt()
            out = codec.levels[i][v]
        elif kind == "date":
            uniq, inverse = np.unique(v, return_inverse=True)
            out = np.array([_day(int(d)) for d in uniq], dtype=object)[inverse]
        else:  # text or json, after the record
            at, length, gap = (x.tolist() for x in texts[i])
            pieces = [blob[a : a + m] for a, m in zip(at, length, strict=True)]
            try:
                if kind == "json":
                    out = [json.loads(p) for p in pieces]
                else:
                    out = [None if g else p.decode() for p, g in zip(pieces, gap, strict=True)]
            except ValueError:  # not JSON, not UTF-8
                raise _corrupt() from None
        values.append(out.tolist() if isinstance(out, np.ndarray) else out)
    names = codec.names
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


# --- writing a month -------------------------------------------------------------------------


def _key(entity: str) -> str:
    if entity not in ENTITIES:
        raise BookpulseError(f"the online store holds {' and '.join(ENTITIES)}, not {entity!r}")
    return KEYS[entity]


class _Month(abc.ABC):
    """What both stores' month writers share: each entity's one layout, checked at every
    batch. A backend adds `_put` (a batch, written privately), `_publish` (make the month
    live) and `close` (called when the `with` block ends: a month not committed is removed)."""

    def __init__(self, as_of: str) -> None:
        self.as_of = as_of
        self.layouts: dict[str, Layout] = {}
        self.committed = False

    def add(self, entity: str, rows: pd.DataFrame) -> None:
        """Encode and write `rows` (the id column, context columns and features)."""
        key = _key(entity)
        layout = layout_of(rows, key)
        self._accept(entity, layout)
        for batch in encode(rows, key, layout):
            self._put(entity, batch)

    def add_docs(self, entity: str, layout: Layout, batches: Docs) -> None:
        """Write documents encoded elsewhere by `layout` (batches of (id, document))."""
        self._accept(entity, layout)
        for batch in batches:
            if batch:
                self._put(entity, batch)

    def commit(
        self, distributions: dict[str, np.ndarray], models: dict[str, str] | None = None
    ) -> None:
        """Store the month's sorted score distributions and the model versions that scored
        it (registered name -> version), and make the month live, whole."""
        self._open()
        dists = {p: np.sort(np.asarray(v, dtype=np.float64)) for p, v in distributions.items()}
        self.models = dict(models or {})
        self._publish(dists)
        self.committed = True

    def _open(self) -> None:
        if self.committed:
            raise BookpulseError("this month of the online store is committed already")

    def _accept(self, entity: str, layout: Layout) -> None:
        self._open()
        key = _key(entity)
        _codec(layout)  # a layout this version reads
        if layout.get("key") != key:
            raise BookpulseError(f"{entity} documents are keyed by {key}, not {layout.get('key')}")
        first = self.layouts.get(entity)
        if first is None:
            self.layouts[entity] = json.loads(json.dumps(layout))  # the caller's may change
        elif _canonical(first) != _canonical(layout):
            raise BookpulseError(_differs(entity, first, layout))

    @abc.abstractmethod
    def _put(self, entity: str, batch: list[tuple[int, bytes]]) -> None:
        """Write a batch of documents privately."""

    @abc.abstractmethod
    def _publish(self, dists: dict[str, np.ndarray]) -> None:
        """Make the month live, whole."""


def _put_month(store: OnlineStore, snapshot: Snapshot) -> None:
    with store.month_writer(snapshot.as_of) as w:
        for entity, rows in snapshot.rows.items():
            if isinstance(rows, pd.DataFrame):
                w.add(entity, rows)
            else:
                w.add_docs(entity, *rows)
        w.commit(snapshot.distributions)


# --- SQLite ----------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_debris(path: Path) -> None:
    """Remove the private files of writers that died (called under the folder's lock): a
    live writer holds a lock on its own, so its file is left alone."""
    for debris in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            fd = os.open(debris, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        else:
            debris.unlink(missing_ok=True)
        finally:
            os.close(fd)


class _SqliteMonth(_Month):
    """A month written into a private file beside the live one (locked while it is written,
    so no other run takes it for debris), renamed over it by `commit`."""

    def __init__(self, path: Path, as_of: str) -> None:
        super().__init__(as_of)
        self.path = path
        self.conn: sqlite3.Connection | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.locked(path):
            _remove_debris(path)
            self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            self.conn = sqlite3.connect(self.tmp)
            # a private file until it is complete: no journal, one fsync at the end
            self.conn.execute("PRAGMA journal_mode = OFF")
            self.conn.execute("PRAGMA synchronous = OFF")
            self.conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            self.conn.execute("CREATE TABLE dist (prefix TEXT PRIMARY KEY, probs BLOB)")
            for entity in ENTITIES:
                self.conn.execute(f"CREATE TABLE {entity} (id INTEGER PRIMARY KEY, doc BLOB)")
        except BaseException:
            self.close()
            raise

    def _put(self, entity: str, batch: list[tuple[int, bytes]]) -> None:
        assert self.conn is not None
        try:
            self.conn.executemany(f"INSERT INTO {entity} VALUES (?, ?)", batch)
        except sqlite3.IntegrityError:
            raise BookpulseError(f"the online store got a {entity} twice in one month") from None

    def _publish(self, dists: dict[str, np.ndarray]) -> None:
        assert self.conn is not None
        meta = [("as_of", self.as_of), ("models", json.dumps(self.models))]
        meta += [("published", uuid.uuid4().hex)]
        meta += [(f"layout:{e}", json.dumps(lay)) for e, lay in self.layouts.items()]
        self.conn.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        rows = [(p, v.tobytes()) for p, v in dists.items()]
        self.conn.executemany("INSERT INTO dist VALUES (?, ?)", rows)
        self.conn.commit()
        self.conn.close()
        self.conn = None
        os.fsync(self.fd)
        with io.locked(self.path):
            os.replace(self.tmp, self.path)
        self.committed = True
        _fsync(self.path.parent)

    def close(self) -> None:
        """Release the private file: removed unless it was committed."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if not self.committed:
            self.tmp.unlink(missing_ok=True)
        os.close(self.fd)  # after SQLite's own handle: closing it would drop SQLite's locks


@dataclass
class MonthView:
    """One published month, read as it was published whatever is published after it: the
    API scores a month with the models that scored it (`models`) and ranks in its own
    distributions. `get` raises `MonthGone` once the month can no longer be read."""

    month: str
    publish_id: str
    models: dict[str, str]
    _get: Callable[[str, list[int]], dict[int, dict]]
    _dist: Callable[[str], np.ndarray | None]
    _dists: dict[str, np.ndarray | None] = field(default_factory=dict)

    def get(self, entity: str, ids: list[int]) -> dict[int, dict]:
        return self._get(entity, _storable(ids)) if entity in ENTITIES and ids else {}

    def distribution(self, prefix: str) -> np.ndarray | None:
        if prefix not in self._dists:
            self._dists[prefix] = self._dist(prefix)
        return self._dists[prefix]

    def as_of(self) -> str:
        return self.month


class MonthGone(BookpulseError):
    """The month a view reads has been replaced and removed (Redis drops the old version)."""


class SqliteStore:
    """A single SQLite file: tables customer(id, doc), card(id, doc), dist(prefix, probs) and
    meta (as_of, and each entity's layout as `layout:<entity>`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._opened: int | None = None
        self._codecs: dict[str, _Codec | None] = {}

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
            self._codecs = {}
        return self._conn

    @contextlib.contextmanager
    def month_writer(self, as_of: str) -> Iterator[_SqliteMonth]:
        """A month written privately, live once committed (see `_Month`); runs that write at
        the same time each have their own file, and the last to commit is live."""
        w = _SqliteMonth(self.path, as_of)
        try:
            yield w
        finally:
            w.close()

    def put_month(self, snapshot: Snapshot) -> None:
        """Write a whole month and make it live (`month_writer`, added to once per entity)."""
        _put_month(self, snapshot)

    def _codec(self, conn: sqlite3.Connection, entity: str) -> _Codec | None:
        """The entity's layout in the open file (None: JSON documents of an older version)."""
        if entity not in self._codecs:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"layout:{entity}",))
            found = row.fetchone()
            self._codecs[entity] = None if found is None else _codec(json.loads(found[0]))
        return self._codecs[entity]

    def get(self, entity: str, ids: list[int]) -> dict[int, dict]:
        conn = self._connection()
        ids = _storable(ids)
        if conn is None or entity not in ENTITIES or not ids:
            return {}
        marks = ",".join("?" * len(ids))
        query = f"SELECT id, doc FROM {entity} WHERE id IN ({marks})"
        rows = conn.execute(query, list(ids)).fetchall()
        if not rows:
            return {}
        codec = self._codec(conn, entity)
        if codec is None:
            return {int(i): json.loads(doc) for i, doc in rows}
        return dict(
            zip((int(i) for i, _ in rows), _unpack(codec, [d for _, d in rows]), strict=True)
        )

    def distribution(self, prefix: str) -> np.ndarray | None:
        conn = self._connection()
        if conn is None:
            return None
        row = conn.execute("SELECT probs FROM dist WHERE prefix = ?", (prefix,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float64)

    def live_id(self) -> str | None:
        """Which publication is live (cheap: the file's identity; a publish replaces it)."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return f"{st.st_ino}-{st.st_mtime_ns}"

    def pinned(self) -> MonthView | None:
        """The live month, on a connection of its own: an open SQLite file stays readable
        after another is renamed over it, so the view reads its month to the end."""
        if not self.path.is_file():
            return None
        ident = self.live_id()
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        codecs: dict[str, _Codec | None] = {}

        def get(entity: str, ids: list[int]) -> dict[int, dict]:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"SELECT id, doc FROM {entity} WHERE id IN ({marks})", ids
            ).fetchall()
            if not rows:
                return {}
            if entity not in codecs:
                found = meta.get(f"layout:{entity}")
                codecs[entity] = None if found is None else _codec(json.loads(found))
            codec = codecs[entity]
            if codec is None:
                return {int(i): json.loads(doc) for i, doc in rows}
            return dict(
                zip((int(i) for i, _ in rows), _unpack(codec, [d for _, d in rows]), strict=True)
            )

        def dist(prefix: str) -> np.ndarray | None:
            row = conn.execute("SELECT probs FROM dist WHERE prefix = ?", (prefix,)).fetchone()
            return None if row is None else np.frombuffer(row[0], dtype=np.float64)

        return MonthView(
            month=meta.get("as_of", ""),
            publish_id=meta.get("published") or ident or "",
            models=json.loads(meta.get("models") or "{}"),
            _get=get,
            _dist=dist,
        )

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


# --- Redis -----------------------------------------------------------------------------------

LEASE_MS = 60_000  # a writer's lease on its version, renewed every quarter of it while alive
_VERSION = re.compile(r"\d{4}-\d{2}-[0-9a-f]{8}")


class _RedisMonth(_Month):
    """A month written under its own version, made live by switching `current`. While it is
    written, the version is in `<ns>:writers` and holds a lease (`<ns>:lease:<version>`) a
    thread renews; a writer killed stops renewing, and the next writer removes its keys."""

    def __init__(self, store: RedisStore, as_of: str) -> None:
        super().__init__(as_of)
        self.store, self.client, ns = store, store.client, store.ns
        self.version = f"{as_of}-{uuid.uuid4().hex[:8]}"
        self.prefix = f"{ns}:{self.version}"
        self.lease = f"{ns}:lease:{self.version}"
        self.client.set(self.lease, 1, px=LEASE_MS)
        self.client.sadd(f"{ns}:writers", self.version)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._renew, daemon=True, name="store-lease")
        self._beat.start()
        try:
            store._sweep(self.version)
        except BaseException:
            self.close()
            raise

    def _renew(self) -> None:
        import redis

        while not self._stop.wait(LEASE_MS / 4000):
            with contextlib.suppress(redis.RedisError):  # the writer itself will meet it
                self.client.pexpire(self.lease, LEASE_MS)

    def _put(self, entity: str, batch: list[tuple[int, bytes]]) -> None:
        for s in range(0, len(batch), 10_000):
            part = batch[s : s + 10_000]
            self.client.mset({f"{self.prefix}:{entity}:{i}": doc for i, doc in part})

    def _publish(self, dists: dict[str, np.ndarray]) -> None:
        ns = self.store.ns
        pipe = self.client.pipeline(transaction=True)
        for p, probs in dists.items():
            pipe.set(f"{self.prefix}:dist:{p}", probs.tobytes())
        for entity, layout in self.layouts.items():
            pipe.set(f"{self.prefix}:layout:{entity}", json.dumps(layout))
        pipe.set(f"{self.prefix}:as_of", self.as_of)
        pipe.set(f"{self.prefix}:models", json.dumps(self.models))
        pipe.execute()
        old = self.client.getset(f"{ns}:current", self.version)
        self.committed = True
        self._release()
        if old is not None and old.decode() != self.version:
            self.store._drop(old.decode())

    def _release(self) -> None:
        self._stop.set()
        self._beat.join()
        self.client.srem(f"{self.store.ns}:writers", self.version)
        self.client.delete(self.lease)

    def close(self) -> None:
        """Stop; a month not committed is removed (what a failure here leaves, the next
        writer removes)."""
        if self.committed:
            return
        import redis

        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.store._drop(self.version)
            self._release()


class RedisStore:
    """Keys `<ns>:<version>:<entity>:<id>` (a document), `<ns>:<version>:layout:<entity>`,
    `<ns>:<version>:dist:<prefix>` (float64 bytes), `<ns>:<version>:as_of`, and `<ns>:current`
    naming the live version. A month is written under a new version, then `current` is
    switched, then the old version's keys are removed."""

    def __init__(self, url: str, namespace: str = "bookpulse") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.ns = namespace
        self._codecs: dict[tuple[str, str], _Codec | None] = {}

    def _current(self) -> str | None:
        v = self.client.get(f"{self.ns}:current")
        return None if v is None else v.decode()

    @contextlib.contextmanager
    def month_writer(self, as_of: str) -> Iterator[_RedisMonth]:
        """A month written privately, live once committed (see `_Month`)."""
        w = _RedisMonth(self, as_of)
        try:
            yield w
        finally:
            w.close()

    def put_month(self, snapshot: Snapshot) -> None:
        """Write a whole month and make it live (`month_writer`, added to once per entity)."""
        _put_month(self, snapshot)

    def _drop(self, version: str) -> None:
        """Remove a version's keys."""
        self._unlink(self.client.scan_iter(f"{self.ns}:{version}:*", count=10_000))

    def _unlink(self, keys: Iterable[bytes]) -> None:
        batch: list[bytes] = []
        for key in keys:
            batch.append(key)
            if len(batch) == 10_000:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)

    def _sweep(self, own: str) -> None:
        """Remove the keys of versions neither live nor being written (those of writers that
        died, or of a switch whose clean-up was cut short). A version is judged when its
        first key is met, so a writer that starts meanwhile, registered before it writes
        anything, is left alone."""
        ns, writers = self.ns, f"{self.ns}:writers"
        judged: dict[str, bool] = {}

        def stale(key: bytes) -> bool:
            version = key[len(ns) + 1 :].split(b":", 1)[0].decode(errors="replace")
            if not _VERSION.fullmatch(version):
                return False  # current, writers, leases: not a version's
            if version not in judged:
                judged[version] = version != own and not (
                    version == self._current()
                    or (
                        self.client.sismember(writers, version)
                        and self.client.exists(f"{ns}:lease:{version}")
                    )
                )
            return judged[version]

        self._unlink(k for k in self.client.scan_iter(f"{ns}:*", count=10_000) if stale(k))
        dead = [
            v.decode()
            for v in self.client.smembers(writers)
            if v.decode() != own and not self.client.exists(f"{ns}:lease:{v.decode()}")
        ]
        if dead:
            self.client.srem(writers, *dead)

    def _codec(self, version: str, entity: str) -> _Codec | None:
        """The entity's layout in that version (None: JSON documents of an older version)."""
        if (version, entity) not in self._codecs:
            text = self.client.get(f"{self.ns}:{version}:layout:{entity}")
            if len(self._codecs) > 16:
                self._codecs.clear()
            self._codecs[version, entity] = None if text is None else _codec(json.loads(text))
        return self._codecs[version, entity]

    def get(self, entity: str, ids: list[int]) -> dict[int, dict]:
        version = self._current()
        if version is None or entity not in ENTITIES or not ids:
            return {}
        docs = self.client.mget([f"{self.ns}:{version}:{entity}:{i}" for i in ids])
        return self._decoded(version, entity, ids, docs)

    def _decoded(self, version: str, entity: str, ids: list[int], docs: list) -> dict[int, dict]:
        """The documents found (None: not in the month), by id."""
        found = [(int(i), d) for i, d in zip(ids, docs, strict=True) if d is not None]
        if not found:
            return {}
        codec = self._codec(version, entity)
        if codec is None:
            return {i: json.loads(d) for i, d in found}
        return dict(zip((i for i, _ in found), _unpack(codec, [d for _, d in found]), strict=True))

    def distribution(self, prefix: str) -> np.ndarray | None:
        version = self._current()
        blob = None if version is None else self.client.get(f"{self.ns}:{version}:dist:{prefix}")
        return None if blob is None else np.frombuffer(blob, dtype=np.float64)

    def live_id(self) -> str | None:
        return self._current()

    def pinned(self) -> MonthView | None:
        """The live version, read by its own keys; once a later publication has dropped
        them, `get` raises `MonthGone` (the API then takes up the new month)."""
        version = self._current()
        if version is None:
            return None
        prefix = f"{self.ns}:{version}"
        as_of, models = self.client.mget([f"{prefix}:as_of", f"{prefix}:models"])
        if as_of is None:
            return None

        def get(entity: str, ids: list[int]) -> dict[int, dict]:
            keys = [f"{prefix}:as_of"] + [f"{prefix}:{entity}:{i}" for i in ids]
            alive, *docs = self.client.mget(keys)
            if alive is None:
                raise MonthGone(f"the online store's month {version} has been replaced")
            return self._decoded(version, entity, ids, docs)

        def dist(p: str) -> np.ndarray | None:
            blob = self.client.get(f"{prefix}:dist:{p}")
            return None if blob is None else np.frombuffer(blob, dtype=np.float64)

        return MonthView(
            month=as_of.decode(),
            publish_id=version,
            models=json.loads(models.decode()) if models else {},
            _get=get,
            _dist=dist,
        )

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
