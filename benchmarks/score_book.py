"""Benchmark: the monthly batch at bank scale, local engine. For each book size it prints the
wall time and peak RSS of the whole job as `bookpulse score` runs it (validate, linked facts,
features, every model, reasons, ranks, lists, write, and the month's feature vectors into
the SQLite online store), its stages, and the online store's bytes per customer; then, on
the same rows and models, partition by partition, the floor (bare `Booster.predict`) against
scoring plus reasons, and the ratio; and how often the fast reasons name the same features
as TreeSHAP. With several sizes, the peak RSS of each against the first.

Targets (issue 13): 10M customers end to end in at most 15 min and 6 GiB; at 1M scoring plus
reasons at most 1.5x the floor, peak RSS at most 2 GiB and at most 1.3x the 250k figure;
the online store at most about 600 bytes a customer.

    .venv/bin/python benchmarks/score_book.py [--customers 250000,1000000] [--home DIR]
        [--workdir DIR] [--book DIR] [--no-floor] [--spark local[2]]

The champions come from `--home` (default $BOOKPULSE_HOME or ./data: run `make demo` first).
A book is generated into --workdir when missing (seed 42, 24 months ending 2026-10), unless
`--book` names one (e.g. the 10M book `benchmarks/generate_book.py --out` kept).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

END = "2026-10"


def _ensure_book(path: Path, customers: int) -> None:
    if (path / "book.json").is_file():
        meta = json.loads((path / "book.json").read_text())
        if meta["customers"] == customers and meta["months"][-1] == END:
            return
    from bookpulse.synthetic.simulate import BookSpec, generate_book

    print(f"  (generating a {customers:,}-customer book in {path})", flush=True)
    generate_book(
        BookSpec(customers=customers, months=24, seed=42, end_month=END), path, force=True
    )


def _champions(home: Path):
    import logging

    from bookpulse.adapters import tracking
    from bookpulse.adapters.champions import load_champions
    from bookpulse.specs import load_model_specs

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    tracking.configure(home)
    return load_champions(list(load_model_specs().values()))


def _catalogs():
    from bookpulse.specs import load_feature_catalog

    catalog = load_feature_catalog()
    return {e: catalog.for_entity(e) for e in ("customer", "card")}


def _job(book: Path, home: Path, out: Path, engine: str) -> dict:
    """The whole job, as `bookpulse score` runs it (check first, then score and publish)."""
    from bookpulse.adapters.publish import Timer
    from bookpulse.adapters.store import SqliteStore
    from bookpulse.jobs.score import check_month, score_month
    from bookpulse.specs import load_playbook

    started = time.perf_counter()
    timer = Timer(started=started)
    check_month(book, END)
    timer.lap("validate", started)
    champions = _champions(home)
    store = SqliteStore(out.with_name("online") / "features.sqlite")
    args = (book, END, champions, _catalogs(), load_playbook(), out)
    if engine == "local":
        manifest = score_month(*args, online=store, timer=timer)
    else:
        from bookpulse.jobs.score_spark import score_month_spark

        manifest = score_month_spark(*args, master=engine, online=store, timer=timer)
    return {
        "seconds": time.perf_counter() - started,
        "manifest": manifest.model_dump(mode="json"),
        "store_bytes": store.path.stat().st_size,
    }


def _floor(book: Path, home: Path) -> dict:
    """Floor and core on the same rows, a partition at a time (as the job holds them), in
    this one process: the features are built outside the timings."""
    import numpy as np
    import pandas as pd

    from bookpulse.book import io
    from bookpulse.features import build_features, read_frames
    from bookpulse.features.history import read_linked_facts
    from bookpulse.jobs.score import PARTITION_CUSTOMERS, customer_partitions
    from bookpulse.model.batch import score_rows, scored_population
    from bookpulse.model.core import model_matrix
    from bookpulse.model.explain import agreement, top_k
    from bookpulse.model.fit import prepare

    champions, catalogs = _champions(home), _catalogs()
    ids = io.read_static(book, "customers", ["customer_id"])["customer_id"].to_numpy()
    parts = customer_partitions(ids, PARTITION_CUSTOMERS)
    linked = pd.concat([read_linked_facts(book, END, own) for own in parts])
    floor = dict.fromkeys(champions, 0.0)
    core, rows, agree = 0.0, {"customers": 0, "cards": 0}, {}
    for i, own in enumerate(parts):
        frames = read_frames(book, END, customer_ids=own, linked=linked)
        customers, cards = build_features(frames, END)
        static = frames.customers[["customer_id", "branch_id", "rm_id"]]
        by_entity = {"customer": customers, "card": cards}
        if i == 0:  # compile once, as a job does (~1 s)
            score_rows(champions, catalogs, customers.head(200), cards.head(50), static)
        for name, c in champions.items():
            X = prepare(scored_population(c.spec, by_entity[c.spec.entity]), *_inputs(c))
            t = time.perf_counter()
            c.model.booster.predict(X, num_threads=0)
            floor[name] += time.perf_counter() - t
        t = time.perf_counter()
        score_rows(champions, catalogs, customers, cards, static)
        core += time.perf_counter() - t
        rows["customers"] += len(customers)
        rows["cards"] += len(cards)
        if i == 0:  # faithfulness: fast reasons against TreeSHAP on a sample
            for name, c in champions.items():
                frame = by_entity[c.spec.entity]
                sample = frame.sample(min(2000, len(frame)), random_state=0)
                _, credit = c.paths.score(model_matrix(c.model, sample))
                X = prepare(sample, *_inputs(c))
                t = time.perf_counter()
                shap = c.model.booster.predict(X, pred_contrib=True)[:, :-1]
                ms = (time.perf_counter() - t) / max(len(sample), 1) * 1000
                agree[name] = {
                    **agreement(top_k(credit), top_k(np.asarray(shap))),
                    "treeshap_ms_per_row": ms,
                }
    return {
        "rows": rows,
        "trees": {n: c.paths.trees for n, c in champions.items()},
        "floor": floor,
        "core": core,
        "agreement": agree,
    }


def _inputs(champion) -> tuple:
    return champion.model.features, champion.model.categories


def _stage(stage: str, book: Path, home: Path, out: Path, engine: str) -> None:
    warnings.filterwarnings("ignore")
    result = _job(book, home, out, engine) if stage == "job" else _floor(book, home)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({**result, "peak_rss_gib": rss}, default=str))


def _measure(stage: str, book: Path, home: Path, out: Path, engine: str = "local") -> dict:
    argv = [sys.executable, __file__, "--stage", stage, "--book", str(book)]
    argv += ["--home", str(home), "--out", str(out), "--engine", engine]
    proc = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(
    customers: int, book: Path, home: Path, workdir: Path, floor: bool, engine: str = "local"
) -> dict:
    out = workdir / f"scores_{customers}_{engine.split('[')[0]}" / END
    job = _measure("job", book, home, out, engine)
    m = job["manifest"]
    active = m["rows_in"]["active_customers"]
    print(f"batch scoring: {customers:,} customers ({active:,} active), month {END}, {engine}")
    print(
        f"  whole job          {job['seconds']:,.1f} s   peak RSS {job['peak_rss_gib']:.2f} GiB"
        "   (targets: 10M <= 900 s and 6 GiB; 1M <= 2 GiB)"
    )
    print("  engine             " + m["engine"])
    print(
        "  stages             "
        + ", ".join(f"{k} {v:.1f} s" for k, v in m["timings_seconds"].items())
    )
    rows = m["rows_out"]["customers"] + m["rows_out"]["cards"]
    print(
        f"  online store       {job['store_bytes'] / 2**30:.2f} GiB for {rows:,} rows: "
        f"{job['store_bytes'] / max(rows, 1):,.0f} bytes a row   (target <= ~600)"
    )
    print("  rows out           " + ", ".join(f"{k} {v:,}" for k, v in m["rows_out"].items()))
    if not floor:
        return job
    f = _measure("floor", book, home, out)
    total = sum(f["floor"].values())
    per_model = ", ".join(f"{k} {v:.1f} s, {f['trees'][k]} trees" for k, v in f["floor"].items())
    print(f"  floor              {total:,.1f} s   bare Booster.predict, every model ({per_model})")
    print(
        f"  scoring + reasons  {f['core']:,.1f} s   probabilities, top-3 reasons with "
        f"sentences, every model"
    )
    print(f"  ratio              {f['core'] / total:.2f}x the floor   (target <= 1.5x)")
    for name, a in f["agreement"].items():
        print(
            f"  reasons vs TreeSHAP {name:16s} top-1 same {a['top1_match']:.1%}, top-3 overlap "
            f"{a['top3_overlap']:.1%}  (TreeSHAP {a['treeshap_ms_per_row']:.2f} ms/row)"
        )
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("BOOKPULSE_HOME", "data")))
    parser.add_argument(
        "--customers", default="1000000", help="book sizes, comma-separated (e.g. 250000,1000000)"
    )
    parser.add_argument("--book", type=Path, default=None, help="an existing book (one size)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    parser.add_argument(
        "--spark",
        default=None,
        metavar="MASTER",
        help="also run the Spark engine on that master (e.g. local[2]) and print its wall "
        "time against the local engine's",
    )
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=["job", "floor"], default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.stage:
        _stage(args.stage, args.book, args.home.resolve(), args.out, args.engine)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bookpulse-bench-"))
    sizes = [int(n) for n in args.customers.split(",")]
    peaks = []
    for n in sizes:
        book = args.book or workdir / f"book_{n}"
        if args.book is None:
            _ensure_book(book, n)
        else:
            n = json.loads((book / "book.json").read_text())["customers"]
        job = _report(n, book, args.home.resolve(), workdir, not args.no_floor)
        peaks.append((n, job["peak_rss_gib"]))
        if args.spark:
            spark = _report(n, book, args.home.resolve(), workdir, False, args.spark)
            print(
                f"spark {args.spark} against local at {n:,} customers: "
                f"{spark['seconds'] / job['seconds']:.2f}x the wall time   (target <= 1.5x)"
            )
    for n, peak in peaks[1:]:
        print(
            f"peak RSS at {n:,} customers: {peak / peaks[0][1]:.2f}x that at {peaks[0][0]:,}"
            "   (target at 1M <= 1.3x the 250k figure)"
        )


if __name__ == "__main__":
    main()
