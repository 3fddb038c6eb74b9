"""Flat-table mode: the same recipe and validation pack on any CSV or Parquet extract.

Analysts bring extracts (a case per row, a target column) as they have them: `read_table`
sniffs the separator, names an encoding problem, and says when a file has no rows. Strings
become categoricals; the split is out of time when a time column is given (latest periods for
test, with an embargo before them for a multi-period target), otherwise stratified at random.

The guards against the usual mistakes; each one the command prints as a warning and tags on
the run (`warning.<kind>`):

- **leakage**: the test AUC is at or above 0.99 (`LEAKAGE_AUC`), or one feature carries more
  than half the trees' total gain (`LEAKAGE_GAIN_SHARE`, with 3 features or more: with one
  or two, one of them carrying most of the gain says nothing). Named: the feature with the
  most gain, and any numeric feature that alone ranks the training rows with an AUC of 0.95
  or more (another model's output, a status filled in after the outcome). Tagged `leakage`
  when the AUC is that high or such a column exists (promotion keeps the version out), and
  `dominant_feature` when one feature only carries most of the gain (a warning: a strong
  honest driver does that too).
- **identifier**: left out. By name (`CLIENTNUM`, `RowNumber`, `CustomerId`, `client_num`,
  `Surname`, `email`, ...: see `looks_like_id`) when the values are mostly distinct (more
  than half the rows) or, for text, more than 100 levels; by values alone, integers nearly
  all distinct (99% of rows or more, whether in order or not) and text with more distinct
  values than half the rows. With a time column, "distinct" is counted within each period
  (a customer id repeats across the months of a panel extract, never within one).
- **high_cardinality**: text with more than 100 levels that are also more than 5% of the
  rows (fewer than 20 rows a level on average: too few to learn a level from, yet enough
  levels to memorise rows) is left out unless asked for with `--keep COL`. A real
  categorical (a city among 150 on 45,000 rows) stays.
- **unlabelled_rows**, **no_time**: rows with no target (or no value in the time column)
  are left out, and counted.
- **merged_classes**: a target with more than two values and `--positive`: which value is the
  event, and which are merged as non-events.

A time column must be orderable across years: datetimes, ISO dates (2023-05-31), months
(2023-05), or integers (YYYYMM such as 202305, YYYYMMDD, years, or any period number 1..N).
Month names without a year ("may", "jun") are refused: read as dates they would all fall in
this year and the out-of-time split would mix years.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bookpulse.errors import BookpulseError
from bookpulse.specs import LightGBMSpec

LABEL = "__target__"
TABLE_LGB = LightGBMSpec(
    params={
        "objective": "binary",
        "learning_rate": 0.03,
        "num_leaves": 31,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_cat_to_onehot": 8,
        "verbosity": -1,
        "seed": 42,
    },
    num_boost_round=3000,
    early_stopping_rounds=150,
)

MIN_PART_CLASS = 5  # events and non-events each part needs (DeLong needs 2; calibration more)
LEAKAGE_AUC = 0.99  # a test AUC this high on a bank extract is a leak until shown otherwise
LEAKAGE_GAIN_SHARE = 0.5  # one feature carrying more than half the total gain
LEAKAGE_SOLO_AUC = 0.95  # a numeric feature ranking the rows this well on its own is named
ID_INT_DISTINCT = 0.99  # integers with at least this share of distinct values: an identifier
ID_TEXT_DISTINCT = 0.5  # text (or a name-matched column) with more distinct values than this
HIGH_CARD_LEVELS = 100  # text with more levels than this...
HIGH_CARD_SHARE = 0.05  # ...that are also more than this share of the rows is left out
ROWS_PER_THREAD = 50_000  # LightGBM's default threads: one per 50,000 training rows

_ID_TOKENS = {
    "id", "ids", "no", "nr", "num", "number", "key", "uuid", "guid", "ref",
    "name", "surname", "firstname", "lastname", "fullname", "forename",
    "phone", "mobile", "email", "mail", "iban", "ssn",
}  # fmt: skip
_ID_GLUED = re.compile(
    r"(client|customer|cust|account|acct|acc|row|user|member|contract|loan|card|record|case|"
    r"policy|person|party|household|msisdn)(num|no|nr|number|id|key|ref)|"
    r"id|index|rownumber|unnamed\d*|surname|lastname|firstname|fullname|name"
)
_MONTH_NAMES = {
    m.lower()
    for i in range(1, 13)
    for m in (pd.Timestamp(2000, i, 1).strftime("%b"), pd.Timestamp(2000, i, 1).strftime("%B"))
} | {"sept"}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")
_YEAR_MONTH = re.compile(r"\d{4}[-/](0?[1-9]|1[0-2])")
_INTEGER = re.compile(r"[+-]?\d+")

CSV_SUFFIXES = (".csv", ".txt", ".tsv", ".tab", ".dat")
PARQUET_SUFFIXES = (".parquet", ".pq")
SEPARATORS = ",;\t|"
SAMPLE_BYTES = 64 * 1024  # the head of the file the separator is sniffed on


class TableError(BookpulseError):
    """An extract that cannot be trained on; the message says what to change."""


@dataclass(frozen=True)
class TableResult:
    name: str
    run_id: str
    features: list[str]
    excluded: dict[str, str]
    rows: dict[str, int]
    metrics: dict[str, float]
    registered_name: str = ""
    version: str = ""  # registered with the alias challenger
    warnings: dict[str, str] = field(default_factory=dict)  # kind -> message (tag warning.kind)
    embargo: str = ""  # the periods left out between calibration and test, in words
    threads: int = 0  # LightGBM threads used


# --- reading ----------------------------------------------------------------------------


def _shown(sep: str) -> str:
    return {"\t": "\\t"}.get(sep, sep)


def sniff_separator(sample: str) -> str | None:
    """The separator of a CSV's first lines: `csv.Sniffer` among , ; tab |, checked against the
    header line; failing that, the one the header holds most of. None: no candidate at all."""
    lines = sample.splitlines()[:50]
    header = lines[0] if lines else ""
    try:
        found = csv.Sniffer().sniff("\n".join(lines), delimiters=SEPARATORS).delimiter
        if found in header:
            return found
    except csv.Error:
        pass
    counts = {s: header.count(s) for s in SEPARATORS}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def _decode_problem(path: Path, exc: UnicodeDecodeError, encoding: str | None) -> str:
    bad = exc.object[exc.start : exc.start + 1] if isinstance(exc.object, bytes) else b""
    byte = f" (byte 0x{bad[0]:02x})" if bad else ""
    if encoding is None:
        return (
            f"{path} is not UTF-8{byte}: it was probably saved as latin-1 or Windows-1252 (as "
            "Excel and older bank systems do); try --encoding latin-1 (or --encoding cp1252)"
        )
    return (
        f"{path} cannot be read as {encoding}{byte}: try another --encoding (utf-8, latin-1, "
        "cp1252)"
    )


def read_table(path: Path, sep: str | None = None, encoding: str | None = None) -> pd.DataFrame:
    """An extract as a frame: Parquet, or CSV (.csv .txt .tsv) with its separator sniffed from
    the first lines unless `sep` is given, in UTF-8 unless `encoding` is given. Every problem
    (no such file, an encoding, a separator, no rows) is a TableError that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"no file {path}")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise TableError(f"cannot read {path} as Parquet: {exc}") from None
    elif suffix in CSV_SUFFIXES:
        df = _read_csv(path, sep, encoding)
    else:
        raise TableError(f"{path}: use a .csv (or .txt, .tsv) or a .parquet file")
    if len(df.columns) == 0:
        raise TableError(f"{path}: the file is empty")
    if len(df) == 0:
        shown = ", ".join(map(str, df.columns[:8])) + (", ..." if len(df.columns) > 8 else "")
        raise TableError(f"{path}: the file has no rows (only a header: {shown})")
    return df


