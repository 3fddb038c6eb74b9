"""Reasons an RM trusts: the playbook's lists' reasons before and after, on the same scores.

For each list of the playbook (its rows in the latest scored month of a home) and for each
model's whole scored population, prints:

- the share of rows whose lead (first) sentence follows the most common pattern (the sentence
  with its numbers masked: "transactions last month -#% against the 12-month average; ..."),
  how many distinct lead patterns there are, and the three most common with their shares;
- how often reasons 1 and 2 come from the same feature group (features/<group>.yaml), and how
  often the three reasons come from three groups;
- the share of rows whose most common pair of first and second sentence patterns it shows;
- the figures a banker would not believe printed in any of the three reasons (growth beyond
  +-1,000%, amounts under CNY 100);
- how often the lead's |credit| is within 10% of the best other group's (a near tie).

"before" is the old selection (plain top-3 by |credit|, `top_k`) with the catalog's plain
phrases (`reason` alone: no `reason_bands`; the model specs' hints as they are today);
"after" is the scoring core's (`pick_reasons`, the bands). Both on the very same credits: the
lead feature is the same row by row, only its sentence differs.

Last, the API's cost of one call: `score_records` on one customer, per model (the best of 5
passes over 500 customers), with the feature groups cached per champion and catalog as the
scoring core does, and worked out on every call as the first grouped version did.

    .venv/bin/python benchmarks/reasons.py [--home /tmp/reasons-home]

The home is a `bookpulse demo` home; when it has no scored month yet, the demo is run into it
first (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

DIGITS = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")  # 1,234,567.8 (not a comma after it)
PERCENT = re.compile(r"([+-]?[\d,]+(?:\.\d+)?)%")
CNY = re.compile(r"CNY ([\d,]+(?:\.\d+)?)")
NEAR = 0.10  # a lead within 10% of the best other group's credit: a near tie


def pattern(sentence: str) -> str:
    return DIGITS.sub("#", sentence)


def absurd(sentence: str) -> int:
    """Figures beyond +-1,000% (growth past tenfold) or amounts under CNY 100."""
    n = sum(abs(float(m.replace(",", ""))) > 1000 for m in PERCENT.findall(sentence))
    return n + sum(float(m.replace(",", "")) < 100 for m in CNY.findall(sentence))


def _latest_month(home: Path) -> str | None:
    scores = home / "scores"
    months = sorted(p.name for p in scores.glob("*") if (p / "lists").is_dir())
    return months[-1] if months else None


def _ensure_home(home: Path) -> str:
    month = _latest_month(home)
    if month is None:
        print(f"(no scored month in {home}: running `bookpulse demo` into it, ~4 minutes)")
        exe = Path(sys.executable).with_name("bookpulse")
        env = {**os.environ, "BOOKPULSE_HOME": str(home)}
        subprocess.run([str(exe), "demo"], env=env, check=True, stdout=subprocess.DEVNULL)
        month = _latest_month(home)
        if month is None:
            raise SystemExit(f"the demo scored no month in {home}")
    return month


def measure(spec, features, catalog, frame, credit, top) -> dict:
    """The figures above for one selection (`top`) and catalog of phrases."""
    import numpy as np

    from bookpulse.model.core import feature_groups, reason_columns

    cols = reason_columns(spec, catalog, frame, credit, top, features)
    n = len(frame)
    leads = Counter(pattern(s) for s in cols["reason1_sentence"])
    lead, lead_n = leads.most_common(1)[0] if n else ("", 0)
    top3 = [(p, c / n) for p, c in leads.most_common(3)]
    pairs = Counter(
        (pattern(a), pattern(b))
        for a, b in zip(cols["reason1_sentence"], cols["reason2_sentence"], strict=True)
    )
    groups = feature_groups(features, catalog)[top]
    same12 = groups[:, 0] == groups[:, 1]
    three = (groups[:, 0] != groups[:, 1]) & (groups[:, 0] != groups[:, 2])
    three &= groups[:, 1] != groups[:, 2]
    bad = sum(absurd(s) for j in (1, 2, 3) for s in cols[f"reason{j}_sentence"])
    bad_examples = [s for j in (1, 2, 3) for s in cols[f"reason{j}_sentence"] if absurd(s)][:2]
    return {
        "rows": n,
        "lead_share": lead_n / n if n else 0.0,
        "lead": lead,
        "top3": top3,
        "lead_patterns": len(leads),
        "pair_share": pairs.most_common(1)[0][1] / n if n else 0.0,
        "same_group_12": float(np.mean(same12)) if n else 0.0,
        "three_groups": float(np.mean(three)) if n else 0.0,
        "absurd": bad,
        "absurd_examples": bad_examples,
    }


def near_ties(features, catalog, credit) -> float:
    """Share of rows whose lead's |credit| is within NEAR of the best other group's."""
    import numpy as np

    from bookpulse.model.core import feature_groups

    if not len(credit):
        return 0.0
    a = np.abs(credit)
    groups = feature_groups(features, catalog)
    lead = a.argmax(axis=1)
    other = np.where(groups[None, :] != groups[lead][:, None], a, 0.0).max(axis=1)
    top = a[np.arange(len(a)), lead]
    return float(np.mean((top > 0) & (top - other <= NEAR * top)))


def report(name: str, before: dict, after: dict, ties: float) -> None:
    print(f"\n{name}: {after['rows']:,} rows")
    rows = [
        ("most common lead pattern, share of rows", "lead_share", "{:.1%}"),
        ("distinct lead patterns", "lead_patterns", "{:,}"),
        ("most common reason 1+2 pattern pair, share", "pair_share", "{:.1%}"),
        ("reasons 1 and 2 from the same group", "same_group_12", "{:.1%}"),
        ("reasons 1, 2 and 3 from three groups", "three_groups", "{:.1%}"),
        ("absurd figures printed (all 3 reasons)", "absurd", "{:,}"),
    ]
    print(f"  {'':46s} {'before':>9s} {'after':>9s}")
    for label, key, fmt in rows:
        print(f"  {label:46s} {fmt.format(before[key]):>9s} {fmt.format(after[key]):>9s}")
    print(f"  lead within {NEAR:.0%} of the best other group's credit: {ties:.1%} of rows")
    for label, m in (("before", before), ("after", after)):
        print(f"  top lead patterns {label}:")
        for p, share in m["top3"]:
            print(f"    {share:6.1%}  {p}")
    for s in before["absurd_examples"]:
        print(f"  absurd before, e.g.: {s}")
    for s in after["absurd_examples"]:
        print(f"  absurd after, e.g.: {s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/reasons-home"))
    args = parser.parse_args()
    home = args.home.resolve()
    os.environ["BOOKPULSE_HOME"] = str(home)
    month = _ensure_home(home)

    import logging

    import numpy as np
    import pandas as pd

    from bookpulse.adapters import tracking
    from bookpulse.adapters.champions import load_champion
    from bookpulse.model.batch import scored_population
    from bookpulse.model.core import explain, feature_groups, model_matrix
    from bookpulse.model.explain import top_k
    from bookpulse.specs import load_feature_catalog, load_model_specs, load_playbook

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    tracking.configure(home)
    full = load_feature_catalog()
    specs, playbook = load_model_specs(), load_playbook()
    as_of = f"{month[:4]}-{month[4:]}" if "-" not in month else month
    features = {
        "customer": pd.read_parquet(home / "features" / as_of / "customers.parquet"),
        "card": pd.read_parquet(home / "features" / as_of / "cards.parquet"),
    }
    print(f"reasons on {home}, month {as_of}: before = plain top-3 by |credit| and phrases ")
    print("without reason_bands; after = one group per reason while another has credit, bands")

    def both(spec, frame, label):
        catalog = full.for_entity(spec.entity)
        plain = {n: s.model_copy(update={"reason_bands": []}) for n, s in catalog.items()}
        champ = load_champion(spec)
        frame = frame.reset_index(drop=True)
        _, credit, top = explain(champ, model_matrix(champ.model, frame), catalog)
        old = top_k(credit, top.shape[1])
        assert np.array_equal(old[:, 0], top[:, 0])  # the lead is the strongest either way
        report(
            label,
            measure(spec, champ.model.features, plain, frame, credit, old),
            measure(spec, champ.model.features, catalog, frame, credit, top),
            near_ties(champ.model.features, catalog, credit),
        )

    for list_name, action_list in playbook.lists.items():
        spec = specs[action_list.model]
        path = home / "scores" / month / "lists" / f"{list_name}.parquet"
        if not path.is_file():
            print(f"\nlist {list_name}: no list file in {path.parent}")
            continue
        listed = pd.read_parquet(path)
        key = spec.id_column
        frame = features[spec.entity]
        frame = frame.loc[frame[key].isin(listed[key])]
        both(spec, frame, f"list {list_name} (model {spec.name})")

    for spec in specs.values():
        frame = scored_population(spec, features[spec.entity])
        both(spec, frame, f"model {spec.name}, every row scored")

    print("\nAPI, score_records on one customer a call (best of 5 passes over 500 customers):")
    for spec in specs.values():
        if spec.entity != "customer":
            continue
        champ = load_champion(spec)
        catalog = full.for_entity(spec.entity)
        frame = features[spec.entity][champ.model.features].head(500)
        records = [
            {f: (None if pd.isna(v) else v) for f, v in r.items()} for r in frame.to_dict("records")
        ]
        cached = per_call(champ, records, catalog)
        uncached = champ.__class__.reason_groups
        try:  # as the first grouped version: the groups worked out on every call
            champ.__class__.reason_groups = lambda self, cat: feature_groups(
                self.model.features, cat
            )
            each_call = per_call(champ, records, catalog)
        finally:
            champ.__class__.reason_groups = uncached
        print(
            f"  {spec.name:16s} {cached:6.1f} us a call "
            f"(groups worked out on every call: {each_call:6.1f} us)"
        )


def per_call(champ, records: list[dict], catalog) -> float:
    """Microseconds of one `score_records` call on one record: the best of 5 passes."""
    import time

    from bookpulse.model.core import score_records

    for r in records[:50]:
        score_records(champ, [r], catalog)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for r in records:
            score_records(champ, [r], catalog)
        best = min(best, (time.perf_counter() - start) / len(records))
    return best * 1e6


if __name__ == "__main__":
    main()
