"""Publishing a scored month: the engines write its files into the temporary folder
`io.publishing` swaps into place whole, ending with `write_month` (tables, lists and a typed
manifest: counts, model versions, checksums, timings, for auditors).

    $BOOKPULSE_HOME/scores/2026-10/
        customers.parquet        one row per active customer: <prefix>_* of each customer model
        cards.parquet            one row per card issued in T and unused at T: <prefix>_* likewise
        lists/<list>.csv|parquet ranked per branch and RM, with reason and suggested action
        manifest.json            `Manifest`
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ValidationError

from bookpulse.book import io
from bookpulse.domain import ENTITY_KEYS, ENTITY_TABLES
from bookpulse.errors import BookpulseError
from bookpulse.model.core import Champion

MANIFEST_FILE = "manifest.json"


class ManifestModel(BaseModel):
    registered_name: str
    version: str
    run_id: str
    spec_hash: str
    trees: int


class Manifest(BaseModel):
    """What a published month holds and how it was made (`manifest.json`)."""

    as_of: str
    book: str
    book_generator: str | None = None
    engine: str
    written_at: str
    rows_in: dict[str, int]
    rows_out: dict[str, int]
    models: dict[str, ManifestModel]
    uplifts: dict[str, ManifestModel] = {}  # the uplift models whose effects ranked lists
    files: dict[str, dict[str, str | int]]
    timings_seconds: dict[str, float]
    short_history: bool = False  # scored with less history than the features read
    # what the online store (the API) holds of this month: "published"; "pending" while (or,
    # if the run died, since) the files are out but the store is not; "not asked"; or why not
    # ("not recorded": a month published before this was kept)
    online_store: str = "not recorded"

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of the month published at `folder`."""
        path = Path(folder) / MANIFEST_FILE
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError:
            raise BookpulseError(
                f"{folder} holds no published month ({MANIFEST_FILE} is missing): score the "
                "month first (`bookpulse score --as-of YYYY-MM`)"
            ) from None
        except ValidationError as exc:
            raise BookpulseError(
                f"{path} is not a scoring manifest ({exc.error_count()} problem(s), first: "
                f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); re-score the month"
            ) from None


def default_out(home: Path, as_of: str) -> Path:
    return Path(home) / "scores" / io.month_key(as_of)


def check_writable(path: Path, what: str, folder: bool = True) -> None:
    """Refuse, before any work, a place that cannot be written: `path` must be a folder (or a
    file, with `folder=False`) or not exist yet, and the nearest folder above it that exists
    must be writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a file" if folder else "a folder"
        raise BookpulseError(f"{what} {path} is {kind}: give a {'folder' if folder else 'file'}")
    above = path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise BookpulseError(f"{what} {path} cannot be made: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BookpulseError(f"{what} {path} cannot be written (no write permission on {above})")


@dataclass
class Timer:
    """Seconds per stage of a job, and when it started (for the total)."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def lap(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(now - started, 3)
        return now

    def add(self, name: str, started: float) -> float:
        """Like `lap`, adding to the stage's seconds so far (a stage run partition by
        partition)."""
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - started, 3)
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


def write_month(
    tmp: Path,
    as_of: str,
    book: Path,
    engine: str,
    champions: dict[str, Champion],
    rows_in: dict[str, int],
    tables: dict[str, pd.DataFrame | Callable[[Path], int]],
    lists: dict[str, pd.DataFrame],
    t: Timer,
    started: float,
    short_history: bool = False,
    online_store: str = "not asked",
) -> Manifest:
    """Write the month's tables, lists and manifest into `tmp` (the folder `io.publishing`
    swaps into place). A table may be a frame, or a function that writes `<name>.parquet`
    itself (or finds it written) and returns its row count."""
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
    manifest = Manifest(
        as_of=as_of,
        book=str(Path(book).resolve()),
        book_generator=io.read_meta(book).get("generator"),
        engine=engine,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
        rows_in=rows_in,
        rows_out=rows_out,
        models={
            c.name: ManifestModel(
                registered_name=c.spec.registered_name,
                version=c.version,
                run_id=c.run_id,
                spec_hash=c.spec.spec_hash,
                trees=c.paths.trees,
            )
            for c in champions.values()
        },
        uplifts={
            u.spec.name: ManifestModel(
                registered_name=u.spec.registered_name,
                version=u.version,
                run_id=u.run_id,
                spec_hash=u.spec.spec_hash,
                trees=u.model.effect_treated.num_trees() + u.model.effect_control.num_trees(),
            )
            for c in champions.values()
            for u in c.uplifts
        },
        files=file_entries(tmp),
        timings_seconds=t.seconds,
        short_history=short_history,
        online_store=online_store,
    )
    (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def mark_online(out: Path, status: str) -> Manifest:
    """Record in the published month's manifest what the online store now holds of it
    (replaced whole: a reader sees the old manifest or the new one)."""
    manifest = Manifest.read(out).model_copy(update={"online_store": status})
    tmp = Path(out) / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, Path(out) / MANIFEST_FILE)
    return manifest


def read_scores(out: Path, entity: str) -> pd.DataFrame:
    """An entity's published score table (a file, or Spark's folder of parts), in id order."""
    df = pd.read_parquet(Path(out) / f"{ENTITY_TABLES[entity]}.parquet")
    return df.sort_values(ENTITY_KEYS[entity], kind="stable").reset_index(drop=True)