def _read_csv(path: Path, sep: str | None, encoding: str | None) -> pd.DataFrame:
    with path.open("rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    if not head.strip():
        raise TableError(f"{path}: the file is empty")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise TableError(
                f"--encoding {encoding!r} is not an encoding Python knows: e.g. utf-8, latin-1, "
                "cp1252"
            ) from None
    enc = encoding or ("utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8")
    if len(head) == SAMPLE_BYTES and b"\n" in head:
        head = head[: head.rfind(b"\n")]  # whole lines only
    try:
        sample = head.decode(enc)
    except UnicodeDecodeError as exc:
        raise TableError(_decode_problem(path, exc, encoding)) from None
    given = {"\\t": "\t", "tab": "\t"}.get(sep, sep) if sep is not None else None
    chosen = given or sniff_separator(sample) or ","
    try:
        df = pd.read_csv(path, sep=chosen, encoding=enc, engine="c" if len(chosen) == 1 else None)
    except UnicodeDecodeError as exc:
        raise TableError(_decode_problem(path, exc, encoding)) from None
    except pd.errors.EmptyDataError:
        raise TableError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        hint = "" if given else "; give the separator with --sep"
        first = str(exc).strip().splitlines()[0]
        raise TableError(
            f"cannot read {path} as '{_shown(chosen)}'-separated: {first}{hint}"
        ) from None
    if len(df.columns) == 1:
        only = str(df.columns[0])
        for other in SEPARATORS:
            if other != chosen and other in only:
                raise TableError(
                    f"{path}: the header reads as one column ({only[:60]!r}...): looks like a "
                    f"'{_shown(other)}'-separated file: try --sep '{_shown(other)}'"
                )
    return df


# --- the target and the time column -------------------------------------------------------


def target_vector(column: pd.Series, positive: str | None) -> np.ndarray:
    """1 where the row is the event. Without `positive`, the column must be 0/1 or true/false."""
    if positive is not None:
        y = column.astype(str) == str(positive)
        number = pd.to_numeric(pd.Series([positive]), errors="coerce").iloc[0]
        if not y.any() and pd.api.types.is_numeric_dtype(column) and not pd.isna(number):
            y = column == number  # --positive 1 on a column read as 1.0
        if not y.any():
            seen = ", ".join(map(str, column.dropna().unique()[:10]))
            raise TableError(f"no row has target value {positive!r} (values: {seen})")
        return y.to_numpy(int)
    values = set(column.dropna().unique().tolist())
    if values <= {0, 1} or values <= {True, False}:
        return column.fillna(0).astype(int).to_numpy()
    seen = ", ".join(map(str, list(values)[:10]))
    raise TableError(f"the target has values {seen}: say which is the event with --positive")


def merged_classes(column: pd.Series, y: np.ndarray) -> str | None:
    """The notice for a target of more than two values made one-against-the-rest."""
    counts = column.value_counts()
    if len(counts) <= 2:
        return None
    event = column[y == 1].iloc[0]
    rest = [repr(str(v)) for v in counts.index if str(v) != str(event)]
    shown = rest[:5] + ([f"{len(rest) - 5} more"] if len(rest) > 5 else [])
    merged = ", ".join(shown[:-1]) + f" and {shown[-1]}" if len(shown) > 1 else shown[0]
    return (
        f"the target has {len(counts)} classes: {str(event)!r} is the event, {merged} are "
        "merged as non-events"
    )


def _time_refused(name: str, values: pd.Series) -> TableError:
    shown = ", ".join(repr(str(v)) for v in pd.unique(values)[:3])
    words = values.astype(str).str.strip().str.lower().str.rstrip(".")
    if words.isin(_MONTH_NAMES).all():
        return TableError(
            f"--time-col {name}: values like {shown} are month names without a year. Read as "
            "dates they would all fall in this year, so an extract spanning years would be "
            "split out of order (last year's May tested against this year's June). Give a "
            "column with the year (2023-05, 2023-05-31 or 202305), or leave out --time-col "
            "for a stratified random split"
        )
    return TableError(
        f"--time-col {name}: values like {shown} are not dates or periods bookpulse can order "
        "across years. Use ISO dates (2023-05-31), months (2023-05), integer periods (202305, "
        "20230531, a year, or 1, 2, ... in order) or a date column in a Parquet file"
    )


def _integer_periods(values: pd.Series) -> pd.Series:
    """YYYYMM and YYYYMMDD integers as dates; any other integers (years, 1..N) as they are."""
    v = values.astype("int64")
    if v.between(190001, 210012).all() and (v % 100).between(1, 12).all():
        return pd.to_datetime(v.astype(str), format="%Y%m")
    if v.between(19000101, 21001231).all():
        parsed = pd.to_datetime(v.astype(str), format="%Y%m%d", errors="coerce")
        if parsed.notna().all():
            return parsed
    return v


def period_values(column: pd.Series, name: str) -> pd.Series:
    """The time column as values that order periods across years (datetimes or integers;
    missing stays missing). Refuses what would be ordered wrongly: month names without a
    year, ambiguous day/month dates, free text."""
    present = column.dropna()
    if present.empty:
        raise TableError(f"--time-col {name} has no values")
    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    if pd.api.types.is_bool_dtype(column):
        raise _time_refused(name, present)
    if pd.api.types.is_numeric_dtype(column):
        if not np.all(np.mod(present.to_numpy(float), 1) == 0):
            raise _time_refused(name, present)
        return _integer_periods(present).reindex(column.index)
    text = present.astype(str).str.strip()
    if text.str.fullmatch(_ISO_DATE.pattern).all():
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    elif text.str.fullmatch(_YEAR_MONTH.pattern).all():
        parsed = pd.to_datetime(text.str.replace("/", "-"), format="%Y-%m", errors="coerce")
    elif text.str.fullmatch(_INTEGER.pattern).all():
        return _integer_periods(text.astype("int64")).reindex(column.index)
    else:
        raise _time_refused(name, present)
    if parsed.isna().any():
        raise _time_refused(name, text[parsed.isna()])
    return parsed.reindex(column.index)


# --- features -----------------------------------------------------------------------------


def looks_like_id(name: str) -> bool:
    """A column name that says identifier: its last word (CustomerId, client_num, RowNumber,
    customer_no, e-mail) or the whole name glued (CLIENTNUM, ACCTNO, Surname, Unnamed: 0)."""
    split = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", split) if w]
    if not words:
        return False
    glued = "".join(words)
    return words[-1] in _ID_TOKENS or _ID_GLUED.fullmatch(glued) is not None


def _distinct_share(s: pd.Series, periods: pd.Series | None) -> float:
    """Distinct values over rows; within each period when the extract has periods (a panel:
    the same customer in every month), averaged over periods weighted by rows."""
    if periods is None:
        return s.nunique(dropna=True) / max(len(s), 1)
    grouped = s.groupby(periods.to_numpy(), dropna=True)
    distinct, rows = grouped.nunique(dropna=True), grouped.size()
    return float(distinct.sum() / max(rows.sum(), 1))


@dataclass
class Choice:
    """Columns to learn from, those left out with the reason, and the guards' finds."""

    features: list[str]
    excluded: dict[str, str]
    identifiers: list[str] = field(default_factory=list)
    high_cardinality: list[str] = field(default_factory=list)


def choose_features(
    df: pd.DataFrame,
    drop: list[str],
    keep: tuple[str, ...] = (),
    periods: pd.Series | None = None,
) -> Choice:
    """Columns to learn from; identifiers and high-cardinality text are left out (unless in
    `keep`), with the reason. `periods`: the time column, for distinct counts within a period."""
    excluded = {c: "dropped on request" for c in drop}
    out = Choice([], excluded)
    n = len(df)
    for col in df.columns:
        if col in excluded:
            continue
        s = df[col]
        unique = s.nunique(dropna=True)
        textual = not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        integer = pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s)
        share = _distinct_share(s, periods) if unique > 1 else 0.0
        seen = f"{unique:,} distinct values in {n:,} rows"
        if unique <= 1:
            excluded[col] = "constant"
            continue
        if col in keep:
            out.features.append(col)
            continue
        if looks_like_id(col) and (
            share > ID_TEXT_DISTINCT or (textual and unique > HIGH_CARD_LEVELS)
        ):
            excluded[col] = f"looks like an identifier (its name, and {seen})"
            out.identifiers.append(col)
        elif integer and share >= ID_INT_DISTINCT:
            excluded[col] = f"looks like an identifier (integers nearly all distinct: {seen})"
            out.identifiers.append(col)
        elif textual and share > ID_TEXT_DISTINCT:
            excluded[col] = (
                f"looks like an identifier or free text (text with mostly unique values: {seen})"
            )
            out.identifiers.append(col)
        elif textual and unique > HIGH_CARD_LEVELS and unique > HIGH_CARD_SHARE * n:
            excluded[col] = (
                f"high-cardinality text ({unique:,} levels in {n:,} rows, about "
                f"{n / unique:.0f} rows a level); --keep {col} to use it"
            )
            out.high_cardinality.append(col)
        else:
            out.features.append(col)
    return out


