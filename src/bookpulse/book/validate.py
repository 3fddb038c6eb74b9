"""Check a book on disk and list every problem in it.

`validate_book` never raises for a bad book: each problem becomes a `Problem` (table, column,
reason, a few example rows), so `bookpulse book validate DIR` can show them all at once.
`check_book` is the guard later stages call before reading a book: it raises `BookError`
with a readable list when anything is wrong.

What is checked:

- book.json exists, is JSON, and lists the book's months (consecutive, YYYY-MM);
- every static table exists, can be read and passes its schema (`bookpulse.book.schema`);
- every month in book.json has a snapshots and a card_spend partition, and no partition lies
  outside those months; each partition can be read and passes its schema;
- `contacts` (the actions taken on the lists), optional and in any months: each partition
  present passes its schema, and none lies outside the book's months;
- across tables: ids that point at nothing (unknown branch, RM, customer or card), dates after
  the book's last month-end, cards issued before their customer was onboarded, snapshots
  before the customer's onboarding month, card spend before the card's issue month.

Every file is read a slice of BATCH_ROWS rows at a time, and of the static tables only the
ids and dates the cross-table checks need are kept, so memory stays bounded for a large book.
Keys duplicated across slices are found from the key columns alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from rich.table import Table
from rich.text import Text

from bookpulse.book import io
from bookpulse.book.schema import SCHEMAS, TABLE_KEYS, TEXT_TYPE_ERROR

MAX_EXAMPLES = 5
BATCH_ROWS = 500_000  # rows checked at once: a 10-million-customer month in 20 slices
META = io.META_FILE
# Static tables in the order their cross-table checks need them.
STATIC_ORDER = ("branches", "rms", "customers", "relationships", "cards")

Progress = Callable[[str, int, int], None]
"""Called after each file is checked with (what was checked, files done, files in all)."""

_MONTH_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a book: where, why, and up to five offending rows or values."""

    table: str
    column: str | None
    reason: str
    examples: str = ""

    def __str__(self) -> str:
        where = self.table if self.column is None else f"{self.table}.{self.column}"
        text = f"{where}: {self.reason}"
        return f"{text} (e.g. {self.examples})" if self.examples else text


# --- collecting problems --------------------------------------------------------------------


@dataclass
class _Finding:
    rows: int | None = None  # None: the problem is not about rows (a file, a partition)
    examples: list[str] = field(default_factory=list)
    months: set[str] = field(default_factory=set)


