"""Benchmark: the online store's size and speed for a month of N customers.

Synthetic rows with the real column set and dtypes of the local engine's online rows (the
features the four champions use, plus as_of and the context: branch, RM, segment, tier),
about 1% of them with an eligible new card. Prints the documents' mean size, the seconds to
encode them and to write the month (`month_writer`: add in partitions of 250k, commit), the
SQLite file's size per customer, and the time to read 1,000 random customers back (the
API's largest request). With `--redis URL`, the same month in Redis too (memory per
customer from INFO, so use a Redis of its own: it is not flushed, but its other keys count).

Target (issue 13): at most about 600 bytes a customer for the whole SQLite file.

    .venv/bin/python benchmarks/online_store.py [--rows 1000000] [--partitions 4]
        [--interleaved] [--redis redis://127.0.0.1:6379/0]

`--interleaved` adds the partitions as Spark's do (customer id mod K) rather than in id ranges.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bookpulse.adapters.store import KEYS, RedisStore, SqliteStore, encode

F4 = [
    "aum_chg_12m", "aum_chg_3m", "aum_chg_6m", "aum_drawdown_12m", "aum_log", "aum_vol_6m",
    "branch_visits_3m", "complaints_12m", "complaints_3m", "dist_next_tier_log",
    "dist_next_tier_pct", "external_gap_log", "inactive_months_12m", "linked_aum_log_mean",
    "linked_max_tier", "logins_1m", "logins_3m", "logins_trend_3m", "logins_vs_12m",
    "net_flow_3m_ratio", "outflow_max_3m_ratio", "payroll_months_6m", "products_chg_12m",
    "products_chg_3m", "rm_contacts_12m", "rm_contacts_3m", "share_of_wallet",
    "time_deposit_share", "txn_amount_3m", "txn_count_1m", "txn_count_3m", "txn_trend_3m",
    "txn_vs_12m", "vas_months_12m", "vas_used_3m", "wealth_products_share",
]  # fmt: skip
F8 = ["external_assets_est", "loans_total"]
I1 = [
    "calendar_month", "has_credit_card", "has_funds", "has_insurance", "has_loan",
    "has_mobile_banking", "has_payroll", "has_time_deposit", "has_wealth", "household_tier_gap",
    "months_observed", "months_since_rm_contact", "payroll_enrolled", "payroll_stopped",
    "products_held",
]  # fmt: skip
I2 = ["age", "linked_active", "linked_attrited_3m", "linked_high_end", "links_total",
      "tenure_months"]  # fmt: skip
CATEGORIES = {
    "area_type": ["urban", "county", "rural"],
    "onboard_channel": ["branch", "payroll_deal", "referral", "online", "community_event",
                        "market_cluster", "agri_program", "club"],
    "region": ["north", "northeast", "east", "south", "central", "west"],
}  # fmt: skip
SEGMENTS = ["business_owner", "elderly", "merchant", "women", "grower", "mass"]
TIERS = ["potential", "effective", "mid", "high_end", "private"]
AS_OF = pd.Timestamp("2026-11-30")


def customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    cols: dict[str, object] = {"customer_id": np.arange(100_000, 100_000 + n), "as_of": AS_OF}
    for name in F4:
        v = rng.lognormal(1, 2, n).astype(np.float32)
        v[rng.random(n) < 0.3] *= -1
        v[rng.random(n) < 0.05] = np.nan
        cols[name] = v
    for name in F8:
        cols[name] = np.round(rng.lognormal(8, 2, n), -2)
    for name in I1:
        cols[name] = rng.integers(0, 13, n).astype(np.int8)
    for name in I2:
        cols[name] = rng.integers(0, 300, n).astype(np.int16)
    for name, levels in CATEGORIES.items():
        cols[name] = pd.Categorical.from_codes(rng.integers(0, len(levels), n), levels)
    frame = pd.DataFrame(cols)
    frame = frame[["customer_id", "as_of", *sorted(frame.columns[2:])]]  # features by name
    frame["branch_id"] = rng.integers(1, 200, n).astype(np.int32)
    frame["rm_id"] = rng.integers(1, 3000, n).astype(np.int32)
    frame["segment"] = pd.Series(rng.choice(SEGMENTS, n), dtype="str")
    frame["tier"] = pd.Series(rng.choice(TIERS, n), dtype="str")
    return frame


def cards(owners: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    n = len(owners)
    return pd.DataFrame(
        {
            "card_id": np.arange(9_000_000, 9_000_000 + n),
            "as_of": AS_OF,
            "card_product": pd.Categorical.from_codes(
                rng.integers(0, 5, n), ["standard", "gold", "platinum", "youth", "senior"]
            ),
            "credit_limit": np.round(rng.lognormal(10, 1, n), -3).astype(np.float32),
            "days_since_issue": rng.integers(0, 90, n).astype(np.int16),
            "holder_active": rng.integers(0, 2, n).astype(np.int8),
            "holder_aum_log": rng.normal(10, 3, n).astype(np.float32),
            "holder_segment": pd.Categorical.from_codes(rng.integers(0, 6, n), SEGMENTS),
            "holder_tier": pd.Categorical.from_codes(rng.integers(0, 5, n), TIERS),
            "customer_id": owners,
            "branch_id": rng.integers(1, 200, n).astype(np.int32),
            "rm_id": rng.integers(1, 3000, n).astype(np.int32),
            "segment": pd.Series(rng.choice(SEGMENTS, n), dtype="str"),
            "tier": pd.Series(rng.choice(TIERS, n), dtype="str"),
        }
    )


def partitions(frame: pd.DataFrame, key: str, k: int, interleaved: bool) -> list[pd.DataFrame]:
    if interleaved:
        return [frame.loc[frame[key] % k == p] for p in range(k)]
    return [frame.iloc[p * len(frame) // k : (p + 1) * len(frame) // k] for p in range(k)]


def write(store, month: dict[str, list[pd.DataFrame]], dists: dict) -> float:
    started = time.perf_counter()
    with store.month_writer("2026-11") as w:
        for entity, parts in month.items():
            for part in parts:
                w.add(entity, part)
        w.commit(dists)
    return time.perf_counter() - started


def read_ms(store, ids: np.ndarray, rng: np.random.Generator) -> float:
    times = []
    for _ in range(20):
        ask = rng.choice(ids, 1000, replace=False).tolist()
        started = time.perf_counter()
        got = store.get("customer", ask)
        times.append(time.perf_counter() - started)
        assert len(got) == 1000
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--interleaved", action="store_true")
    parser.add_argument("--redis", default=None, help="also measure this Redis (redis://...)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cust = customers(args.rows, rng)
    card = cards(rng.choice(cust["customer_id"].to_numpy(), args.rows // 100), rng)
    dists = {p: rng.random(args.rows) for p in ("churn", "upgrade", "wealth")}
    dists["activation"] = rng.random(len(card))
    print(f"rows: {len(cust):,} customers ({cust.shape[1] - 1} columns), {len(card):,} cards")

    started = time.perf_counter()
    sizes = [len(d) for batch in encode(cust, KEYS["customer"]) for _, d in batch]
    print(f"encode customers: {time.perf_counter() - started:.2f} s, {np.mean(sizes):.0f} B a doc")

    k = args.partitions
    month = {
        "customer": partitions(cust, "customer_id", k, args.interleaved),
        "card": partitions(card, "card_id", k, args.interleaved),
    }
    with tempfile.TemporaryDirectory(prefix="bookpulse-store-") as tmp:
        sqlite = SqliteStore(Path(tmp) / "features.sqlite")
        seconds = write(sqlite, month, dists)
        size = os.path.getsize(sqlite.path)
        order = "interleaved" if args.interleaved else "in id ranges"
        print(f"sqlite: write {seconds:.2f} s ({k} partitions {order}, encode included)")
        print(f"sqlite: {size / 2**20:.1f} MiB, {size / len(cust):.0f} B a customer")
        ms = read_ms(sqlite, cust["customer_id"].to_numpy(), rng)
        print(f"sqlite: get 1,000 random customers {ms:.1f} ms (median of 20)")

    if args.redis:
        store = RedisStore(args.redis, namespace="bench-store")
        before = int(store.client.info("memory")["used_memory"])
        seconds = write(store, month, dists)
        used = int(store.client.info("memory")["used_memory"]) - before
        mib, per = used / 2**20, used / len(cust)
        print(f"redis: write {seconds:.2f} s, {mib:.1f} MiB, {per:.0f} B a customer")
        ms = read_ms(store, cust["customer_id"].to_numpy(), rng)
        print(f"redis: get 1,000 random customers {ms:.1f} ms (median of 20)")


if __name__ == "__main__":
    main()
