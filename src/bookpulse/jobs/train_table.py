"""Flat-table mode: the same recipe and validation pack on any CSV or Parquet extract.

Analysts bring extracts (a customer per row, a target column). Strings become categoricals;
columns that look like identifiers are left out, with a notice; the split is out of time when
a time column is given (latest periods for test), otherwise stratified at random.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from bookpulse.adapters import tracking
from bookpulse.errors import BookpulseError
from bookpulse.model.evaluate import evaluate, plot_pack
from bookpulse.model.fit import fit_frames
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
_ID_WORDS = r"(id|no|number|key|uuid|name|surname|phone|email)"
_ID_NAME = re.compile(rf"(^|[_\s-]){_ID_WORDS}$", re.I)
_ID_CAMEL = re.compile(r"[a-z0-9](Id|ID|No|Number|Key|Name)$")


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


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TableError(f"no file {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() in (".csv", ".txt"):
            return pd.read_csv(path)
    except Exception as exc:
        raise TableError(f"cannot read {path}: {exc}") from None
    raise TableError(f"{path}: use a .csv or .parquet file")


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


def choose_features(df: pd.DataFrame, drop: list[str]) -> tuple[list[str], dict[str, str]]:
    """Columns to learn from, and those left out with the reason."""
    excluded = {c: "dropped on request" for c in drop}
    features = []
    n = len(df)
    for col in df.columns:
        if col in excluded:
            continue
        s = df[col]
        unique = s.nunique(dropna=True)
        textual = not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if unique <= 1:
            excluded[col] = "constant"
        elif (_ID_NAME.search(str(col)) or _ID_CAMEL.search(str(col))) and unique > 0.5 * n:
            excluded[col] = "looks like an identifier (name and mostly unique values)"
        elif textual and unique > 0.5 * n:
            excluded[col] = "text with mostly unique values (an identifier or free text)"
        elif pd.api.types.is_integer_dtype(s) and unique == n and s.is_monotonic_increasing:
            excluded[col] = "a running number (row identifier)"
        else:
            features.append(col)
    return features, excluded


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


def split(
    df: pd.DataFrame, y: np.ndarray, time_col: str | None
) -> tuple[dict[str, np.ndarray], pd.Series | None]:
    """Row indices of train / valid / calibration / test."""
    idx = np.arange(len(df))
    if time_col is not None:
        t = pd.to_datetime(df[time_col], errors="coerce")
        if t.isna().all():
            t = df[time_col]
        periods = np.sort(pd.unique(t.dropna()))
        n = len(periods)
        if n < 4:
            raise TableError(f"--time-col {time_col} needs at least 4 distinct periods, has {n}")
        # whole periods: the latest ~20% for test, ~10% calibration, ~10% valid, at least one each
        n_test = max(1, round(0.2 * n))
        n_cal = max(1, round(0.1 * n))
        n_valid = max(1, round(0.1 * n))
        first_test = n - n_test
        bounds = [
            periods[first_test - n_cal - n_valid],
            periods[first_test - n_cal],
            periods[first_test],
        ]
        parts = {
            "train": idx[(t < bounds[0]).to_numpy()],
            "valid": idx[((t >= bounds[0]) & (t < bounds[1])).to_numpy()],
            "calibration": idx[((t >= bounds[1]) & (t < bounds[2])).to_numpy()],
            "test": idx[(t >= bounds[2]).to_numpy()],
        }
        return parts, t
    rest, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=42)
    train, hold = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=42)
    valid, calib = train_test_split(hold, test_size=0.5, stratify=y[hold], random_state=42)
    return {"train": train, "valid": valid, "calibration": calib, "test": test}, None


@dataclass(frozen=True)
class TableRequest:
    """An extract to train on: its outcome column, the value that counts as the event (for a
    non-binary target), an optional date/period column for an out-of-time split, columns to
    leave out."""

    home: Path
    file: Path
    target: str
    positive: str | None = None
    time_col: str | None = None
    drop: tuple[str, ...] = ()
    threads: int = 0
    name: str | None = None  # the model's name (default: the file's stem), normalised


def train_table(request: TableRequest) -> TableResult:
    path, home, target = request.file, request.home, request.target
    positive, time_col, drop, threads = (
        request.positive,
        request.time_col,
        list(request.drop),
        request.threads,
    )
    df = read_table(path)
    for col in [target, time_col, *(drop or [])]:
        if col is not None and col not in df:
            raise TableError(f"{path} has no column {col!r}; columns: {', '.join(df.columns)}")
    unknown = df[target].isna()
    if unknown.any():
        df = df.loc[~unknown].reset_index(drop=True)
    y = target_vector(df[target], positive)
    if y.sum() < 20 or (1 - y).sum() < 20:
        raise TableError(f"the target has {y.sum()} events in {len(y)} rows: too few to learn")
    features, excluded = choose_features(
        df.drop(columns=[target]), [*(drop or []), *([time_col] if time_col else [])]
    )
    if time_col:
        excluded[time_col] = "used for the out-of-time split"
    frame = _as_model_frame(df, features)
    frame[LABEL] = y
    parts_idx, times = split(df, y, time_col)
    parts = {k: frame.iloc[v] for k, v in parts_idx.items()}
    name = re.sub(r"[^a-z0-9_]+", "_", (request.name or path.stem).lower()).strip("_") or "table"
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
    tracking.configure(home)
    exp = tracking.experiment_id(home, f"bookpulse-table-{name}")
    with mlflow.start_run(experiment_id=exp, run_name=f"{name} {target}") as run:
        mlflow.set_tags({"mode": "flat-table", "file": str(path.resolve()), "target": target})
        mlflow.log_params(
            {
                "target": target,
                "positive": str(positive),
                "time_col": str(time_col),
                "split": "out-of-time" if time_col else "stratified random",
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
                model.gain_importance(),
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
    )
