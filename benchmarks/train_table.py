"""Benchmark: what `bookpulse train-table` costs an analyst, as whole commands. Prints the
fixed cost (a 300-row file) and the total for a 10,000-row extract, each the median of a few
runs, with a fresh home (the first run: the MLflow store is created) and with the home of the
previous run (every later run).

The extract is synthetic, shaped like Kaggle's Churn_Modelling.csv (RowNumber, CustomerId,
Surname, Geography, Age, Balance, ..., Exited), made here: no download.

Target (issue 18): a 10,000-row file trains in a few seconds of fixed cost.

    .venv/bin/python benchmarks/train_table.py [--runs 5] [--rows 10000]
        [--command "python -m bookpulse.cli"]   # another checkout's CLI, for a before/after
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def extract(n: int, seed: int = 0) -> pd.DataFrame:
    """Churn_Modelling-shaped rows with a known signal; about 20% exit."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    products = rng.integers(1, 5, n)
    active = rng.random(n) < 0.5
    geography = rng.choice(["France", "Spain", "Germany"], n, p=[0.5, 0.25, 0.25])
    balance = np.where(rng.random(n) < 0.35, 0.0, np.round(rng.normal(120_000, 30_000, n), 2))
    z = -1.6 + 0.06 * (age - 40) - 0.9 * active + 0.7 * (geography == "Germany")
    z += 0.9 * (products >= 3) - 0.3 * (products == 2)
    exited = rng.random(n) < 1 / (1 + np.exp(-z))
    surnames = np.array([f"Surname{i}" for i in range(max(n // 3, 10))])
    return pd.DataFrame(
        {
            "RowNumber": np.arange(1, n + 1),
            "CustomerId": rng.permutation(np.arange(15_565_000, 15_565_000 + n)),
            "Surname": rng.choice(surnames, n),
            "CreditScore": rng.integers(350, 851, n),
            "Geography": geography,
            "Gender": rng.choice(["Female", "Male"], n),
            "Age": age,
            "Tenure": rng.integers(0, 11, n),
            "Balance": balance,
            "NumOfProducts": products,
            "HasCrCard": (rng.random(n) < 0.7).astype(int),
            "IsActiveMember": active.astype(int),
            "EstimatedSalary": np.round(rng.uniform(100, 200_000, n), 2),
            "Exited": exited.astype(int),
        }
    )


def timed(command: list[str], home: Path) -> float:
    env = {**os.environ, "BOOKPULSE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--command", default=f"{shlex.quote(sys.executable)} -m bookpulse.cli")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bookpulse-bench-table-"))
    try:
        tiny, big = "fixed cost (300 rows)", f"{args.rows:,} rows"
        files = {tiny: work / "tiny.csv", big: work / "big.csv"}
        extract(300, seed=1).to_csv(files[tiny], index=False)
        extract(args.rows).to_csv(files[big], index=False)
        base = shlex.split(args.command)
        print(f"bookpulse train-table, median of {args.runs} runs ({os.cpu_count()} cores)")
        print(f"  command: {args.command} train-table FILE --target Exited")
        for label, file in files.items():
            command = [*base, "train-table", str(file), "--target", "Exited"]
            fresh, again = [], []
            for i in range(args.runs):
                home = work / f"home-{file.stem}-{i}"
                fresh.append(timed(command, home))  # a new home: the store is created
                again.append(timed(command, home))  # the same home: the store exists
                shutil.rmtree(home, ignore_errors=True)
            print(
                f"  {label:22s} fresh home {statistics.median(fresh):5.1f} s "
                f"(min {min(fresh):.1f}, max {max(fresh):.1f});  existing home "
                f"{statistics.median(again):5.1f} s (min {min(again):.1f}, max {max(again):.1f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