class _Findings:
    """Problems keyed by (table, column, reason), so one rule broken in many months is one."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str | None, str], _Finding] = {}

    def add(
        self,
        table: str,
        column: str | None,
        reason: str,
        examples: Iterable[str] = (),
        rows: int | None = None,
        month: str | None = None,
    ) -> None:
        finding = self._found.setdefault((table, column, reason), _Finding())
        if rows is not None:
            finding.rows = (finding.rows or 0) + rows
        for example in examples:
            if len(finding.examples) >= MAX_EXAMPLES:
                break
            if example not in finding.examples:
                finding.examples.append(example)
        if month is not None:
            finding.months.add(month)

    def problems(self) -> list[Problem]:
        out = []
        for (table, column, reason), finding in self._found.items():
            if finding.rows is not None:
                count = f"{finding.rows:,} row" + ("" if finding.rows == 1 else "s")
                if len(finding.months) > 1:
                    count += f" in {len(finding.months)} months"
                reason = f"{reason} ({count})"
            out.append(Problem(table, column, reason, "; ".join(finding.examples)))
        return out


def _describe(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    first = message[0] if message else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# --- rendering example rows -----------------------------------------------------------------


def _fmt(value: object, column: str) -> str:
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "null"
    if isinstance(value, pd.Timestamp):
        if column == "month":
            return value.strftime("%Y-%m")
        return value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat()
    if isinstance(value, float):
        return format(value, ".12g")
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _examples(
    df: pd.DataFrame,
    positions: np.ndarray,
    columns: Iterable[str],
    extra: dict[str, np.ndarray] | None = None,
) -> list[str]:
    """Render up to MAX_EXAMPLES distinct rows as 'customer_id=12, month=2026-03, ...'."""
    cols = [c for c in dict.fromkeys(columns) if c in df.columns]
    positions = positions[: MAX_EXAMPLES * 10]
    sample = df.iloc[positions][cols].reset_index(drop=True)
    for name, values in (extra or {}).items():
        sample[name] = np.asarray(values)[positions]
    out: list[str] = []
    for row in sample.itertuples(index=False, name=None):
        rendered = ", ".join(f"{c}={_fmt(v, c)}" for c, v in zip(sample.columns, row, strict=True))
        if rendered not in out:
            out.append(rendered)
        if len(out) >= MAX_EXAMPLES:
            break
    return out


def _flag(
    findings: _Findings,
    table: str,
    column: str,
    reason: str,
    df: pd.DataFrame,
    bad: pd.Series | np.ndarray,
    shows: Iterable[str] = (),
    extra: dict[str, np.ndarray] | None = None,
    month: str | None = None,
) -> None:
    """Record the rows of `df` where `bad` is True (if any) as one problem."""
    positions = np.flatnonzero(np.asarray(bad, dtype=bool))
    if len(positions):
        examples = _examples(df, positions, (*TABLE_KEYS[table], column, *shows), extra)
        findings.add(table, column, reason, examples, rows=len(positions), month=month)


# --- one table against its schema -----------------------------------------------------------

_PANDERA_REASONS = {
    "not_nullable": "must not be empty (null)",
    "field_uniqueness": "duplicate values: each must appear once",
}


def _expected_dtype(check: str) -> str:
    # pandera names a dtype check "dtype('int16')"
    found = re.search(r"dtype\('([^']*)'\)", check)
    expected = found.group(1) if found else check
    return "datetime64" if expected.startswith("datetime64") else expected


def _failing_rows(
    schema: pa.DataFrameSchema, df: pd.DataFrame, name: str, what: str, reported: pd.Series
) -> np.ndarray:
    """Mask of the rows of `df` that fail check `what` on column `name`.

    pandera keeps only a few failure cases per check (memory stays bounded however many rows
    fail); the check is run once more here to find and count them all.
    """
    series = df[name]
    if what == "not_nullable":
        return series.isna().to_numpy()
    if what == "field_uniqueness":
        return series.duplicated(keep=False).to_numpy()
    checks = [c for c in schema.columns[name].checks if c.error == what]
    if checks:
        return _failed(df, checks[0](series).check_output)
    return _rows(df, pd.Index(reported.dropna().unique()))


def _failed(df: pd.DataFrame, output: pd.Series) -> np.ndarray:
    """Mask over `df` of the rows a check's output marks False (rows it left out passed)."""
    return _rows(df, output.index[~output.to_numpy(dtype=bool)])


def _rows(df: pd.DataFrame, labels: pd.Index) -> np.ndarray:
    bad = np.zeros(len(df), dtype=bool)
    positions = df.index.get_indexer(labels)
    bad[positions[positions >= 0]] = True
    return bad


