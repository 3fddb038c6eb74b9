"""The online store: SQLite (embedded) and Redis (a real server the test starts) answer alike."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bookpulse.adapters.store import (
    KEYS,
    Encoded,
    RedisStore,
    Snapshot,
    SqliteStore,
    decode,
    encode,
    layout_of,
)
from bookpulse.errors import BookpulseError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server missing: .ci/run installs it (apt-get install redis-server)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def _snapshot(month: str, ids: list[int]) -> Snapshot:
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": pd.Timestamp(f"{month}-01") + pd.offsets.MonthEnd(0),
            "aum_log": np.array([10.5, np.nan, 3.25][: len(ids)], dtype=np.float32),
            "tier": pd.Categorical(["mid", "potential", None][: len(ids)]),
            "products_held": np.array([2, 5, 1][: len(ids)], dtype=np.int8),
        }
    )
    cards = pd.DataFrame({"card_id": [9_000_001], "customer_id": [ids[0]], "credit_limit": [5e4]})
    return Snapshot(
        as_of=month,
        rows={"customer": customers, "card": cards},
        distributions={"churn": np.array([0.3, 0.1, 0.2])},
    )


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "online" / "features.sqlite")
    return RedisStore(request.getfixturevalue("redis_url"), namespace=f"t{time.time_ns()}")


def test_a_published_month_reads_back_exactly(store) -> None:
    assert store.as_of() is None and store.get("customer", [1]) == {}
    store.put_month(_snapshot("2026-09", [11, 12, 13]))
    assert store.as_of() == "2026-09"
    got = store.get("customer", [13, 11, 999])
    assert set(got) == {11, 13}
    assert got[11]["aum_log"] == float(np.float32(10.5)) and got[11]["tier"] == "mid"
    assert got[11]["products_held"] == 2 and got[11]["as_of"] == "2026-09-30"
    assert got[13]["tier"] is None
    assert store.get("customer", [12])[12]["aum_log"] is None  # NaN travels as null
    assert store.get("card", [9_000_001])[9_000_001]["customer_id"] == 11
    assert list(store.distribution("churn")) == [0.1, 0.2, 0.3]  # kept sorted
    assert store.distribution("upgrade") is None


def test_a_new_month_replaces_the_old_one_whole(store) -> None:
    store.put_month(_snapshot("2026-09", [11, 12, 13]))
    store.put_month(_snapshot("2026-10", [21, 22]))
    assert store.as_of() == "2026-10"
    assert store.get("customer", [11, 12, 13]) == {}
    assert set(store.get("customer", [21, 22])) == {21, 22}


def test_a_pinned_month_reads_as_published_or_says_it_is_gone(store) -> None:
    """The API's view of a month: its own versions, its own documents and distributions after
    the next month is live (SQLite keeps the replaced file open), or MonthGone where the
    store has dropped it (Redis)."""
    from bookpulse.adapters.store import MonthGone, RedisStore

    with store.month_writer("2026-09") as w:
        snap = _snapshot("2026-09", [11, 12, 13])
        for entity, rows in snap.rows.items():
            w.add(entity, rows)
        w.commit(snap.distributions, {"bookpulse-churn": "4"})
    first = store.live_id()
    view = store.pinned()
    assert view.month == "2026-09" and view.models == {"bookpulse-churn": "4"}
    store.put_month(_snapshot("2026-10", [21, 22]))  # no versions recorded: {}
    assert store.live_id() != first and store.pinned().models == {}
    if isinstance(store, RedisStore):
        with pytest.raises(MonthGone):
            view.get("customer", [11])
    else:
        assert set(view.get("customer", [11, 21])) == {11}  # the month it pinned
        assert list(view.distribution("churn")) == [0.1, 0.2, 0.3]
        assert view.as_of() == "2026-09"


def test_float32_features_survive_the_trip_bit_for_bit(store) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=3).astype(np.float32)
    snap = _snapshot("2026-09", [1, 2, 3])
    snap.rows["customer"]["aum_log"] = values
    store.put_month(snap)
    got = store.get("customer", [1, 2, 3])
    assert [np.float32(got[i]["aum_log"]) for i in (1, 2, 3)] == list(values)


def test_redis_and_sqlite_agree(redis_url, tmp_path) -> None:
    a = SqliteStore(tmp_path / "f.sqlite")
    b = RedisStore(redis_url, namespace="agree")
    snap = _snapshot("2026-09", [5, 6, 7])
    a.put_month(snap)
    b.put_month(snap)
    assert a.get("customer", [5, 6, 7]) == b.get("customer", [5, 6, 7])
    assert np.array_equal(a.distribution("churn"), b.distribution("churn"))
    assert Path(tmp_path / "f.sqlite").is_file()


def test_documents_built_elsewhere_publish_the_same(store, tmp_path) -> None:
    """The Spark engine hands the store documents its tasks built, not frames."""
    snap = _snapshot("2026-09", [1, 2, 3])
    built = Snapshot(
        as_of=snap.as_of,
        rows={
            e: Encoded(layout_of(f, KEYS[e]), list(encode(f, KEYS[e], rows=2)))
            for e, f in snap.rows.items()
        },
        distributions=snap.distributions,
    )
    store.put_month(built)
    got = store.get("customer", [1, 2, 3])
    reference = SqliteStore(tmp_path / "reference.sqlite")
    reference.put_month(snap)
    assert got == reference.get("customer", [1, 2, 3])
    assert store.get("card", [9_000_001]) == reference.get("card", [9_000_001])


# --- every value reads back exactly ---------------------------------------------------------

FLOATS = st.floats(width=64) | st.sampled_from(
    [0.0, -0.0, 1.0, -2.0, 1e16, 1e22, 1e-7, 0.1, 123456789012.0, 5e-324, 2.2250738585072014e-308,
     1.7976931348623157e308, float("nan"), float("inf"), float("-inf")]
)  # fmt: skip
TEXT = st.none() | st.text(max_size=8) | st.sampled_from(["mid", 'a "quote"', "back\\slash", "é"])
ROW = st.fixed_dictionaries(
    {
        "f64": FLOATS,
        "f32": st.floats(width=32),
        "i64": st.integers(-(2**63), 2**63 - 1),
        "i8": st.integers(-128, 127),
        "maybe_int": st.none() | st.integers(-(2**63), 2**63 - 1),
        "flag": st.booleans(),
        "text": TEXT,
        "level": TEXT,
        "day": st.none() | st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)),
        "mixed": st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=4),
    }
)
ROW_COLUMNS = ["f64", "f32", "i64", "i8", "maybe_int", "flag", "text", "level", "day", "mixed"]


def _frame(rows: list[dict], first_id: int) -> pd.DataFrame:
    col = {k: [r[k] for r in rows] for k in ROW_COLUMNS}
    return pd.DataFrame(
        {
            "customer_id": np.arange(first_id, first_id + len(rows), dtype=np.int64),
            "f64": np.array(col["f64"], dtype=np.float64),
            "f32": np.array(col["f32"], dtype=np.float32),
            "i64": np.array(col["i64"], dtype=np.int64),
            "i8": np.array(col["i8"], dtype=np.int8),
            "maybe_int": pd.array(col["maybe_int"], dtype="Int64"),
            "flag": np.array(col["flag"], dtype=bool),
            "text": pd.Series(col["text"], dtype="str"),
            "level": pd.Categorical(col["level"]),
            "day": pd.Series(col["day"], dtype="datetime64[us]"),
            "mixed": pd.Series(col["mixed"], dtype=object),
        }
    )


def _expected(row: dict) -> dict:
    """What the API must read back: the batch's own values (float32 as the float64 it widens
    to, NaN as None, a date as YYYY-MM-DD)."""
    f32 = float(np.float32(row["f32"]))
    day = row["day"]
    want = {
        **row,
        "f64": None if np.isnan(row["f64"]) else row["f64"],
        "f32": None if np.isnan(f32) else f32,
        "day": None if day is None else day.strftime("%Y-%m-%d"),
    }
    return {k: want[k] for k in ROW_COLUMNS}  # in the frame's column order


def _same(a, b) -> bool:
    """Equal and of the same type; floats bit for bit (so -0.0 is not 0.0)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=30), batch=st.integers(1, 12))
