"""Benchmark: uplift against the simulator's truth (issue 14). On a synthetic book it trains the
scoring models and the uplift models through the real jobs (MLflow in a temporary home), then
prints for each uplift model, on its out-of-time test months:

* the realised Qini of its ranking against the realised Qini of the true effects' ranking, and
  the noise-free check: the true effects gained down its ranking as a share of what ranking by
  the true effects gains (expected gain ratio);

then scores the book's last month with the uplift champions and, as the review does
(`risk_against_value`), counts with the simulator's true effects (reach x effect) the customers
and the assets the treated rows keep (cards won for the activation list) of each list ranked by
risk and of the same list ranked by expected value, at equal RM capacity; and finally, for every
month with closed outcomes, whether the review's treated-vs-hold-out 95% interval covers the
true average effect of the listed rows.

Targets (issue 14): the uplift-ranked retention list keeps at least 1.3x the customers and the
assets the risk-ranked list keeps; each uplift model's Qini within 20% of the true effects';
the review's interval covers the true effect.

    .venv/bin/python benchmarks/uplift.py [--customers 20000] [--book DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

END = "2026-11"


def _book(workdir: Path, customers: int, given: Path | None) -> Path:
    if given is not None:
        return given
    from bookpulse.synthetic.simulate import BookSpec, generate_book

    out = workdir / f"book-{customers}"
    if not (out / "book.json").is_file():
        print(f"generating a {customers:,}-customer book (seed 42, 24 months to {END})")
        generate_book(BookSpec(customers=customers, months=24, seed=42, end_month=END), out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--book", type=Path)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import dataclasses

    from bookpulse.adapters import tracking
    from bookpulse.adapters.registry import load_scoring_model, load_uplift_model
    from bookpulse.book import io
    from bookpulse.jobs.review import caused_by_lists, risk_against_value
    from bookpulse.jobs.score import score_month
    from bookpulse.jobs.train import train_models
    from bookpulse.jobs.uplift import train_uplift
    from bookpulse.labels import labelled_months
    from bookpulse.model.core import Champion
    from bookpulse.model.uplift import UpliftChampion
    from bookpulse.specs import (
        load_feature_catalog,
        load_model_specs,
        load_playbook,
        load_uplift_specs,
    )

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        book = _book(work, args.customers, args.book)
        home = work / "home"
        meta = io.read_meta(book)
        print(
            f"book {book}: {meta['customers']:,} customers, "
            f"{meta['months'][0]}..{meta['months'][-1]}"
        )
        specs = load_model_specs()
        started = time.perf_counter()
        results = {r.model: r for r in train_models(book, home, list(specs.values()))}
        print(f"scoring models trained in {time.perf_counter() - started:.0f} s")
        tracking.configure(home)
        champions = {
            n: Champion(
                s,
                load_scoring_model(s.registered_name, results[n].version),
                results[n].version,
                results[n].run_id,
            )
            for n, s in specs.items()
        }
        print("\nuplift models, out-of-time test months (realised measures are noisy)")
        print(
            f"{'model':30} {'rows':>8} {'held out':>8} {'Qini':>9} {'Qini truth':>10} "
            f"{'ratio':>6} {'expected gain ratio':>20}"
        )
        uplifts: dict[str, list] = {}
        for name, (spec, outcome) in load_uplift_specs().items():
            r = train_uplift(book, home, spec, outcome)
            m = r.metrics
            ratio = m["qini"] / m["qini_truth_ranked"] if m["qini_truth_ranked"] else float("nan")
            print(
                f"{name:30} {m['rows_test']:>8,.0f} {m['control_rows_test']:>8,.0f} "
                f"{m['qini']:>9.4f} {m['qini_truth_ranked']:>10.4f} {ratio:>6.2f} "
                f"{m['expected_gain_ratio']:>20.0%}"
            )
            model = load_uplift_model(spec.registered_name, r.version)
            uplifts.setdefault(outcome.name, []).append(
                UpliftChampion(spec, model, r.version, r.run_id)
            )
        with_uplift = {
            n: dataclasses.replace(c, uplifts=tuple(uplifts.get(n, ())))
            for n, c in champions.items()
        }
        catalog = load_feature_catalog()
        catalogs = {e: catalog.for_entity(e) for e in ("customer", "card")}
        month = meta["months"][-1]
        out = work / "scores"
        score_month(book, month, with_uplift, catalogs, load_playbook(), out)
        against = risk_against_value(book, month, out, specs, load_playbook())
        print(f"\nlists of {month} at equal RM capacity, counted with the true effects")
        print(
            f"{'list':12} {'rows':>6} {'kept by risk':>13} {'by value':>9} {'ratio':>6} "
            f"{'assets by risk':>15} {'by value':>10} {'ratio':>6}"
        )
        for name, c in against.items():
            rk, vk, ra, va = c["risk_kept"], c["value_kept"], c["risk_assets"], c["value_assets"]
            print(
                f"{name:12} {c['value_rows']:>6,.0f} {rk:>13.1f} {vk:>9.1f} "
                f"{vk / rk if rk else float('nan'):>6.2f} {ra / 1e6:>14.1f}M "
                f"{va / 1e6:>9.1f}M {va / ra if ra else float('nan'):>6.2f}"
            )
        print("\nreview by cause: does the 95% interval cover the true average effect?")
        playbook = load_playbook()
        covered: dict[str, list[bool]] = {}
        last = labelled_months(meta["months"], specs["churn"].target)
        for m in last:
            found, _ = caused_by_lists(book, m, specs, playbook)
            for name, c in found.items():
                if c.true_effect is not None:
                    t = c.totals
                    covered.setdefault(name, []).append(
                        t["effect_low"] <= c.true_effect <= t["effect_high"]
                    )
        for name, hits in covered.items():
            print(f"{name:12} {sum(hits)} of {len(hits)} months covered ({np.mean(hits):.0%})")


if __name__ == "__main__":
    main()
