"""Benchmark: train every model on a 200,000-customer x 24-month book. Prints the wall
time of each stage and each model's out-of-time AUC, ceiling, gap and calibration error.

Target (issue 4): all models within 10 minutes on 2 cores.

    .venv/bin/python benchmarks/train_models.py [--workdir DIR] [--customers N]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from bookpulse.adapters import tracking
from bookpulse.jobs.train import train_and_log
from bookpulse.model.dataset import training_sets
from bookpulse.specs import load_model_specs
from bookpulse.synthetic.simulate import BookSpec, generate_book


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bookpulse-bench-"))
    book = workdir / f"book_{args.customers}"
    if not (book / "book.json").is_file():
        spec = BookSpec(customers=args.customers, months=24, seed=42, end_month="2026-10")
        generate_book(spec, book, force=True)
    home = workdir / "home"
    specs = list(load_model_specs().values())
    tracking.configure(home)
    started = time.perf_counter()
    sets = training_sets(book, specs)
    t_sets = time.perf_counter() - started
    print(f"train every model: {args.customers:,} customers x 24 months")
    print(
        f"  training sets      {t_sets:,.1f} s  "
        + ", ".join(f"{k} {len(v):,} rows" for k, v in sets.items())
    )
    for spec in specs:
        r = train_and_log(book, home, spec, sets[spec.name], threads=2)
        m = r.metrics
        print(
            f"  {spec.name:16s}   {r.seconds:,.1f} s  AUC {m['auc']:.3f}  ceiling "
            f"{m.get('ceiling_auc', float('nan')):.3f}  gap {m.get('gap_to_ceiling', 0):.3f}  "
            f"ECE {m['ece']:.3f} (noise {m['ece_noise']:.3f}, vs truth "
            f"{m.get('ece_truth', float('nan')):.3f})"
        )
    total = time.perf_counter() - started
    print(f"  total              {total:,.1f} s   (target <= 600 s)")
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