def test_documents_read_back_exactly(rows, batch) -> None:
    frame = _frame(rows, 1)
    layout = layout_of(frame, "customer_id")
    once = [d for part in encode(frame, "customer_id", rows=batch) for d in part]
    assert [i for i, _ in once] == list(range(1, len(rows) + 1))
    for got, row in zip(decode(layout, [d for _, d in once]), rows, strict=True):
        assert _same(got, _expected(row)), got
    thrice = [d for part in encode(_frame(rows * 3, 1), "customer_id", rows=batch) for d in part]
    assert [d for _, d in thrice] == [d for _, d in once] * 3


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=10))
def test_both_stores_serve_exactly_what_was_published(rows, redis_url, tmp_path_factory) -> None:
    frame = _frame(rows, 100)
    snap = Snapshot("2026-09", {"customer": frame}, {"churn": np.array([0.5])})
    for store in (
        SqliteStore(tmp_path_factory.mktemp("prop") / "features.sqlite"),
        RedisStore(redis_url, namespace=f"prop{time.time_ns()}"),
    ):
        store.put_month(snap)
        got = store.get("customer", frame["customer_id"].tolist())
        for n, row in enumerate(rows):
            assert _same(got[100 + n], _expected(row))


def test_a_large_month_reads_back_exactly() -> None:
    """Several batches; float columns of distinct values and of few, with gaps, beside the
    API's own kinds of column."""
    rng = np.random.default_rng(1)
    n = 120_000
    distinct = rng.lognormal(3, 4, n).astype(np.float32)
    distinct[rng.random(n) < 0.1] = np.nan
    few = rng.choice([0.0, -0.0, 1.0, 2.5, 1e20, np.nan], n)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(n) * 3 + 7,
            "as_of": pd.Timestamp("2026-10-31"),
            "aum_log": distinct,
            "products_chg_3m": few,
            "products_held": rng.integers(0, 9, n).astype(np.int8),
            "tier": pd.Series(rng.choice(["mid", "high_end"], n), dtype="str"),
        }
    )
    docs = [d for part in encode(frame, "customer_id") for d in part]
    assert [i for i, _ in docs] == frame["customer_id"].tolist()
    got = pd.DataFrame(decode(layout_of(frame, "customer_id"), [d for _, d in docs]))
    assert (got["as_of"] == "2026-10-31").all()
    for col in ("aum_log", "products_chg_3m"):
        want = frame[col].to_numpy(np.float64)
        back = got[col].to_numpy(np.float64)  # None reads as NaN
        gap = np.isnan(want)
        assert np.array_equal(np.isnan(back), gap)
        assert np.array_equal(back[~gap].view(np.int64), want[~gap].view(np.int64))  # -0.0 too
    assert got["products_held"].tolist() == frame["products_held"].tolist()
    assert got["tier"].tolist() == frame["tier"].tolist()