def _check_schema(table: str, df: pd.DataFrame, findings: _Findings, month: str | None) -> set[str]:
    """Run the table's schema on `df` and record what fails.

    Returns the columns that are missing or of the wrong type: later checks skip them.
    """
    schema = SCHEMAS[table]
    try:
        schema.validate(df, lazy=True, inplace=True)
        return set()
    except SchemaErrors as exc:
        cases = exc.failure_cases
    except Exception as exc:  # pandera itself failed: say so rather than crash
        findings.add(table, None, f"the schema check could not run: {_describe(exc)}", month=month)
        return set(schema.columns)

    key = TABLE_KEYS[table]
    unusable: set[str] = set()
    cases = cases.assign(
        column=cases["column"].astype(object).where(cases["column"].notna(), None),
        check=cases["check"].astype(str),
    )
    check = cases["check"]

    # Missing columns and wrong types first: other checks on those columns are noise.
    for name in cases.loc[check == "column_in_dataframe", "failure_case"].unique():
        findings.add(table, str(name), "column is missing", month=month)
        unusable.add(str(name))
    is_type = check.str.startswith("dtype(") | (check == TEXT_TYPE_ERROR)
    for name, what in (
        cases.loc[is_type, ["column", "check"]].drop_duplicates().itertuples(index=False, name=None)
    ):
        if what == TEXT_TYPE_ERROR:
            expected = "text (str, object or category)"
        else:
            expected = _expected_dtype(what)
        found = str(df[name].dtype) if name in df.columns else "nothing"
        findings.add(table, name, f"wrong type: expected {expected}, found {found}", month=month)
        unusable.add(name)

    # Rules across the columns of a row: count the rows by running the rule once more.
    rules = {c.error: c for c in schema.checks}
    is_rule = (cases["schema_context"] == "DataFrameSchema") & check.isin(list(rules))
    for error in check[is_rule].unique():
        rule = rules[error]
        try:
            bad = _failed(df, rule(df).check_output)
        except Exception as exc:
            if not unusable:
                findings.add(
                    table, rule.title, f"could not check '{error}': {_describe(exc)}", month=month
                )
            continue
        shows = (rule.statistics or {}).get("shows", ())
        _flag(findings, table, rule.title, error, df, bad, shows, month=month)

    # Duplicate keys over several columns: one problem for the key, not one per column.
    if (check == "multiple_fields_uniqueness").any():
        unique = [c for c in schema.unique or key if c in df.columns]
        bad = df.duplicated(subset=unique, keep=False).to_numpy()
        cols = ", ".join(unique)
        _flag(
            findings,
            table,
            cols,
            f"duplicate rows: each ({cols}) must appear once",
            df,
            bad,
            month=month,
        )

    # Everything else is about single values in one column.
    done = is_type | is_rule | check.isin(["column_in_dataframe", "multiple_fields_uniqueness"])
    for (name, what), group in cases[~done].groupby(["column", "check"], sort=False):
        if name in unusable or name not in df.columns:
            continue
        if group["index"].isna().all():  # the check itself could not run on this column
            failure = str(group["failure_case"].iloc[0])
            findings.add(table, name, f"could not check '{what}': {failure}", month=month)
            continue
        bad = _failing_rows(schema, df, name, what, group["index"])
        reason = _PANDERA_REASONS.get(what, what)
        _flag(findings, table, name, reason, df, bad, month=month)
    return unusable


# --- what the cross-table checks remember ---------------------------------------------------


@dataclass
class _Reference:
    end: pd.Timestamp | None = None  # the book's last month-end
    branch_ids: pd.Index | None = None
    rm_ids: pd.Index | None = None
    customer_ids: pd.Index | None = None
    onboard_date: pd.Series | None = None  # by customer_id
    card_ids: pd.Index | None = None
    issue_date: pd.Series | None = None  # by card_id
    # what a table's slices gave so far, made into the fields above by `finish`
    pending: dict[str, list] = field(default_factory=dict)

    def collect(self, name: str, part: np.ndarray | pd.Series) -> None:
        self.pending.setdefault(name, []).append(part)

    def finish(self) -> None:
        for name, parts in self.pending.items():
            if isinstance(parts[0], pd.Series):
                series = pd.concat(parts)
                setattr(self, name, series[~series.index.duplicated()])
            else:
                setattr(self, name, pd.Index(pd.unique(np.concatenate(parts))))
        self.pending = {}


def _by_id(df: pd.DataFrame, id_column: str, value_column: str) -> pd.Series:
    series = pd.Series(df[value_column].to_numpy(), index=df[id_column].to_numpy())
    return series[~series.index.duplicated()]


@dataclass
class _Checked:
    """One table (or one month of one) after its schema check."""

    table: str
    df: pd.DataFrame
    unusable: set[str]
    findings: _Findings
    month: str | None = None

    def ok(self, *columns: str) -> bool:
        return all(c in self.df.columns and c not in self.unusable for c in columns)

    def flag(self, column: str, reason: str, bad, shows=(), extra=None) -> None:
        _flag(self.findings, self.table, column, reason, self.df, bad, shows, extra, self.month)

    def unknown(self, column: str, known: pd.Index | None, what: str, where: str) -> None:
        if known is not None and self.ok(column):
            # the Index's own hash table, built once for every slice (isin builds one a call)
            bad = known.get_indexer(self.df[column].to_numpy()) < 0
            self.flag(column, f"unknown {what}: {column} not in {where}", bad)

    def after_end(self, column: str, ref: _Reference) -> None:
        if ref.end is not None and self.ok(column):
            bad = self.df[column] > ref.end
            self.flag(column, f"after the book's last month-end ({ref.end:%Y-%m-%d})", bad)