def _as_model_frame(df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    out = df[features].copy()
    for col in features:
        s = out[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.astype("float64")
        elif not pd.api.types.is_numeric_dtype(s):
            # levels as text, whatever the reader made of them (bools, dates, mixed objects)
            out[col] = s.astype("string").astype("category")
    return out


# --- the split ------------------------------------------------------------------------------


def split(
    df: pd.DataFrame,
    y: np.ndarray,
    time_col: str | None,
    horizon: int | None = None,
) -> tuple[dict[str, np.ndarray], pd.Series | None]:
    """Row indices of train / valid / calibration / test, and the time column as split on.

    Out of time: whole periods (the column's distinct values), the latest ~20% for test, ~10%
    calibration and ~10% valid before them, at least one each; with a target read over
    `horizon` periods, the `horizon - 1` periods before the test are left out (an embargo, as
    `model.dataset.embargo_months`: no calibration outcome falls in the test's outcome
    period). Rows with no time value are in no part."""
    idx = np.arange(len(df))
    if time_col is not None:
        t = period_values(df[time_col], time_col)
        periods = np.sort(pd.unique(t.dropna()))
        gap = max((horizon or 1) - 1, 0)
        n = len(periods) - gap
        if n < 4:
            need = f"4 + {gap} embargo" if gap else "4"
            raise TableError(
                f"--time-col {time_col} needs at least {need} distinct periods, has {len(periods)}"
            )
        n_test = max(1, round(0.2 * n))
        n_cal = max(1, round(0.1 * n))
        n_valid = max(1, round(0.1 * n))
        first_test = len(periods) - n_test
        end_cal = first_test - gap
        bounds = [
            periods[end_cal - n_cal - n_valid],
            periods[end_cal - n_cal],
            periods[end_cal - 1],
            periods[first_test],
        ]
        parts = {
            "train": idx[(t < bounds[0]).to_numpy(bool)],
            "valid": idx[((t >= bounds[0]) & (t < bounds[1])).to_numpy(bool)],
            "calibration": idx[((t >= bounds[1]) & (t <= bounds[2])).to_numpy(bool)],
            "test": idx[(t >= bounds[3]).to_numpy(bool)],
        }
        return parts, t
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=42)
    train, hold = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=42)
    valid, calib = train_test_split(hold, test_size=0.5, stratify=y[hold], random_state=42)
    return {"train": train, "valid": valid, "calibration": calib, "test": test}, None


