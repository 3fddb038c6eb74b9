"""Reading and writing a book on disk. All book I/O goes through here.

A book is a folder:

    book.json                          what made it: seed, size, months, generator version
    customers.parquet  branches.parquet  rms.parquet  relationships.parquet  cards.parquet
    snapshots/month=YYYY-MM/part-0.parquet      month-end snapshot, one row per customer
    card_spend/month=YYYY-MM/part-0.parquet     monthly spend, one row per card used that month
    truth/customer_month/month=YYYY-MM/part-0.parquet   simulator's true probabilities
    truth/cards.parquet                                 (never read by features or training)

Monthly tables are partitioned by month in Hive style; the `month` column is not stored in the
files, the readers add it (as the month-end timestamp) from the folder name. So a reader asked
for months up to T never opens a file dated after T.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bookpulse.errors import BookpulseError

Where = tuple[str, object] | None  # (column, ids): read only those rows

STATIC_TABLES = ("customers", "branches", "rms", "relationships", "cards")
MONTHLY_TABLES = ("snapshots", "card_spend")
# Monthly tables a book may lack, and months it may lack them in (campaigns are not monthly
# for every bank): `contacts/month=YYYY-MM/`, the actions taken on the lists in that month
OPTIONAL_MONTHLY_TABLES = ("contacts",)
TRUTH_DIR = "truth"
META_FILE = "book.json"


class BookError(BookpulseError):
    """A book that cannot be read: the message says what is wrong and where."""


def month_end(month: str | pd.Timestamp) -> pd.Timestamp:
    """'2026-10' (or any date in October 2026) -> Timestamp('2026-10-31')."""
    return pd.Period(month, freq="M").to_timestamp(how="end").normalize()


def month_key(month: str | pd.Timestamp) -> str:
    """Any date or 'YYYY-MM' -> 'YYYY-MM'."""
    return str(pd.Period(month, freq="M"))


def months_between(first: str, last: str) -> list[str]:
    return [str(p) for p in pd.period_range(first, last, freq="M")]


PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True}  # every file written


def write_parquet(table: pa.Table | pd.DataFrame, path: Path) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **PARQUET_OPTIONS)


def monthly_path(book: Path, table: str, month: str) -> Path:
    return book / table / f"month={month_key(month)}" / "part-0.parquet"


def truth_monthly_path(book: Path, month: str) -> Path:
    return monthly_path(book / TRUTH_DIR, "customer_month", month)


def read_meta(book: Path) -> dict:
    path = book / META_FILE
    if not path.is_file():
        raise BookError(
            f"{book} is not a book: {META_FILE} is missing. "
            "Generate one with `bookpulse book generate` or point --book at a book folder."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BookError(f"{path} is not valid JSON ({exc}).") from exc


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(date_as_object=False)


def _filters(where: Where) -> list | None:
    """The row filter for `where`. Ids in an array also bound the range (min, max), so a file
    written in id order with row groups (as `bookpulse book generate` writes it) reads only
    the row groups that can hold them: a partition of customers reads its share of the book,
    not the whole of it."""
    if where is None:
        return None
    column, ids = where
    ids = pa.array(ids)
    filters = [(column, "in", ids)]
    if len(ids) and pa.types.is_integer(ids.type):
        lo, hi = pc.min_max(ids).values()
        filters = [(column, ">=", lo.as_py()), (column, "<=", hi.as_py()), *filters]
    return filters


def _read_parquet(path: Path, columns: list[str] | None, where: Where = None) -> pa.Table:
    filters = _filters(where)
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (OSError, pa.ArrowException) as exc:
        raise BookError(
            f"cannot read {path}: {exc}. Run `bookpulse book validate` on the book."
        ) from None


def read_static(
    book: Path, name: str, columns: list[str] | None = None, where: Where = None
) -> pd.DataFrame:
    """A static table; `where` = (column, ids) keeps only rows whose column is in ids."""
    path = book / f"{name}.parquet"
    if not path.is_file():
        raise BookError(f"table {name!r} is missing: expected {path}")
    return _to_pandas(_read_parquet(path, columns, where))


def available_months(book: Path, table: str = "snapshots") -> list[str]:
    """Months present on disk for a monthly table, sorted."""
    root = book / table
    if not root.is_dir():
        return []
    found = [p.name.removeprefix("month=") for p in root.glob("month=*") if p.is_dir()]
    return sorted(found)


def read_monthly(
    book: Path,
    table: str,
    months: Iterable[str],
    columns: list[str] | None = None,
    where: Where = None,
) -> pd.DataFrame:
    """Concatenate the given months of a monthly table, adding `month` (month-end timestamp).
    `where` = (column, ids) keeps only rows whose column is in ids."""
    frames = []
    for m in months:
        path = monthly_path(book, table, m)
        if not path.is_file():
            raise BookError(f"table {table!r} has no partition for {month_key(m)}: expected {path}")
        frames.append(_add_month(_to_pandas(_read_parquet(path, columns, where)), m))
    if not frames:
        raise BookError(f"no months asked of table {table!r}")
    return pd.concat(frames, ignore_index=True)


def _add_month(df: pd.DataFrame, month: str) -> pd.DataFrame:
    df.insert(1 if "customer_id" in df or "card_id" in df else 0, "month", month_end(month))
    return df


def _coalesced(batches, schema: pa.Schema, rows: int):
    """Record batches (at most a row group each) gathered into tables of about `rows` rows."""
    held, count = [], 0
    for b in batches:
        held.append(b)
        count += b.num_rows
        if count >= rows:
            yield pa.Table.from_batches(held, schema)
            held, count = [], 0
    if held:
        yield pa.Table.from_batches(held, schema)


def read_batches(path: Path, rows: int, month: str | None = None):
    """A table's file as frames of at most `rows` rows (as `read_static` gives it, or as
    `read_monthly` with its `month` column when `month` is given): a large file checked a
    slice at a time. An empty file gives one empty frame."""
    try:
        f = pq.ParquetFile(path)
        if f.metadata.num_rows:
            tables = _coalesced(f.iter_batches(rows), f.schema_arrow, rows)
        else:
            tables = iter([f.schema_arrow.empty_table()])
        for table in tables:
            df = _to_pandas(table)
            yield df if month is None else _add_month(df, month)
    except (OSError, pa.ArrowException) as exc:
        raise BookError(f"cannot read {path}: {exc}") from None


def read_truth(book: Path, months: Iterable[str]) -> pd.DataFrame:
    return read_monthly(book / TRUTH_DIR, "customer_month", months)


AT_FDCWD = -100
RENAME_EXCHANGE = 2  # renameat2 flag: swap two existing paths in one step (Linux)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE): at no
    moment is either name missing. False where the system or file system cannot."""
    import ctypes

    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextmanager
