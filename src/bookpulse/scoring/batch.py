"""`bookpulse score`: the monthly batch. Every active customer and every new unused card of
month T scored by the champions, with reasons; the action lists; a manifest for auditors.

    score_month(book, home, "2026-10")   ->  $BOOKPULSE_HOME/scores/2026-10/
        customers.parquet        one row per active customer: churn_* and upgrade_* scores
        cards.parquet            one row per card issued in T and unused at T: activation_*
        lists/<list>.csv|parquet ranked per branch and RM, with reason and suggested action
        manifest.json            rows in and out, model versions, spec hashes, checksums, timings

Everything is written to a temporary folder beside the target and moved into place only when
complete, so a crash leaves nothing half-published and a re-run replaces the month whole.
The work itself is pure functions of frames (`score_rows`, `add_ranks`, `build_lists`), which
the Spark engine (`scoring.spark`) runs over partitions of customers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bookpulse.book import io
from bookpulse.book.validate import describe_problems, validate_book
from bookpulse.features import build_features, read_frames
from bookpulse.features.history import HISTORY_MONTHS, window_months
from bookpulse.scoring.actions import action_list
from bookpulse.scoring.core import Champion, percentile_and_decile, rank_in_book, score_frame
from bookpulse.specs import FeatureSpec, Playbook

# model -> column prefix in the score tables
PREFIX = {"churn": "churn", "tier_upgrade": "upgrade", "card_activation": "activation"}
CHUNK_ROWS = 100_000
CUSTOMER_BASE = ["customer_id", "as_of", "branch_id", "rm_id", "segment", "tier"]
CARD_BASE = ["card_id", "customer_id", "as_of", "branch_id", "rm_id", "segment", "tier"]

Progress = Callable[[int], None]  # called with the rows just scored


class ScoringError(Exception):
    """The month cannot be scored; the message says what is wrong and what to do."""


def require_features(champions: dict[str, Champion], frames: dict[str, pd.DataFrame]) -> None:
    """Refuse a model whose features the feature frame does not have."""
    for champ in champions.values():
        frame = frames[champ.spec.target.entity]
        missing = [f for f in champ.model.features if f not in frame.columns]
        if missing:
            raise ScoringError(
                f"{champ.spec.registered_name} version {champ.version} needs features the "
                f"feature pipeline no longer makes: {', '.join(missing)}. Retrain it "
                f"(`bookpulse train {champ.name}`) and promote the new version."
            )


def _prefixed(scores: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    body = scores.drop(columns=["as_of"]).set_index(key)
    return body.add_prefix(f"{prefix}_")


def _score_chunked(
    champ: Champion, frame: pd.DataFrame, catalog, progress: Progress | None
) -> pd.DataFrame:
    parts = []
    for start in range(0, len(frame), CHUNK_ROWS):
        chunk = frame.iloc[start : start + CHUNK_ROWS]
        parts.append(score_frame(champ, chunk, catalog))
        if progress:
            progress(len(chunk))
    if not parts:
        return score_frame(champ, frame, catalog)
    return pd.concat(parts, ignore_index=True)


def score_rows(
    champions: dict[str, Champion],
    catalogs: dict[str, dict[str, FeatureSpec]],
    customers: pd.DataFrame,
    cards: pd.DataFrame,
    static: pd.DataFrame,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer rows (churn for every active customer; upgrade for those below the top tier)
    and card rows (activation), with every score column but percentile and decile.

    `customers` and `cards` are feature frames as of one month; `static` is the book's
    customers table (branch and RM)."""
    where = static.set_index("customer_id")[["branch_id", "rm_id"]]
    cust = customers[["customer_id", "as_of"]].copy()
    cust[["branch_id", "rm_id"]] = where.reindex(cust["customer_id"]).to_numpy()
    cust["segment"] = customers["segment"].astype("string").to_numpy()
    cust["tier"] = customers["tier"].astype("string").to_numpy()
    cust = cust.set_index("customer_id")
    for name in ("churn", "tier_upgrade"):
        if name not in champions:
            continue
        frame = scored_population(name, customers)
        scores = _score_chunked(champions[name], frame, catalogs["customer"], progress)
        cust = cust.join(_prefixed(scores, "customer_id", PREFIX[name]), how="left")
    cust = cust.reset_index()

    card = cards[["card_id", "customer_id", "as_of"]].copy()
    card[["branch_id", "rm_id"]] = where.reindex(card["customer_id"]).to_numpy()
    card["segment"] = cards["holder_segment"].astype("string").to_numpy()
    card["tier"] = cards["holder_tier"].astype("string").to_numpy()
    card = card.set_index("card_id")
    if "card_activation" in champions:
        scores = _score_chunked(champions["card_activation"], cards, catalogs["card"], progress)
        card = card.join(_prefixed(scores, "card_id", PREFIX["card_activation"]), how="left")
    return cust, card.reset_index()


