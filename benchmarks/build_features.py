"""Benchmark: point-in-time features and training sets. Prints wall time and peak RSS.

Targets (issue 3): features for 1,000,000 customers for one as_of in at most 60 s and 4 GiB;
a 12-month training set for 200,000 customers in at most 3 minutes.

    .venv/bin/python benchmarks/build_features.py [--workdir DIR] [--keep]

Books are generated into --workdir when missing (1,000,000 x 24 and 200,000 x 24 months,
seed 42, ending 2026-10); each measurement runs in its own process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

END = "2026-10"


def _ensure_book(path: Path, customers: int) -> None:
    if (path / "book.json").is_file():
        meta = json.loads((path / "book.json").read_text())
        if meta["customers"] == customers and meta["end_month"] == END:
            return
    from bookpulse.synthetic.simulate import BookSpec, generate_book

    print(f"  (generating a {customers:,}-customer book in {path})", flush=True)
    generate_book(
        BookSpec(customers=customers, months=24, seed=42, end_month=END), path, force=True
    )


def _stage(stage: str, book: Path) -> None:
    """Runs in a child process: one measurement, printed as JSON on the last line."""
    started = time.perf_counter()
    if stage == "features":
        from bookpulse.features import build_from_book

        customers, cards = build_from_book(book, END)
        rows = {"customers": len(customers), "cards": len(cards)}
    else:
        from bookpulse.model.dataset import training_set, training_sets
        from bookpulse.specs import load_model_specs

        specs = load_model_specs()
        months = [str(p) for p in __import__("pandas").period_range("2025-08", "2026-07", freq="M")]
        if stage == "training_set":
            df = training_set(book, specs["churn"], months)
            rows = {"rows": len(df), "months": 12}
        else:
            sets = training_sets(book, [specs["churn"], specs["tier_upgrade"]], months)
            rows = {name: len(df) for name, df in sets.items()}
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "peak_gib": peak, **rows}))


def _measure(stage: str, book: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--stage", stage, "--book", str(book)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep generated books")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--book", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        _stage(args.stage, args.book)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bookpulse-bench-"))
    big, mid = workdir / "book_1m", workdir / "book_200k"
    _ensure_book(big, 1_000_000)
    f = _measure("features", big)
    print(f"features as of {END}: 1,000,000-customer book")
    print(f"  rows               {f['customers']:,} active customers, {f['cards']:,} new cards")
    print(f"  wall time          {f['seconds']:,.1f} s   (target <= 60 s)")
    print(f"  peak RSS           {f['peak_gib']:,.2f} GiB (target <= 4 GiB)")
    _ensure_book(mid, 200_000)
    t = _measure("training_set", mid)
    print("training set, churn, 12 as_of months (2025-08 .. 2026-07): 200,000-customer book")
    print(f"  rows               {t['rows']:,}")
    print(f"  wall time          {t['seconds']:,.1f} s   (target <= 180 s)")
    print(f"  peak RSS           {t['peak_gib']:,.2f} GiB")
    both = _measure("training_sets", mid)
    print("training sets, churn + tier_upgrade sharing one feature pass, same 12 months")
    print(f"  wall time          {both['seconds']:,.1f} s   peak RSS {both['peak_gib']:,.2f} GiB")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