def _cross_check(c: _Checked, ref: _Reference) -> None:
    df = c.df
    if c.table == "branches":
        if c.ok("branch_id"):
            ref.collect("branch_ids", df["branch_id"].unique())
    elif c.table == "rms":
        c.unknown("branch_id", ref.branch_ids, "branch", "branches")
        if c.ok("rm_id"):
            ref.collect("rm_ids", df["rm_id"].unique())
    elif c.table == "customers":
        c.unknown("branch_id", ref.branch_ids, "branch", "branches")
        c.unknown("rm_id", ref.rm_ids, "RM", "rms")
        c.after_end("onboard_date", ref)
        if c.ok("customer_id"):
            ref.collect("customer_ids", df["customer_id"].unique())
            if c.ok("onboard_date"):
                ref.collect("onboard_date", _by_id(df, "customer_id", "onboard_date"))
    elif c.table == "relationships":
        c.unknown("customer_id", ref.customer_ids, "customer", "customers")
        c.unknown("related_customer_id", ref.customer_ids, "customer", "customers")
        c.after_end("since", ref)
    elif c.table == "cards":
        c.unknown("customer_id", ref.customer_ids, "customer", "customers")
        c.after_end("issue_date", ref)
        c.after_end("first_use_date", ref)
        if ref.onboard_date is not None and c.ok("customer_id", "issue_date"):
            onboard = ref.onboard_date.reindex(df["customer_id"].to_numpy()).to_numpy()
            bad = df["issue_date"].to_numpy() < onboard
            c.flag(
                "issue_date",
                "issue_date is before the customer's onboard_date",
                bad,
                shows=("customer_id",),
                extra={"onboard_date": onboard},
            )
        if c.ok("card_id"):
            ref.collect("card_ids", df["card_id"].unique())
            if c.ok("issue_date"):
                ref.collect("issue_date", _by_id(df, "card_id", "issue_date"))
    elif c.table == "snapshots":
        c.unknown("customer_id", ref.customer_ids, "customer", "customers")
        if ref.onboard_date is not None and c.ok("customer_id") and c.month is not None:
            onboard = ref.onboard_date.reindex(df["customer_id"].to_numpy()).to_numpy()
            bad = onboard > io.month_end(c.month).to_datetime64()
            c.flag(
                "month",
                "snapshot month is before the customer's onboarding month",
                bad,
                extra={"onboard_date": onboard},
            )
    elif c.table == "contacts":
        c.unknown("customer_id", ref.customer_ids, "customer", "customers")
        c.unknown("rm_id", ref.rm_ids, "RM", "rms")
        if ref.card_ids is not None and c.ok("card_id"):
            cards = c.df["card_id"]
            bad = cards.notna().to_numpy() & (
                ref.card_ids.get_indexer(cards.fillna(-1).to_numpy("int64")) < 0
            )
            c.flag("card_id", "unknown card: card_id not in cards", bad)
    elif c.table == "card_spend":
        c.unknown("card_id", ref.card_ids, "card", "cards")
        if ref.issue_date is not None and c.ok("card_id") and c.month is not None:
            issued = ref.issue_date.reindex(df["card_id"].to_numpy()).to_numpy()
            bad = issued > io.month_end(c.month).to_datetime64()
            c.flag(
                "month",
                "spend month is before the card's issue month",
                bad,
                extra={"issue_date": issued},
            )


# --- book.json, files and partitions --------------------------------------------------------


def _read_meta(book: Path, findings: _Findings) -> dict | None:
    path = book / META
    if not path.is_file():
        if not book.exists():
            where = f"{book} does not exist"
        else:
            where = f"{book} is not a folder" if not book.is_dir() else f"{book} is not a book"
        findings.add(META, None, f"book.json is missing: expected {path} ({where})")
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        findings.add(META, None, f"book.json cannot be read: {_describe(exc)}")
        return None
    if not isinstance(meta, dict):
        findings.add(META, None, "book.json must hold a JSON object")
        return None
    return meta


def _is_month(value: object) -> bool:
    return isinstance(value, str) and _MONTH_RE.fullmatch(value) is not None


