"""Benchmark: the monthly batch on a 1,000,000-customer book, local engine. Prints the wall
time and peak RSS of the whole job (validate, features, every model, reasons, lists,
write, and publishing the month's feature vectors to the SQLite online store, as `bookpulse
score` does), the online publish on its own, then, in one process on one prebuilt feature
frame, the floor (the same models' bare `Booster.predict`) against scoring plus reasons,
and the ratio; and how often the fast reasons name the same features as TreeSHAP.

Targets (issue 5): the job in at most 5 minutes and 6 GiB on 2 cores; scoring plus reasons
at most 2x the floor. Issue 6: the online publish well under 15 s.

    .venv/bin/python benchmarks/score_book.py [--workdir DIR] [--home DIR] [--customers N]

The champions come from `--home` (default $BOOKPULSE_HOME or ./data: run `make demo` first).
The book is generated into --workdir when missing (seed 42, 24 months ending 2026-10).
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


class _TimedStore:
    """The SQLite online store, timing its publish (documents built and written)."""

    def __init__(self, path: Path) -> None:
        from bookpulse.adapters.store import SqliteStore

        self.store = SqliteStore(path)
        self.seconds = 0.0
        self.rows: dict[str, int] = {}

    def put_month(self, snapshot) -> None:
        started = time.perf_counter()
        self.store.put_month(snapshot)
        self.seconds = time.perf_counter() - started
        self.rows = {e: len(f) for e, f in snapshot.rows.items()}


def _job(book: Path, home: Path, out: Path) -> dict:
    from bookpulse.jobs.score import score_month
    from bookpulse.specs import load_playbook

    champions = _champions(home)
    online = _TimedStore(out.with_name("online") / "features.sqlite")
    started = time.perf_counter()
    manifest = score_month(book, END, champions, _catalogs(), load_playbook(), out, online=online)
    return {
        "seconds": time.perf_counter() - started,
        "manifest": manifest.model_dump(mode="json"),
        "publish": {
            "seconds": online.seconds,
            "rows": online.rows,
            "bytes": online.store.path.stat().st_size,
        },
    }


def _floor(book: Path, home: Path) -> dict:
    """Floor and core on the same prebuilt frames, in this one process."""
    import numpy as np
    import pandas as pd

    from bookpulse.features import build_from_book
    from bookpulse.model.batch import score_rows, scored_population
    from bookpulse.model.core import model_matrix
    from bookpulse.model.explain import agreement, top_k
    from bookpulse.model.fit import prepare

    champions = _champions(home)
    customers, cards = build_from_book(book, END)
    static = pd.read_parquet(
        book / "customers.parquet", columns=["customer_id", "branch_id", "rm_id"]
    )
    frames = {"customer": customers, "card": cards}
    # warm the compiled code once (a real job compiles once per process too, ~1 s)
    score_rows(champions, _catalogs(), customers.head(200), cards.head(50), static)
    floor = {}
    for name, c in champions.items():
        frame = scored_population(c.spec, frames[c.spec.entity])
        X = prepare(frame, c.model.features, c.model.categories)
        t = time.perf_counter()
        c.model.booster.predict(X, num_threads=0)
        floor[name] = time.perf_counter() - t
    t = time.perf_counter()
    score_rows(champions, _catalogs(), customers, cards, static)
    core = time.perf_counter() - t
    # faithfulness: fast reasons against TreeSHAP on a sample
    agree = {}
    for name, c in champions.items():
        frame = frames[c.spec.target.entity]
        sample = frame.sample(min(2000, len(frame)), random_state=0)
        _, credit = c.paths.score(model_matrix(c.model, sample))
        X = prepare(sample, c.model.features, c.model.categories)
        t = time.perf_counter()
        shap = c.model.booster.predict(X, pred_contrib=True)[:, :-1]
        ms = (time.perf_counter() - t) / len(sample) * 1000
        agree[name] = {
            **agreement(top_k(credit), top_k(np.asarray(shap))),
            "treeshap_ms_per_row": ms,
        }
    return {
        "rows": {"customers": len(customers), "cards": len(cards)},
        "trees": {n: c.paths.trees for n, c in champions.items()},
        "floor": floor,
        "core": core,
        "agreement": agree,
    }


def _stage(stage: str, book: Path, home: Path, out: Path) -> None:
    warnings.filterwarnings("ignore")
    result = _job(book, home, out) if stage == "job" else _floor(book, home)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({**result, "peak_rss_gib": rss}, default=str))


def _measure(stage: str, book: Path, home: Path, out: Path) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--stage",
            stage,
            "--book",
            str(book),
            "--home",
            str(home),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("BOOKPULSE_HOME", "data")))
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--stage", choices=["job", "floor"], default=None)
    parser.add_argument("--book", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.stage:
        _stage(args.stage, args.book, args.home.resolve(), args.out)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bookpulse-bench-"))
    book = workdir / f"book_{args.customers}"
    _ensure_book(book, args.customers)
    out = workdir / "scores"
    job = _measure("job", book, args.home, out)
    m = job["manifest"]
    print(f"batch scoring: {args.customers:,} customers, month {END}, local engine")
    print(
        f"  whole job          {job['seconds']:,.1f} s   peak RSS {job['peak_rss_gib']:.2f} GiB"
        "   (target <= 300 s, 6 GiB; with the online publish)"
    )
    print(
        "  stages             "
        + ", ".join(f"{k} {v:.1f} s" for k, v in m["timings_seconds"].items())
    )
    pub = job["publish"]
    print(
        f"  online publish     {pub['seconds']:,.1f} s   SQLite, "
        + ", ".join(f"{n:,} {e}s" for e, n in pub["rows"].items())
        + f", {pub['bytes'] / 2**30:.2f} GiB   (target well under 15 s)"
    )
    print("  rows out           " + ", ".join(f"{k} {v:,}" for k, v in m["rows_out"].items()))
    f = _measure("floor", book, args.home, out)
    floor = sum(f["floor"].values())
    per_model = ", ".join(f"{k} {v:.1f} s, {f['trees'][k]} trees" for k, v in f["floor"].items())
    print(f"  floor              {floor:,.1f} s   bare Booster.predict, every model ({per_model})")
    print(
        f"  scoring + reasons  {f['core']:,.1f} s   probabilities, top-3 reasons with "
        f"sentences, every model"
    )
    print(f"  ratio              {f['core'] / floor:.2f}x the floor   (aim <= 2x)")
    for name, a in f["agreement"].items():
        print(
            f"  reasons vs TreeSHAP {name:16s} top-1 same {a['top1_match']:.1%}, top-3 overlap "
            f"{a['top3_overlap']:.1%}  (TreeSHAP {a['treeshap_ms_per_row']:.2f} ms/row)"
        )


if __name__ == "__main__":
    main()