def locked(target: Path):
    """Hold a lock on the folder that holds `target` for the block: runs publishing there take
    turns. The lock is the folder's own (no lock file to leave behind) and goes with the
    process, so a killed run never leaves it held."""
    import fcntl

    fd = os.open(target.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"another bookpulse run is publishing into {target.parent}: waiting for it "
                "to finish (runs into one folder take turns)",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clean_debris(target: Path) -> None:
    """What killed runs left beside `target` (called under its lock, so no live run owns it):
    a previous version stranded by a swap cut in half is put back first, then every
    half-written or replaced copy is removed."""
    stranded = sorted(target.parent.glob(f".{target.name}.old-*"))
    if stranded and not target.exists():
        os.replace(stranded.pop(), target)
    for debris in [*stranded, *target.parent.glob(f".{target.name}.tmp-*")]:
        shutil.rmtree(debris, ignore_errors=True)


@contextmanager
def publishing(target: Path, *, replace: bool = False):
    """Write into a temporary sibling folder; move it into place only if the block succeeds.

    Nothing half-written is ever visible at `target`, and an existing `target` is left alone
    unless `replace` is set; then the two are exchanged in one atomic step, so `target`
    always holds the previous version or the new one, never nothing. Runs publishing into one
    place take turns, and each cleans what killed runs left there.
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not replace:
        raise BookError(
            f"{target} already exists and is not empty; choose another --out or pass --force "
            "to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        _clean_debris(target)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous version
        else:  # two renames; a run cut between them is repaired by the next (_clean_debris)
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
