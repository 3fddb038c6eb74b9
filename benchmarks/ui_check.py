"""The analyst's MLflow, looked at: start `bookpulse ui` on a home, open its pages in headless
Chromium (Debian's package), save screenshots, check what the rendered pages say, stop it,
and check nothing is left running. Beside it, plain `mlflow ui` on the same store, timed the
same way (how long until it answers, how many processes it starts, what SIGTERM leaves).

    python benchmarks/ui_check.py [--home data] [--out data/reports/ui]

Needs a home with trained models (`make demo`) and `apt-get install chromium`.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bookpulse.jobs.tracking_server import free_port, processes_with

BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
]


def wait_answers(url: str, limit: float = 600) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).close()
            return time.monotonic() - start
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {limit:.0f} s")


def stop(proc: subprocess.Popen, port: int) -> tuple[float, int]:
    """SIGTERM as a service manager sends it; (seconds to exit, processes left after 10 s)."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
    took = time.monotonic() - start
    time.sleep(10)
    left = processes_with(f"--port {port}") + processes_with("huey_consumer")
    for _ in left:  # tidy up what the plain `mlflow ui` leaves, so the next run starts clean
        subprocess.run(["pkill", "-f", f"--port {port}"], check=False)
        subprocess.run(["pkill", "-f", "huey_consumer"], check=False)
        break
    return took, len(left)


def chromium(url: str, png: Path, width: int = 1600) -> str:
    """Screenshot `url` to `png`; returns the rendered page's DOM."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("Chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1000"]
        subprocess.run([*base, f"--screenshot={png}", url], capture_output=True, timeout=180)
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1000"]
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, timeout=180
        ).stdout
    return dom


def plain_mlflow_ui(home: Path) -> None:
    port = free_port()
    argv = [
        str(BIN / "mlflow"),
        "ui",
        "--backend-store-uri",
        f"sqlite:///{home.resolve()}/mlflow.db",
        "--port",
        str(port),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answered = wait_answers(f"http://127.0.0.1:{port}")
    time.sleep(5)
    count = len(processes_with(f"--port {port}")) + len(processes_with("huey_consumer"))
    took, left = stop(proc, port)
    print(
        f"plain mlflow ui:  answered in {answered:5.1f} s, {count} processes "
        f"(started {time.monotonic() - started:.0f} s ago); SIGTERM: exited in {took:.1f} s, "
        f"{left} processes left running"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, help="screenshots [default: HOME/reports/ui]")
    parser.add_argument("--no-plain", action="store_true", help="skip plain `mlflow ui`")
    args = parser.parse_args()
    home = args.home
    if not (home / "mlflow.db").is_file():
        raise SystemExit(f"no tracking store in {home}: run `make demo` first")
    out = args.out or home / "reports" / "ui"
    out.mkdir(parents=True, exist_ok=True)

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bookpulse"), "ui", "--port", str(port)],
        env={**__import__("os").environ, "BOOKPULSE_HOME": str(home), "COLUMNS": "300"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if "Ctrl-C stops it" in line:
            break
    answered = time.monotonic() - started
    links = dict(
        line.strip().split(": ", 1) for line in lines if line.strip().startswith("bookpulse-")
    )
    count = len(processes_with(f"--port {port}")) + len(processes_with("huey_consumer"))
    base = f"http://127.0.0.1:{port}"
    pages = {
        "experiments": (f"{base}/#/experiments?workflowType=machine_learning", []),
        "churn-runs": (links["bookpulse-churn"], ["auc", "gap_to_ceiling", "ece", "lift_top10"]),
        "churn-model": (
            f"{base}/#/models/bookpulse-churn/versions/1?workflowType=machine_learning",
            ["Model card: churn", "Out-of-time test metrics"],
        ),
        "retention-uplift-runs": (links.get("bookpulse-retention_call_uplift", ""), ["qini"]),
    }
    try:
        print(
            f"bookpulse ui:     answered in {answered:5.1f} s (the command's start to its "
            f"links), {count} processes (bookpulse, mlflow server, one uvicorn worker)"
        )
        for name, (url, expect) in pages.items():
            if not url:
                continue
            png = out / f"{name}.png"
            dom = chromium(url, png, width=2400 if name.endswith("runs") else 1600)
            seen = [e for e in expect if e in dom]
            genai = "Detect issues" in dom
            print(
                f"  {name:22s} {png}  expected text found: {len(seen)}/{len(expect)} "
                f"{seen}; GenAI 'Detect issues' shown: {genai}"
            )
    finally:
        took, left = stop(proc, port)
    print(f"bookpulse ui:     SIGTERM: exited in {took:.1f} s, {left} processes left running")
    if not args.no_plain:
        plain_mlflow_ui(home)


if __name__ == "__main__":
    main()