def _book_months(meta: dict, findings: _Findings) -> list[str] | None:
    """The months book.json lists, or None (with a problem) when it lists none usable."""
    months = meta.get("months")
    start, end = meta.get("start_month"), meta.get("end_month")
    if months is None and _is_month(start) and _is_month(end):
        months = io.months_between(start, end)
    if not (isinstance(months, list) and months and all(_is_month(m) for m in months)):
        findings.add(
            META,
            "months",
            "must be a non-empty list of months written YYYY-MM",
            [repr(months)[:60]],
        )
        return None
    expected = io.months_between(min(months), max(months))
    if months != expected:
        findings.add(
            META,
            "months",
            "must be consecutive months in order, with no gaps or repeats",
            [", ".join(months[:6]) + (", ..." if len(months) > 6 else "")],
        )
        months = expected
    for name, value in (("start_month", months[0]), ("end_month", months[-1])):
        if name in meta and meta[name] != value:
            findings.add(
                META,
                name,
                f"does not match the months listed: expected {value}",
                [repr(meta[name])[:40]],
            )
    return months


def _partitions(
    book: Path, table: str, months: list[str], findings: _Findings, optional: bool = False
) -> list[str]:
    """Check the partitions of a monthly table (an `optional` one may lack any month);
    return the book's months that have one."""
    present = [m for m in months if io.monthly_path(book, table, m).is_file()]
    missing = [m for m in months if m not in set(present)]
    if missing and not optional:
        findings.add(
            table,
            None,
            f"no partition for {len(missing)} of the book's {len(months)} months: expected "
            f"files like {io.monthly_path(book, table, missing[0])}",
            missing,
        )
    listed = set(months)
    extra = [m for m in io.available_months(book, table) if m not in listed]
    if extra:
        findings.add(
            table,
            None,
            f"{len(extra)} partition(s) outside the book's months "
            f"({months[0]} to {months[-1]} in book.json)",
            [f"month={m}" for m in extra],
        )
    return present


# --- the whole book -------------------------------------------------------------------------


def _validate(
    book: Path, findings: _Findings, progress: Progress | None, only: list[str] | None = None
) -> None:
    meta = _read_meta(book, findings)
    if meta is None:
        return
    months = _book_months(meta, findings)
    ref = _Reference(end=io.month_end(months[-1]) if months else None)
    checked = [m for m in months if only is None or m in set(only)] if months else months

    total = 1 + len(STATIC_ORDER) + (len(checked) * len(io.MONTHLY_TABLES) if months else 0)
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(label, done, total)

    step(META)
    for table in STATIC_ORDER:
        path = book / f"{table}.parquet"
        if not path.is_file():
            findings.add(table, None, f"table is missing: expected {path}")
        else:
            rows = _check_file(findings, ref, table, path)
            said = meta.get("customers")
            counted = isinstance(said, int) and not isinstance(said, bool)
            if table == "customers" and rows is not None and counted and said != rows:
                findings.add(
                    META,
                    "customers",
                    f"says {said:,} customers but customers.parquet has {rows:,} rows",
                )
        step(table)

    if not months:
        return
    for table in io.MONTHLY_TABLES:
        present = set(_partitions(book, table, months, findings))
        for month in checked:
            if month in present:
                _check_file(findings, ref, table, io.monthly_path(book, table, month), month)
            step(f"{table} {month}")
    for table in io.OPTIONAL_MONTHLY_TABLES:
        present = set(_partitions(book, table, months, findings, optional=True))
        for month in checked:
            if month in present:
                _check_file(findings, ref, table, io.monthly_path(book, table, month), month)


def _check_file(
    findings: _Findings, ref: _Reference, table: str, path: Path, month: str | None = None
) -> int | None:
    """Check one file a slice of BATCH_ROWS rows at a time (memory bounded by the slice, not
    the table): its schema, the cross-table checks, and keys duplicated across slices. The
    file's rows, or None if it cannot be read."""
    keys = _unique_keys(table)
    seen: dict[tuple[str, ...], list[pd.DataFrame]] = {k: [] for k in keys}
    rows = 0
    try:
        for df in io.read_batches(path, BATCH_ROWS, month):
            unusable = _check_schema(table, df, findings, month)
            _cross_check(_Checked(table, df, unusable, findings, month), ref)
            for key in keys:
                if all(c in df.columns and c not in unusable for c in key):
                    seen[key].append(df[list(key)])
            rows += len(df)
    except Exception as exc:  # a corrupt or foreign file: report it, never a traceback
        findings.add(
            table,
            None,
            f"file cannot be read (corrupt or not Parquet): {path}: {_describe(exc)}",
            month=month,
        )
        return None
    finally:
        ref.finish()
    for key, parts in seen.items():
        if len(parts) > 1:  # one slice: its own check saw every duplicate
            _duplicates_across(findings, table, key, parts, month)
    return rows