def test_a_killed_publish_leaves_the_live_month_and_the_next_cleans_up(tmp_path) -> None:
    store = SqliteStore(tmp_path / "online" / "features.sqlite")
    store.put_month(_snapshot("2026-09", [11, 12]))
    # a run killed while writing leaves its private file; the live month is untouched
    stale = store.path.with_name(f".{store.path.name}.deadbeef.tmp")
    stale.write_bytes(b"half a month")
    assert store.as_of() == "2026-09" and set(store.get("customer", [11, 12])) == {11, 12}
    store.put_month(_snapshot("2026-10", [21]))
    assert store.as_of() == "2026-10"
    left = sorted(p.name for p in store.path.parent.iterdir())
    assert left == ["features.sqlite"]


def test_a_store_path_that_cannot_be_written_is_refused(tmp_path) -> None:
    from bookpulse.errors import BookpulseError

    (tmp_path / "online").write_text("a file where the folder goes")
    with pytest.raises(BookpulseError, match="is a file"):
        SqliteStore(tmp_path / "online" / "features.sqlite").check()
    (tmp_path / "ok" / "features.sqlite").mkdir(parents=True)
    with pytest.raises(BookpulseError, match="is a folder"):
        SqliteStore(tmp_path / "ok" / "features.sqlite").check()


