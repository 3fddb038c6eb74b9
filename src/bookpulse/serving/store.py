"""The online store: each customer's and each eligible card's latest feature vector, keyed by
id, and the month's score distributions (for percentiles), published by the batch run.

Two implementations of one small interface: `SqliteStore` (the embedded default, a file under
$BOOKPULSE_HOME, no server) and `RedisStore` (for many API replicas). A month is published
whole: the SQLite file is written beside the live one and renamed over it; Redis keys are
written under the month's own prefix and a pointer is switched in one command. Readers see
the old month or the new one, never a mix.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

ENTITIES = ("customer", "card")


@dataclass(frozen=True)
class Snapshot:
    """One month's content for the store."""

    as_of: str
    rows: dict[str, pd.DataFrame]  # entity -> id column, context columns and features
    distributions: dict[str, np.ndarray]  # target prefix -> the month's probabilities


class OnlineStore(Protocol):
    def publish(self, snapshot: Snapshot) -> None: ...
    def get(self, entity: str, ids: list[int]) -> dict[int, dict]: ...
    def distribution(self, prefix: str) -> np.ndarray | None: ...
    def as_of(self) -> str | None: ...


def _records(frame: pd.DataFrame, key: str) -> list[tuple[int, str]]:
    """(id, JSON) per row: numbers as float (NaN as null), categories as text."""
    cols = [c for c in frame.columns if c != key]
    out = []
    values = {
        c: frame[c].astype(object).where(frame[c].notna(), None).to_numpy(object) for c in cols
    }
    for i, ident in enumerate(frame[key].to_numpy()):
        rec = {}
        for c in cols:
            v = values[c][i]
            if isinstance(v, float | np.floating):
                v = None if math.isnan(v) else float(v)
            elif isinstance(v, np.integer):
                v = int(v)
            elif isinstance(v, pd.Timestamp):
                v = v.strftime("%Y-%m-%d")
            elif v is not None and not isinstance(v, str | int | bool):
                v = str(v)
            rec[c] = v
        out.append((int(ident), json.dumps(rec, separators=(",", ":"))))
    return out


KEYS = {"customer": "customer_id", "card": "card_id"}


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

    def publish(self, snapshot: Snapshot) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            conn = sqlite3.connect(tmp)
            with conn:
                conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                conn.execute("INSERT INTO meta VALUES ('as_of', ?)", (snapshot.as_of,))
                conn.execute("CREATE TABLE dist (prefix TEXT PRIMARY KEY, probs BLOB)")
                for prefix, probs in snapshot.distributions.items():
                    blob = np.sort(np.asarray(probs, dtype=np.float64)).tobytes()
                    conn.execute("INSERT INTO dist VALUES (?, ?)", (prefix, blob))
                for entity, frame in snapshot.rows.items():
                    conn.execute(f"CREATE TABLE {entity} (id INTEGER PRIMARY KEY, doc TEXT)")
                    conn.executemany(
                        f"INSERT INTO {entity} VALUES (?, ?)", _records(frame, KEYS[entity])
                    )
            conn.close()
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

    def publish(self, snapshot: Snapshot) -> None:
        version = f"{snapshot.as_of}-{uuid.uuid4().hex[:8]}"
        prefix = f"{self.ns}:{version}"
        pipe = self.client.pipeline(transaction=False)
        for entity, frame in snapshot.rows.items():
            for n, (ident, doc) in enumerate(_records(frame, KEYS[entity]), 1):
                pipe.set(f"{prefix}:{entity}:{ident}", doc)
                if n % 10_000 == 0:
                    pipe.execute()
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

    def as_of(self) -> str | None:
        version = self._current()
        v = None if version is None else self.client.get(f"{self.ns}:{version}:as_of")
        return None if v is None else v.decode()


def open_store(home: Path, url: str | None = None) -> OnlineStore:
    """Redis when a URL (redis://...) is given, else the SQLite file under `home`."""
    if url:
        return RedisStore(url)
    return SqliteStore(Path(home) / "online" / "features.sqlite")