def _unique_keys(table: str) -> list[tuple[str, ...]]:
    """The column sets each row must hold uniquely in `table`."""
    schema = SCHEMAS[table]
    keys = [(name,) for name, col in schema.columns.items() if col.unique]
    return keys + ([tuple(schema.unique)] if schema.unique else [])


def _duplicates_across(
    findings: _Findings,
    table: str,
    key: tuple[str, ...],
    parts: list[pd.DataFrame],
    month: str | None,
) -> None:
    """Duplicates of `key` the slices' own checks could not see (split across slices),
    recorded as the schema check records them (which counted those within each slice)."""
    values = pd.concat(parts, ignore_index=True)
    # a column that holds one value throughout (a partition's month) decides nothing
    varying = [c for c in key if not (values[c] == values[c].iloc[0]).all()] or list(key)
    dup = values.duplicated(subset=varying, keep=False).to_numpy()
    if not dup.any():
        return
    within = sum(int(p.duplicated(subset=list(key), keep=False).sum()) for p in parts)
    extra = int(dup.sum()) - within
    if extra > 0:
        cols = ", ".join(key)
        reason = (
            _PANDERA_REASONS["field_uniqueness"]
            if len(key) == 1
            else f"duplicate rows: each ({cols}) must appear once"
        )
        examples = _examples(values.reset_index(drop=True), np.flatnonzero(dup), key)
        findings.add(table, cols, reason, examples, rows=extra, month=month)


def validate_book(
    book: Path, progress: Progress | None = None, months: list[str] | None = None
) -> list[Problem]:
    """Every problem in the book at `book`; an empty list means the book is valid.

    `months`, if given, limits the monthly partitions checked to those months (the static
    tables and book.json are always checked): what a job reading only those months needs.

    `progress`, if given, is called after each file with (label, files done, files in all).
    Never raises for a bad book: unreadable files and even a failure of the validator itself
    come back as problems.
    """
    findings = _Findings()
    book = Path(book)
    try:
        _validate(book, findings, progress, months)
    except Exception as exc:  # last resort: the user gets a problem, not a traceback
        findings.add(
            "book", None, f"validation stopped early on an unexpected error: {_describe(exc)}"
        )
    return findings.problems()


# --- showing problems -----------------------------------------------------------------------


def format_problems(problems: Sequence[Problem], title: str | None = None) -> Table:
    """A rich table of problems for the terminal."""
    n = len(problems)
    table = Table(
        title=title or f"{n} problem{'' if n == 1 else 's'}", show_lines=True, title_justify="left"
    )
    table.add_column("table", style="bold", no_wrap=True)
    table.add_column("column", style="cyan")
    table.add_column("problem", style="red")
    table.add_column("examples", overflow="fold")
    for p in problems:  # Text(), not markup: reasons contain brackets such as [ns]
        table.add_row(Text(p.table), Text(p.column or "-"), Text(p.reason), Text(p.examples))
    return table


def describe_problems(book: Path, problems: Sequence[Problem], limit: int = 20) -> str:
    """Plain multi-line text listing the problems (at most `limit` of them)."""
    n = len(problems)
    lines = [f"{book} is not a valid book: {n} problem{'' if n == 1 else 's'}:"]
    lines += [f"  - {p}" for p in problems[:limit]]
    if n > limit:
        lines.append(f"  ... and {n - limit} more")
    lines.append(f"Run `bookpulse book validate {book}` to see them all.")
    return "\n".join(lines)


def check_book(book: Path) -> None:
    """Raise `BookError` listing the problems if the book at `book` is not valid."""
    problems = validate_book(book)
    if problems:
        raise io.BookError(describe_problems(book, problems))