# --- writing a month batch by batch ---------------------------------------------------------


def _customers(ids, aum=np.float32) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": np.asarray(ids, dtype=np.int64),
            "aum_log": np.linspace(1, 2, len(ids)).astype(aum),
            "segment": pd.Series(["women"] * len(ids), dtype="str"),
        }
    )


def test_a_month_is_invisible_until_committed(store) -> None:
    store.put_month(_snapshot("2026-09", [11, 12, 13]))
    with store.month_writer("2026-10") as w:
        w.add("customer", _customers([21, 22]))
        assert store.as_of() == "2026-09" and store.get("customer", [21]) == {}
        w.add("customer", _customers([23]))
        w.add_docs("card", *_encoded(_snapshot("2026-10", [21]).rows["card"], "card_id"))
        assert set(store.get("customer", [11, 12, 13])) == {11, 12, 13}
        w.commit({"churn": np.array([0.9, 0.2])})
    assert store.as_of() == "2026-10"
    assert set(store.get("customer", [11, 21, 22, 23])) == {21, 22, 23}
    assert store.get("customer", [23])[23] == {"aum_log": 1.0, "segment": "women"}
    assert store.get("card", [9_000_001])[9_000_001]["customer_id"] == 21
    assert list(store.distribution("churn")) == [0.2, 0.9]


def _encoded(frame: pd.DataFrame, key: str) -> tuple[dict, list]:
    return layout_of(frame, key), list(encode(frame, key))


def _leftovers(store) -> list[str]:
    """What the store holds beside its live month: private files, or other versions' keys."""
    if isinstance(store, SqliteStore):
        return sorted(p.name for p in store.path.parent.iterdir() if p != store.path)
    live = store._current()
    keys = [k.decode() for k in store.client.scan_iter(f"{store.ns}:*")]
    return sorted(
        k for k in keys if not k.startswith(f"{store.ns}:{live}:") and k != f"{store.ns}:current"
    )


def test_a_writer_that_fails_leaves_the_live_month_and_nothing_else(store) -> None:
    store.put_month(_snapshot("2026-09", [11, 12, 13]))
    with pytest.raises(RuntimeError, match="engine failed"), store.month_writer("2026-10") as w:
        w.add("customer", _customers([21, 22]))
        raise RuntimeError("engine failed")
    assert store.as_of() == "2026-09"
    assert set(store.get("customer", [11, 12, 13, 21])) == {11, 12, 13}
    assert _leftovers(store) == []


def test_partitions_of_another_shape_are_refused(store) -> None:
    store.put_month(_snapshot("2026-09", [11]))
    with store.month_writer("2026-10") as w:
        w.add("customer", _customers([21, 22]))
        with pytest.raises(BookpulseError, match=r"aum_log is float <f8, not float <f4"):
            w.add("customer", _customers([23], aum=np.float64))
        with pytest.raises(BookpulseError, match="without segment"):
            w.add("customer", _customers([23]).drop(columns="segment"))
        layout, docs = _encoded(
            _customers([24]).rename(columns={"customer_id": "card_id"}), "card_id"
        )
        with pytest.raises(BookpulseError, match="keyed by customer_id, not card_id"):
            w.add_docs("customer", layout, docs)
        with pytest.raises(BookpulseError, match="not 'account'"):
            w.add("account", _customers([1]))
        w.add("customer", _customers([23]))  # the month's own shape still goes in
        w.commit({})
    assert set(store.get("customer", [21, 22, 23])) == {21, 22, 23}
    with pytest.raises(BookpulseError, match="committed already"):
        w.add("customer", _customers([24]))