def scored_population(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a model scores: every row, but for tier upgrade the customers below the top
    tier (a private customer has no higher tier to reach)."""
    if name == "tier_upgrade":
        return frame.loc[frame["tier"] != "private"]
    return frame


def add_ranks(
    table: pd.DataFrame, prefix: str, below: pd.Series | None = None, n: int | None = None
) -> pd.DataFrame:
    """Insert `<prefix>_percentile` and `<prefix>_decile` after `<prefix>_probability`.

    Locally the ranks come from the table itself; Spark passes each row's count of strictly
    lower probabilities in the book (`below`) and the book's count (`n`)."""
    p = table[f"{prefix}_probability"]
    scored = p.notna()
    ranks = pd.DataFrame(index=table.index, columns=["percentile", "decile"], dtype=float)
    if below is None:
        got = rank_in_book(p.loc[scored])
    else:
        got = percentile_and_decile(below.loc[scored].to_numpy(float), int(n or 0), p.index[scored])
    ranks.loc[scored, "percentile"] = got["percentile"]
    ranks.loc[scored, "decile"] = got["decile"]
    out = table.copy()
    at = out.columns.get_loc(f"{prefix}_probability") + 1
    out.insert(at, f"{prefix}_percentile", ranks["percentile"].astype("float64"))
    out.insert(at + 1, f"{prefix}_decile", ranks["decile"].astype("Int8"))
    return out


def build_lists(
    customers: pd.DataFrame,
    cards: pd.DataFrame,
    rms: pd.DataFrame,
    branches: pd.DataFrame,
    playbook: Playbook,
) -> dict[str, pd.DataFrame]:
    out = {}
    for name, lst in playbook.lists.items():
        scored = cards if lst.model == "card_activation" else customers
        prefix = PREFIX[lst.model]
        if f"{prefix}_probability" not in scored:
            continue
        out[name] = action_list(name, lst, scored, prefix, rms, branches)
    return out


# --- the job: I/O at the edges ------------------------------------------------------------


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(now - started, 3)
        return now


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_table(df: pd.DataFrame, folder: Path, name: str, csv: bool = False) -> list[Path]:
    paths = [folder / f"{name}.parquet"]
    io.write_parquet(df, paths[0])
    if csv:
        paths.append(folder / f"{name}.csv")
        df.to_csv(paths[1], index=False, date_format="%Y-%m-%d", float_format="%.6f")
    return paths


def file_entries(folder: Path) -> dict[str, dict]:
    """sha256 and size of every file under `folder` (the manifest's checksums)."""
    return {
        str(p.relative_to(folder)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith((".", "_"))
    }


def check_month(book: Path, as_of: str) -> None:
    """Refuse a book that fails validation on what month `as_of` reads."""
    meta = io.read_meta(book)
    as_of = io.month_key(as_of)
    if as_of not in meta["months"]:
        raise ScoringError(
            f"{as_of} is not a month of the book at {book} ({meta['months'][0]} .. "
            f"{meta['months'][-1]}); pick --as-of within it"
        )
    window = [m for m in window_months(as_of, HISTORY_MONTHS) if m in meta["months"]]
    problems = validate_book(book, months=window)
    if problems:
        raise ScoringError(describe_problems(book, problems))


def default_out(home: Path, as_of: str) -> Path:
    return Path(home) / "scores" / io.month_key(as_of)


def score_month(
    book: Path,
    home: Path,
    as_of: str,
    champions: dict[str, Champion],
    catalogs: dict[str, dict[str, FeatureSpec]],
    playbook: Playbook,
    out: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    online=None,
) -> dict:
    """Score month `as_of` of `book` locally and publish it at `out`; return the manifest.
    With `online` (an online store), the month's feature vectors go there too, for the API.

    `progress(stage, done, total)` is told the rows scored so far."""
    t = Timer()
    started = t0 = time.perf_counter()
    as_of = io.month_key(as_of)
    out = Path(out) if out else default_out(home, as_of)
    check_month(book, as_of)
    t0 = t.lap("validate", t0)
    customers_f, cards_f = build_features(read_frames(book, as_of), as_of)
    require_features(champions, {"customer": customers_f, "card": cards_f})
    t0 = t.lap("features", t0)
    static = io.read_static(book, "customers", ["customer_id", "branch_id", "rm_id"])
    rms = io.read_static(book, "rms")
    branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
    total = sum(
        len(customers_f) if c.spec.target.entity == "customer" else len(cards_f)
        for c in champions.values()
    )
    done = 0

    def tick(rows: int) -> None:
        nonlocal done
        done += rows
        if progress:
            progress("scoring", done, total)

    cust, card = score_rows(champions, catalogs, customers_f, cards_f, static, tick)
    for prefix in ("churn", "upgrade"):
        if f"{prefix}_probability" in cust:
            cust = add_ranks(cust, prefix)
    if "activation_probability" in card:
        card = add_ranks(card, "activation")
    t0 = t.lap("scoring", t0)
    lists = build_lists(cust, card, rms, branches, playbook)
    t0 = t.lap("lists", t0)
    rows_in = {
        "customers_in_book": int(len(static)),
        "active_customers": int(len(customers_f)),
        "new_unused_cards": int(len(cards_f)),
    }
    manifest = publish(
        out,
        as_of,
        book,
        "local",
        champions,
        rows_in,
        {"customers": cust, "cards": card},
        lists,
        t,
        started,
    )
    if online is not None:
        online.publish(online_snapshot(as_of, champions, customers_f, cards_f, cust, card))
    return manifest


def online_rows(
    champions: dict[str, Champion], entity: str, features: pd.DataFrame, table: pd.DataFrame
) -> pd.DataFrame:
    """One entity's rows for the online store (one document each): the id, `as_of`, the
    features the champions use and the row's context (branch, RM, segment, tier) from its
    score `table`. The Spark engine builds the same rows in its tasks."""
    key = "card_id" if entity == "card" else "customer_id"
    used = sorted(
        {f for c in champions.values() if c.spec.target.entity == entity for f in c.model.features}
    )
    context = ["customer_id", "branch_id", "rm_id", "segment", "tier"]
    ctx = table[[key, *[c for c in context if c != key]]].set_index(key)
    feats = features[[key, "as_of", *[f for f in used if f not in ctx.columns]]]
    return feats.set_index(key).join(ctx, how="left").reset_index()


def online_snapshot(
    as_of: str,
    champions: dict[str, Champion],
    customers_f: pd.DataFrame,
    cards_f: pd.DataFrame,
    cust: pd.DataFrame,
    card: pd.DataFrame,
):
    """What the API needs of this month: each row's features (those the champions use) with
    its context, and the month's score distributions (for percentiles)."""
    from bookpulse.serving.store import Snapshot

    dists = {
        prefix: table[f"{prefix}_probability"].dropna().to_numpy()
        for prefix, table in (("churn", cust), ("upgrade", cust), ("activation", card))
        if f"{prefix}_probability" in table
    }
    return Snapshot(
        as_of=as_of,
        rows={
            "customer": online_rows(champions, "customer", customers_f, cust),
            "card": online_rows(champions, "card", cards_f, card),
        },
        distributions=dists,
    )


def publish(
    out: Path,
    as_of: str,
    book: Path,
    engine: str,
    champions: dict[str, Champion],
    rows_in: dict[str, int],
    tables: dict[str, pd.DataFrame | Callable[[Path], int]],
    lists: dict[str, pd.DataFrame],
    t: Timer,
    started: float,
) -> dict:
    """Write everything into a temporary folder beside `out`, then swap it into place.

    A table may be a frame, or a function that writes `<name>.parquet` itself (Spark) and
    returns its row count."""
    with io.publishing(out, replace=True) as tmp:
        t0 = time.perf_counter()
        rows_out = {}
        for name, table in tables.items():
            if callable(table):
                rows_out[name] = int(table(tmp / f"{name}.parquet"))
            else:
                _write_table(table, tmp, name)
                rows_out[name] = int(len(table))
        (tmp / "lists").mkdir()
        for name, df in lists.items():
            _write_table(df, tmp / "lists", name, csv=True)
            rows_out[f"lists/{name}"] = int(len(df))
        t.lap("write", t0)
        t.seconds["total"] = round(time.perf_counter() - started, 3)
        manifest = {
            "as_of": as_of,
            "book": str(Path(book).resolve()),
            "book_generator": io.read_meta(book).get("generator"),
            "engine": engine,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows_in": rows_in,
            "rows_out": rows_out,
            "models": {
                c.name: {
                    "registered_name": c.spec.registered_name,
                    "version": c.version,
                    "run_id": c.run_id,
                    "spec_hash": c.spec.spec_hash,
                    "trees": c.paths.trees,
                }
                for c in champions.values()
            },
            "files": file_entries(tmp),
            "timings_seconds": t.seconds,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_scores(out: Path, name: str) -> pd.DataFrame:
    """A published score table (a file, or Spark's folder of parts), in id order."""
    df = pd.read_parquet(Path(out) / f"{name}.parquet")
    key = "card_id" if name == "cards" else "customer_id"
    return df.sort_values(key, kind="stable").reset_index(drop=True)
