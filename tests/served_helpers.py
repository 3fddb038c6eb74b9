"""A `bentoml serve` process on loopback, and the CRM's check of it, for the tests that serve
(serving/test_served.py, serving/test_bento.py, jobs/test_spec_only_target.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving_keys import ADMIN_KEY, API_KEY, MONTH

AUTH = {"X-API-Key": API_KEY}
BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_env(home: Path, bentoml_home: Path) -> dict[str, str]:
    """This environment, pointed at `home` with the test keys; nothing that would send the
    server elsewhere (another online store, other specs) or stop it writing bytecode."""
    env = dict(
        os.environ,
        BOOKPULSE_HOME=str(home),
        BOOKPULSE_API_KEYS=API_KEY,
        BOOKPULSE_ADMIN_KEYS=ADMIN_KEY,
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
    )
    for name in (
        "BOOKPULSE_ONLINE_STORE",
        "BOOKPULSE_SPECS_ROOT",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPYCACHEPREFIX",
    ):
        env.pop(name, None)
    return env


@contextmanager
def bentoml_serve(
    target: str, env: dict[str, str], log: Path, cwd: Path | None = None, ready_within: float = 180
) -> Iterator[str]:
    """`bentoml serve target` on a free loopback port; yields its URL once /readyz answers 200.
    The server (its own process group) is always stopped on the way out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + ready_within
            while not _ready(url):
                if proc.poll() is not None:
                    pytest.fail(f"bentoml serve exited: {log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"bentoml serve not ready in {ready_within:.0f} s")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def assert_scores_by_id_equal_the_batch(url: str, home: Path, n: int = 10) -> None:
    """The first `n` customers of the batch month, scored by id over HTTP: probability
    (exactly), percentile, decile and model version of each score as in the batch output; and
    the same call without a key gets 401."""
    cust = pd.read_parquet(home / "scores" / MONTH / "customers.parquet")
    cust = cust.set_index("customer_id")
    ids = [int(i) for i in cust.index[:n]]
    body = {"customer_ids": ids}
    r = httpx.post(f"{url}/v1/customers/score", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == ids
    for res in results:
        row = cust.loc[res["id"]]
        for prefix in ("churn", "upgrade", "wealth"):
            got = res["scores"].get(prefix)
            if pd.isna(row[f"{prefix}_probability"]):
                assert got is None
                continue
            fields = ("probability", "percentile", "decile", "model_version")
            assert [got[f] for f in fields] == [row[f"{prefix}_{f}"] for f in fields], res["id"]
    assert httpx.post(f"{url}/v1/customers/score", json=body, timeout=30).status_code == 401