def test_writers_at_the_same_time_leave_each_other_alone(store) -> None:
    """A second run's clean-up removes what dead writers left, never a live writer's month."""
    store.put_month(_snapshot("2026-09", [11]))
    with store.month_writer("2026-10") as first:
        first.add("customer", _customers([21]))
        store.put_month(_snapshot("2026-11", [31]))  # another run, start to end, meanwhile
        assert store.as_of() == "2026-11"
        first.add("customer", _customers([22]))
        first.commit({})
    assert store.as_of() == "2026-10"
    assert set(store.get("customer", [11, 21, 22, 31])) == {21, 22}
    assert _leftovers(store) == []


KILLED_WRITER = """
import sys, time
import numpy as np, pandas as pd
import bookpulse.adapters.store as s
s.LEASE_MS = 300
store = s.SqliteStore(sys.argv[1]) if sys.argv[1].endswith(".sqlite") else s.RedisStore(
    sys.argv[1], namespace=sys.argv[2])
with store.month_writer("2026-10") as w:
    w.add("customer", pd.DataFrame({"customer_id": np.arange(5_000), "x": np.ones(5_000)}))
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_leaves_the_live_month_and_debris_the_next_removes(store) -> None:
    store.put_month(_snapshot("2026-09", [11, 12]))
    args = [str(store.path)] if isinstance(store, SqliteStore) else [_url(store), store.ns]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()  # kill -9: no clean-up of its own
        proc.wait(timeout=30)
    assert store.as_of() == "2026-09" and set(store.get("customer", [0, 11, 12])) == {11, 12}
    assert _leftovers(store) != []  # its half-written month
    time.sleep(0.5)  # a Redis writer's lease runs out
    store.put_month(_snapshot("2026-10", [21]))
    assert store.as_of() == "2026-10" and set(store.get("customer", [0, 11, 21])) == {21}
    assert _leftovers(store) == []


def _url(store: RedisStore) -> str:
    kw = store.client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def test_a_month_stored_as_json_by_an_earlier_version_still_reads(store) -> None:
    """The API keeps serving the month it has while the first binary month is written."""
    doc = {"aum_log": 10.5, "tier": "mid", "as_of": "2026-08-31", "gap": None}
    if isinstance(store, SqliteStore):
        store.path.parent.mkdir(parents=True)
        with sqlite3.connect(store.path) as conn:
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('as_of', '2026-08')")
            conn.execute("CREATE TABLE customer (id INTEGER PRIMARY KEY, doc TEXT)")
            conn.execute("INSERT INTO customer VALUES (7, ?)", (json.dumps(doc),))
        conn.close()
    else:
        store.client.set(f"{store.ns}:2026-08-0badcafe:customer:7", json.dumps(doc))
        store.client.set(f"{store.ns}:2026-08-0badcafe:as_of", "2026-08")
        store.client.set(f"{store.ns}:current", "2026-08-0badcafe")
    assert store.as_of() == "2026-08" and store.get("customer", [7, 8]) == {7: doc}
    store.put_month(_snapshot("2026-09", [11]))
    assert store.as_of() == "2026-09" and store.get("customer", [7]) == {}
    assert _leftovers(store) == []


def test_an_id_no_book_can_hold_is_not_found(tmp_path):
    store = SqliteStore(tmp_path / "f.sqlite")
    store.put_month(_snapshot("2026-10", [1, 2, 3]))
    got = store.get("customer", [2**63, 1, -(2**70)])
    assert list(got) == [1]
