"""Benchmark: generate a 1,000,000-customer x 24-month book. Prints wall time and peak RSS.

Target (issue 2): at most 3 minutes and 6 GiB on 2 cores.

    .venv/bin/python benchmarks/generate_book.py [--customers N] [--months M] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bookpulse.synthetic.simulate import BookSpec, generate_book


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--out", type=Path, default=None, help="keep the book here")
    args = parser.parse_args()
    scratch = None
    out = args.out
    if out is None:
        scratch = Path(tempfile.mkdtemp(prefix="bookpulse-bench-"))
        out = scratch / "book"
    spec = BookSpec(customers=args.customers, months=args.months, seed=42, end_month="2026-10")
    started = time.perf_counter()
    meta = generate_book(spec, out, force=args.out is not None)
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    size_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"generate book: {args.customers:,} customers x {args.months} months")
    print(f"  snapshot rows      {meta['snapshot_rows']:,}")
    print(f"  cards              {meta['cards']:,}")
    print(f"  on disk            {size_mib:,.0f} MiB")
    print(f"  wall time          {seconds:,.1f} s   (target <= 180 s)")
    print(f"  peak RSS           {peak_gib:,.2f} GiB (target <= 6 GiB)")
    print(f"  throughput         {meta['snapshot_rows'] / seconds:,.0f} snapshot rows/s")
    if scratch is not None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