def _period_text(v) -> str:
    return v.strftime("%Y-%m-%d") if isinstance(v, pd.Timestamp) else str(v)


def embargo_words(times: pd.Series, parts: dict[str, np.ndarray], horizon: int) -> str:
    """The embargo in words: which periods (and how many rows) lie between calibration and
    test."""
    last_cal = times.iloc[parts["calibration"]].max()
    first_test = times.iloc[parts["test"]].min()
    between = times[(times > last_cal) & (times < first_test)]
    periods = [_period_text(p) for p in between.drop_duplicates().sort_values()]
    return (
        f"{len(periods)} period(s) ({', '.join(periods)}; {len(between):,} rows) left out "
        f"between calibration and test for a {horizon}-period target"
    )


def table_threads(requested: int, rows: int) -> int:
    """LightGBM threads: as asked, else one per `ROWS_PER_THREAD` training rows, at least one,
    at most the cores this process may use. On a small table the threads' start-up and
    synchronisation per tree cost more than they save, and on a busy machine all-core OpenMP
    waits on the busiest core (measured 2-3x slower than one thread on 10,000 rows)."""
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, rows // ROWS_PER_THREAD))


# --- the leakage guard ----------------------------------------------------------------------


def _solo_auc(x: pd.Series, y: np.ndarray) -> float:
    """How well one numeric column ranks the rows by itself (AUC, either direction; missing
    values left out)."""
    present = x.notna().to_numpy()
    ys = y[present]
    n1 = int(ys.sum())
    n0 = len(ys) - n1
    if n1 == 0 or n0 == 0:
        return 0.5
    ranks = pd.Series(x.to_numpy(float)[present]).rank().to_numpy()
    auc = (ranks[ys == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(max(auc, 1 - auc))


def leakage(
    auc: float, gain: pd.Series, train: pd.DataFrame, y_train: np.ndarray
) -> tuple[str, str] | None:
    """(kind, warning), or None: the test AUC at or above `LEAKAGE_AUC`, or one feature
    carrying more than `LEAKAGE_GAIN_SHARE` of the gain (3 features or more). The kind is
    `leakage` when the AUC is that high or a numeric column ranks the rows alone at
    `LEAKAGE_SOLO_AUC` (promotion keeps such a version out), `dominant_feature` when one
    feature only carries most of the gain (a warning: a strong honest driver does that too)."""
    total = float(gain.sum())
    if total <= 0:
        return None
    shares = (gain / total).sort_values(ascending=False)
    top, top_share = str(shares.index[0]), float(shares.iloc[0])
    too_good = auc >= LEAKAGE_AUC
    dominant = len(gain) >= 3 and top_share > LEAKAGE_GAIN_SHARE
    if not (too_good or dominant):
        return None
    named = {top: f"{top_share:.0%} of the gain"}
    for col in gain.index:
        s = train[col]
        if pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
            solo = _solo_auc(s, y_train)
            if solo >= LEAKAGE_SOLO_AUC:
                why = f"AUC {solo:.3f} alone"
                named[col] = f"{named[col]}, {why}" if col in named else why
    why = [f"Test AUC {auc:.3f}"] if too_good else []
    if dominant:
        why.append(f"{'t' if why else 'T'}he column {top} carries {top_share:.0%} of the gain")
    listed = ", ".join(f"{c} ({w})" for c, w in named.items())
    solo = any("alone" in w for w in named.values())
    kind = "leakage" if too_good or solo else "dominant_feature"
    return kind, (
        f"check for leakage: {listed}. {'; '.join(why)}: a column filled in after the "
        "outcome (a status, a closing date) or another model's output makes a model look "
        "perfect here and fail on new extracts; leave such a column out with --drop"
        + ("" if kind == "leakage" else " (a strong honest driver can do this too: look first)")
    )


# --- the job ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRequest:
    """An extract to train on: its outcome column, the value that counts as the event (for a
    non-binary target), an optional date/period column for an out-of-time split, columns to
    leave out. `keep`: columns to learn from even when they look like identifiers or
    high-cardinality text; `horizon`: the target's window in the time column's periods (an
    embargo of horizon - 1 periods before the test); `sep`, `encoding`: for reading a CSV;
    `threads`: 0 for `table_threads`' default."""

    home: Path
    file: Path
    target: str
    positive: str | None = None
    time_col: str | None = None
    drop: tuple[str, ...] = ()
    threads: int = 0
    name: str | None = None  # the model's name (default: the file's stem), normalised
    keep: tuple[str, ...] = ()
    horizon: int | None = None
    sep: str | None = None
    encoding: str | None = None


def _check_columns(df: pd.DataFrame, request: TableRequest) -> None:
    asked = [
        (request.target, "--target"),
        (request.time_col, "--time-col"),
        *((c, "--drop") for c in request.drop),
        *((c, "--keep") for c in request.keep),
    ]
    for col, option in asked:
        if col is not None and col not in df:
            raise TableError(
                f"{request.file} has no column {col!r} ({option}); columns: "
                f"{', '.join(map(str, df.columns))}"
            )
    if request.horizon is not None:
        if request.horizon < 1:
            raise TableError(f"--horizon {request.horizon}: give the target's window, 1 or more")
        if request.time_col is None:
            raise TableError("--horizon needs --time-col: the embargo is counted in its periods")


def train_table(request: TableRequest) -> TableResult:
    path, home, target, time_col = request.file, request.home, request.target, request.time_col
    positive, drop = request.positive, list(request.drop)
    df = read_table(path, sep=request.sep, encoding=request.encoding)
    _check_columns(df, request)
    warnings: dict[str, str] = {}
    unknown = df[target].isna()
    if unknown.all():
        raise TableError(f"no row of {path} has a value in {target!r}")
    if unknown.any():
        warnings["unlabelled_rows"] = (
            f"{int(unknown.sum()):,} rows have no target and were left out"
        )
        df = df.loc[~unknown].reset_index(drop=True)
    periods = None
    if time_col is not None:
        periods = period_values(df[time_col], time_col)
        undated = periods.isna()
        if undated.any():
            warnings["no_time"] = (
                f"{int(undated.sum()):,} rows have no {time_col} and were left out"
            )
            df = df.loc[~undated.to_numpy()].reset_index(drop=True)
            periods = periods.loc[~undated].reset_index(drop=True)
    y = target_vector(df[target], positive)
    if positive is not None and (note := merged_classes(df[target], y)):
        warnings["merged_classes"] = note
    if y.sum() < 20 or (1 - y).sum() < 20:
        raise TableError(f"the target has {y.sum()} events in {len(y)} rows: too few to learn")
    choice = choose_features(
        df.drop(columns=[target]),
        [*drop, *([time_col] if time_col else [])],
        tuple(request.keep),
        periods,
    )
    features, excluded = choice.features, choice.excluded
    if time_col:
        excluded[time_col] = "used for the out-of-time split"
    if not features:
        raise TableError(f"no column of {path} is left to learn from: {excluded}")
    if choice.identifiers:
        warnings["identifier"] = (
            f"{', '.join(choice.identifiers)} look(s) like identifiers and were left out "
            "(--keep COL to learn from one)"
        )
    if choice.high_cardinality:
        warnings["high_cardinality"] = (
            f"{', '.join(choice.high_cardinality)}: text with too many levels to learn from, "
            "left out (--keep COL to learn from one)"
        )
    frame = _as_model_frame(df, features)
    frame[LABEL] = y
    parts_idx, times = split(df, y, time_col, request.horizon)
    embargo = ""
    if times is not None and request.horizon and request.horizon > 1:
        embargo = embargo_words(times, parts_idx, request.horizon)
    parts = {k: frame.iloc[v] for k, v in parts_idx.items()}
    thin = {
        k: (int(v[LABEL].sum()), int(len(v) - v[LABEL].sum()))
        for k, v in parts.items()
        if min(v[LABEL].sum(), len(v) - v[LABEL].sum()) < MIN_PART_CLASS
    }
    if thin:
        said = ", ".join(f"{k} {e:,} events and {n:,} non-events" for k, (e, n) in thin.items())
        raise TableError(
            f"the split leaves too few of one class to fit, calibrate or judge a model ({said}; "
            f"each part needs {MIN_PART_CLASS} of each): "
            + (
                "the outcome is rare or missing in some periods; use a longer extract, or "
                "leave --time-col out for a stratified split"
                if time_col
                else "the target is too rare for this many rows; use a larger extract"
            )
        )
    name = re.sub(r"[^a-z0-9_]+", "_", (request.name or path.stem).lower()).strip("_") or "table"
    threads = table_threads(request.threads, len(parts["train"]))

    import mlflow

    from bookpulse.adapters import tracking
    from bookpulse.model.evaluate import evaluate, plot_pack
    from bookpulse.model.fit import fit_frames

    model = fit_frames(
        name,
        features,
        LABEL,
        TABLE_LGB,
        parts["train"],
        parts["valid"],
        parts["calibration"],
        threads,
    )
    test = parts["test"]
    p_test = model.predict(test)
    months = times.iloc[parts_idx["test"]] if times is not None else None
    if months is not None and not pd.api.types.is_datetime64_any_dtype(months):
        months = None
    ev = evaluate(test[LABEL].to_numpy(), p_test, months, model.predict(parts["train"]))
    gain = model.gain_importance()
    leak = leakage(ev.metrics["auc"], gain, parts["train"], parts["train"][LABEL].to_numpy())
    if leak:
        warnings = {leak[0]: leak[1], **warnings}
    tracking.configure(home)
    exp = tracking.experiment_id(home, f"bookpulse-table-{name}")
    with mlflow.start_run(experiment_id=exp, run_name=f"{name} {target}") as run:
        mlflow.set_tags(
            {
                "mode": "flat-table",
                "file": str(path.resolve()),
                "target": target,
                **{f"warning.{k}": v[:5000] for k, v in warnings.items()},
            }
        )
        mlflow.log_params(
            {
                "target": target,
                "positive": str(positive),
                "time_col": str(time_col),
                "split": "out-of-time" if time_col else "stratified random",
                "horizon": str(request.horizon),
                "embargo_periods": max((request.horizon or 1) - 1, 0) if time_col else 0,
                "keep": ", ".join(request.keep) or "None",
                "sep": str(request.sep),
                "encoding": str(request.encoding),
                "threads": threads,
                "n_features": len(features),
                "best_iteration": model.best_iteration,
                **{f"rows.{k}": len(v) for k, v in parts.items()},
                **{
                    f"positive_rate.{k}": round(float(v[LABEL].mean()), 6) for k, v in parts.items()
                },
                **{f"lgb.{k}": v for k, v in TABLE_LGB.params.items()},
            }
        )
        mlflow.log_dict(excluded, "excluded_columns.json")
        mlflow.log_metrics(ev.metrics)
        mlflow.log_input(
            mlflow.data.from_pandas(df, source=str(path.resolve()), targets=target, name=name),
            context="training",
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            contrib, sample = model.shap_sample(test)
            plot_pack(
                out / "plots",
                name,
                test[LABEL].to_numpy(),
                p_test,
                ev,
                gain,
                contrib,
                sample,
            )
            ev.gains.to_csv(out / "gains_by_decile.csv", index=False)
            (out / tracking.MODEL_FILE).write_text(model.to_json())
            mlflow.log_artifacts(str(out), artifact_path="validation")
        from bookpulse.jobs.table_model import register_table_model

        version = register_table_model(
            request, name, df, frame, parts_idx, times, model, ev.metrics, excluded
        )
    return TableResult(
        name,
        run.info.run_id,
        features,
        excluded,
        {k: len(v) for k, v in parts.items()},
        ev.metrics,
        f"bookpulse-table-{name}",
        version,
        warnings,
        embargo,
        threads,
    )
