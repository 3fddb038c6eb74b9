"""Benchmark: the real-time API under load, from a separate client process on loopback.

For each server, a fresh process, warmed up, then one id per request at 100, 200, 400 and
1,000 requests/s (30 s each by default; open loop: request i leaves at start + i/rate whether
or not earlier ones returned, and its latency counts from that time, so a queue shows):
p50, p95, p99, max, the rate achieved and the errors, side by side.
1. `bentoml serve` of bookpulse: score by id (`/v1/customers/score`, one customer);
2. `mlflow models serve` of the same registered churn champion (its pyfunc, the same
   customers' features as a one-row `dataframe_split`).

The client is raw asyncio on keep-alive connections (a few microseconds a request); its own
CPU time is measured (getrusage of the client process) and printed beside each step, so it
is visible how much of the 2 cores it took from the server.

Targets (issue 16, this 2-core machine otherwise idle): p99 <= 10 ms with no errors at 200
requests/s; at least 1,000 requests/s sustained with p99 <= 50 ms.

    .venv/bin/python benchmarks/api_latency.py [--home DIR] [--seconds 30] [--only bookpulse]

`--home` (default $BOOKPULSE_HOME or ./data) must hold champions and a scored month: run
`make demo` first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KEY = "bench-key-0123456789"
WORKERS = int(os.environ.get("BOOKPULSE_API_WORKERS", "2"))
RATES = (100, 200, 400, 1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited before it was ready ({url})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout} s ({url})")


def _bentoml(home: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, BOOKPULSE_HOME=str(home), BOOKPULSE_API_KEYS=KEY)
    exe = str(Path(sys.executable).with_name("bentoml"))
    return subprocess.Popen(
        [
            exe,
            "serve",
            "bookpulse.serving.service:Scoring",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _mlflow(home: Path, port: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow.db",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",  # its uvicorn
    )
    exe = str(Path(sys.executable).with_name("mlflow"))
    return subprocess.Popen(
        [
            exe,
            "models",
            "serve",
            "-m",
            "models:/bookpulse-churn@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),  # as many as bookpulse's API runs
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _serving(start, home: Path, ready: str):
    """Start a server, wait until it answers `ready`, yield its base URL, stop it."""
    port = _free_port()
    proc = start(home, port)
    try:
        _wait(f"http://127.0.0.1:{port}{ready}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _requests(home: Path) -> tuple[list[str], list[str]]:
    """Bodies for both servers: customer ids, and the same customers' churn features."""
    import pandas as pd

    from bookpulse.adapters.store import open_store
    from bookpulse.specs import load_model_specs

    store = open_store(home)
    month = store.as_of()
    ids = pd.read_parquet(home / "scores" / month / "customers.parquet", columns=["customer_id"])
    # every request a different customer (no cache can help): 30,000 of the month's
    ids = [int(i) for i in ids["customer_id"].sample(min(30_000, len(ids)), random_state=0)]
    docs = store.get("customer", ids)
    features = list(load_model_specs()["churn"].features)
    by_id = [json.dumps({"customer_ids": [i]}) for i in ids]
    payloads = [
        json.dumps(
            {"dataframe_split": {"columns": features, "data": [[docs[i].get(f) for f in features]]}}
        )
        for i in ids
    ]
    return by_id, payloads


