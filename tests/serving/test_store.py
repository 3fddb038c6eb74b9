"""The online store: SQLite (embedded) and Redis (a real server the test starts) answer alike."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bookpulse.serving.store import RedisStore, Snapshot, SqliteStore


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
    store.publish(_snapshot("2026-09", [11, 12, 13]))
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
    store.publish(_snapshot("2026-09", [11, 12, 13]))
    store.publish(_snapshot("2026-10", [21, 22]))
    assert store.as_of() == "2026-10"
    assert store.get("customer", [11, 12, 13]) == {}
    assert set(store.get("customer", [21, 22])) == {21, 22}


def test_float32_features_survive_the_trip_bit_for_bit(store) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=3).astype(np.float32)
    snap = _snapshot("2026-09", [1, 2, 3])
    snap.rows["customer"]["aum_log"] = values
    store.publish(snap)
    got = store.get("customer", [1, 2, 3])
    assert [np.float32(got[i]["aum_log"]) for i in (1, 2, 3)] == list(values)


def test_redis_and_sqlite_agree(redis_url, tmp_path) -> None:
    a = SqliteStore(tmp_path / "f.sqlite")
    b = RedisStore(redis_url, namespace="agree")
    snap = _snapshot("2026-09", [5, 6, 7])
    a.publish(snap)
    b.publish(snap)
    assert a.get("customer", [5, 6, 7]) == b.get("customer", [5, 6, 7])
    assert np.array_equal(a.distribution("churn"), b.distribution("churn"))
    assert Path(tmp_path / "f.sqlite").is_file()
