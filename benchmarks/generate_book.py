"""Benchmark: generate a synthetic book (default 1,000,000 customers x 24 months, seed 42, ending
2026-10: the book benchmarks/score_book.py scores). Prints wall time, peak RSS and the layout.

Targets: issue 2, 1M customers in at most 3 minutes and 6 GiB; issue 13, 10M customers x 24
months in at most 15 minutes and 8 GiB, on 2 cores.

    .venv/bin/python benchmarks/generate_book.py [--customers N] [--months M] [--end YYYY-MM]
        [--block-size B] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bookpulse.synthetic.parts import ROW_GROUP_ROWS
from bookpulse.synthetic.simulate import BLOCK_SIZE, BookSpec, generate_book

TARGETS = {1_000_000: (180, 6), 10_000_000: (900, 8)}  # customers: (seconds, GiB)


def layout(book: Path) -> tuple[int, int, int]:
    """(files, largest row group, files whose row groups are out of customer order), from the
    Parquet footers of the files keyed by customer_id (nothing else is read)."""
    files, largest, unordered = 0, 0, 0
    for path in sorted(book.rglob("*.parquet")):
        meta = pq.ParquetFile(path).metadata
        files += 1
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        largest = max([largest, *(g.num_rows for g in groups)])
        names = [meta.schema.column(j).name for j in range(meta.num_columns)]
        if "customer_id" not in names:
            continue
        j = names.index("customer_id")
        bounds = [
            (g.column(j).statistics.min, g.column(j).statistics.max) for g in groups if g.num_rows
        ]
        if any(a[1] > b[0] for a, b in zip(bounds, bounds[1:], strict=False)):
            unordered += 1
    return files, largest, unordered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--end", default="2026-10", help="last month-end, YYYY-MM")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--block-size", type=int, default=BLOCK_SIZE)
    parser.add_argument("--out", type=Path, default=None, help="keep the book here")
    args = parser.parse_args()
    scratch = None
    out = args.out
    if out is None:
        scratch = Path(tempfile.mkdtemp(prefix="bookpulse-bench-"))
        out = scratch / "book"
    spec = BookSpec(
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        end_month=args.end,
        block_size=args.block_size,
    )
    started = time.perf_counter()
    meta = generate_book(spec, out, force=args.out is not None)
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    size_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    files, largest, unordered = layout(out)
    target_s, target_gib = TARGETS.get(args.customers, (None, None))
    print(f"generate book: {args.customers:,} customers x {args.months} months, seed {args.seed}")
    print(f"  blocks             {meta.get('blocks', 1)} of at most {args.block_size:,} customers")
    print(f"  snapshot rows      {meta['snapshot_rows']:,}")
    print(f"  cards              {meta['cards']:,}")
    print(f"  on disk            {size_mib:,.0f} MiB in {files} Parquet files")
    print(f"  largest row group  {largest:,} rows (limit {ROW_GROUP_ROWS:,})")
    print(f"  by customer_id     {files - unordered} ordered, {unordered} out of order")
    wall = f"  wall time          {seconds:,.1f} s"
    rss = f"  peak RSS           {peak_gib:,.2f} GiB"
    print(wall + (f"   (target <= {target_s} s)" if target_s else ""))
    print(rss + (f" (target <= {target_gib} GiB)" if target_gib else ""))
    print(f"  throughput         {meta['snapshot_rows'] / seconds:,.0f} snapshot rows/s")
    if scratch is not None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