class _Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: a few microseconds of
    client CPU a request (an HTTP library would take more of the 2 cores than the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def _load(url: str, bodies: list[str], rate: float, seconds: float, headers: dict) -> dict:
    """Open loop: request i leaves at start + i / rate whether or not earlier ones returned,
    and its latency counts from that scheduled time (so a late client or a queue shows)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [
        (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}"
            f"Content-Length: {len(b.encode())}\r\n\r\n{b}"
        ).encode()
        for b in bodies
    ]
    idle: list[_Connection] = []

    async def connection() -> _Connection:
        if idle:
            return idle.pop()
        return _Connection(*await asyncio.open_connection(parts.hostname, parts.port))

    for _ in range(16):
        idle.append(await connection())
    n = int(rate * seconds)
    lat = np.zeros(n)
    errors = 0
    kinds: dict[str, int] = {}

    async def one(i: int, due: float) -> None:
        nonlocal errors
        conn = None
        request = requests[i % len(requests)]
        try:
            conn = await connection()
            try:
                status = await asyncio.wait_for(conn.exchange(request), 10)
            except (ConnectionError, asyncio.IncompleteReadError):
                # the server closed an idle keep-alive connection: resend on a new one
                conn.writer.close()
                conn = _Connection(*await asyncio.open_connection(parts.hostname, parts.port))
                status = await asyncio.wait_for(conn.exchange(request), 10)
            if status != 200:
                errors += 1
                kinds[str(status)] = kinds.get(str(status), 0) + 1
            idle.append(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors += 1
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
            if conn is not None:
                conn.writer.close()
        lat[i] = (time.perf_counter() - due) * 1000

    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.2
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - start
    for conn in idle:
        conn.writer.close()
    return {
        "rate": rate,
        "sent": n,
        "achieved_rps": n / took,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "errors": errors,
        "error_kinds": kinds,
    }


def _client(args) -> None:
    bodies = json.loads(Path(args.bodies).read_text())
    headers = {"Content-Type": "application/json", **json.loads(args.headers)}
    import resource

    out = asyncio.run(_load(args.url, bodies, args.rate, args.seconds, headers))
    used = resource.getrusage(resource.RUSAGE_SELF)
    out["client_cpu_s"] = used.ru_utime + used.ru_stime
    print(json.dumps(out))


def _measure(url: str, bodies_file: Path, headers: dict, rate: float, seconds: float) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            "--url",
            url,
            "--bodies",
            str(bodies_file),
            "--headers",
            json.dumps(headers),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, r: dict) -> str:
    client = r["client_cpu_s"] / max(r["sent"] / r["rate"], 1e-9)
    kinds = ", ".join(f"{k} x{v}" for k, v in r["error_kinds"].items())
    return (
        f"{name:28s} {r['rate']:6.0f} {r['achieved_rps']:8.0f} {r['p50_ms']:8.1f} "
        f"{r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f} {r['errors']:7d} "
        f"{client:8.0%}" + (f"  ({kinds})" if kinds else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("BOOKPULSE_HOME", "data")))
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--client", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--bodies")
    parser.add_argument("--headers", default="{}")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument(
        "--only", choices=("bookpulse", "mlflow"), help="measure one server (default: both)"
    )
    args = parser.parse_args()
    if args.client:
        _client(args)
        return
    home = args.home.resolve()
    rates = [float(r) for r in args.rates.split(",")]
    by_id, payloads = _requests(home)
    work = home / "bench-api"
    work.mkdir(exist_ok=True)
    (work / "ids.json").write_text(json.dumps(by_id))
    (work / "payloads.json").write_text(json.dumps(payloads))
    print(
        f"{'server':28s} {'rate/s':>6s} {'achieved':>8s} {'p50 ms':>8s} {'p95 ms':>8s} "
        f"{'p99 ms':>8s} {'max ms':>8s} {'errors':>7s} {'client':>8s}",
        flush=True,
    )
    results: dict[str, list[dict]] = {}
    for name, start, path, bodies, headers in (
        (
            "bookpulse (bentoml serve)",
            _bentoml,
            "/v1/customers/score",
            work / "ids.json",
            {"X-API-Key": KEY},
        ),
        ("mlflow models serve", _mlflow, "/invocations", work / "payloads.json", {}),
    ):
        if args.only and args.only not in name:
            continue
        ready = "/readyz" if "bentoml" in name else "/ping"
        for rate in rates:
            # A fresh server for each rate: one that fell behind keeps working through its
            # backlog after the client has given up, and would slow the next step.
            with _serving(start, home, ready) as base:
                _measure(base + path, bodies, headers, 50, 3)  # warm up
                r = _measure(base + path, bodies, headers, rate, args.seconds)
            results.setdefault(name, []).append(r)
            print(_row(name, r), flush=True)
    mine = {r["rate"]: r for r in results.get("bookpulse (bentoml serve)", [])}
    if 200 in mine:
        r = mine[200]
        ok = r["p99_ms"] <= 10 and r["errors"] == 0
        print(
            f"200/s: p99 {r['p99_ms']:.1f} ms, errors {r['errors']} "
            f"(target p99 <= 10 ms, 0 errors): {'met' if ok else 'NOT met'}"
        )
    held = [
        r["rate"]
        for r in mine.values()
        if r["p99_ms"] <= 50 and r["errors"] == 0 and r["achieved_rps"] >= 0.95 * r["rate"]
    ]
    if held:
        print(
            f"highest rate held with p99 <= 50 ms and no errors: {max(held):.0f}/s "
            "(target >= 1,000/s)"
        )


if __name__ == "__main__":
    main()
