"""Flat-table models in the registry: their spec, registration, promotion and scoring.

A table model is its spec (`TableSpec`): the file and target it was trained on, the event,
the split, each feature with the type it was read as (numbers, true/false flags, or
categories with their levels) and the columns left out with the reason. `train-table` logs
it with the run (`validation/table_spec.json`), inside the registered pyfunc (beside the
fitted model) and as the version's tags, so promotion and scoring need nothing but the
registry.

Promotion (`promote_table`) uses the book models' gates and their one judging path
(`registry.judge`): minimum AUC, calibration error beyond its noise, and DeLong's paired test
against the champion on the same rows. The rows are the challenger's test rows, logged with
its run (`validation/test_rows.parquet`: the model's input columns, any other column the
champion of the day read, and the label) and scored by both versions. The challenger never
fitted on them; the champion may have, when it was trained on another file, and that can
only favour the champion (so a challenger is at worst kept wrongly, never promoted wrongly);
the decision says so when it cannot be ruled out.

Scoring (`score_table`) checks a new extract against the champion's spec before any work and
reports every problem in one message: missing columns, values that cannot be read as the type
trained (numbers, flags), with notes for extra columns (ignored) and category levels not seen
in training (scored as unseen, that is missing). Reasons are the book's path attributions
(`model.core.attribute`), phrased plainly: "Balance = 1200 raises the score".
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from bookpulse.adapters import registry, tracking
from bookpulse.adapters.registry import Decision, RegistryError
from bookpulse.jobs.train_table import LABEL, TableError, read_table
from bookpulse.model.core import (
    attribute,
    model_matrix,
    rank_in_book,
    score_columns,
)
from bookpulse.model.explain import PathAttribution
from bookpulse.model.fit import ScoringModel
from bookpulse.specs import GateSpec, SpecError, load_uplift_specs, model_names

PREFIX = "bookpulse-table-"
SPEC_FILE = "table_spec.json"
TEST_ROWS_FILE = "test_rows.parquet"
CARD_FILE = "model_card.md"
# the book models' gates, for extracts of unknown difficulty: a lower floor on AUC, the same
# calibration tolerance and the same DeLong margin against the champion
DEFAULT_GATES = GateSpec(min_auc=0.6, max_calibration_error=0.02, max_auc_drop=0.01)
OUT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_TRUE = {"true", "1", "1.0", "yes", "y", "t"}
_FALSE = {"false", "0", "0.0", "no", "n", "f"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableFeature(_Frozen):
    """One input column as trained: numbers, a true/false flag (read as 1/0) or categories
    (strings; a level not in `levels` is scored as unseen, i.e. missing)."""

    name: str
    kind: Literal["number", "flag", "category"]
    read_as: str = Field(description="the dtype the training file's column was read as")
    levels: list[str] = Field(default_factory=list)


class TableSpec(_Frozen):
    """What a flat-table model is: enough to score and judge it with nothing but the registry."""

    kind: Literal["table"] = "table"
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    registered_name: str = Field(pattern=r"^bookpulse-table-[a-z0-9_]+$")
    file: str
    data_sha256: str = Field(description="of the training file's bytes")
    target: str
    positive: str | None = Field(
        description="the target value that is the event (None: a 0/1 or true/false target)"
    )
    time_col: str | None = None
    horizon: int | None = Field(
        default=None, description="the target's window in periods of the time column"
    )
    split: Literal["out-of-time", "stratified random"]
    windows: dict[str, str] = Field(
        default_factory=dict, description="part -> first..last value of the time column"
    )
    rows: dict[str, int]
    event_rates: dict[str, float]
    features: list[TableFeature] = Field(min_length=1)
    excluded: dict[str, str] = Field(default_factory=dict, description="column -> why")
    warnings: dict[str, str] = Field(
        default_factory=dict, description="the guards' warnings at training: kind -> message"
    )
    reading: dict[str, str] = Field(
        default_factory=dict,
        description="how the training file was read (sep, encoding) when told: the default "
        "for the extracts it scores",
    )
    label: str = Field(default=LABEL, description="the 0/1 label's column in the test rows")
    gates: GateSpec = DEFAULT_GATES

    @property
    def event(self) -> str:
        return f"{self.target} = {self.positive}" if self.positive is not None else self.target

    def feature(self, name: str) -> TableFeature:
        return next(f for f in self.features if f.name == name)

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def table_name(stem: str) -> str:
    """A file stem or --name as a table model's name: lower case, [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "table"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the schema: an extract read as the model was trained -----------------------------------


@dataclass
class Conformed:
    """An extract read as a spec's model input, and what did not fit."""

    frame: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    bad_types: dict[str, str] = field(default_factory=dict)  # column -> what is wrong
    unseen: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> level -> rows
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.bad_types

    def notes(self) -> list[str]:
        """What is scored anyway: extra columns, unseen levels."""
        out = []
        if self.extra:
            out.append(f"extra columns, ignored: {', '.join(map(str, self.extra))}")
        for col, counts in self.unseen.items():
            shown = ", ".join(
                f"{lv!r} ({n:,} row{'s' if n != 1 else ''})" for lv, n in list(counts.items())[:5]
            )
            more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
            out.append(f"{col}: levels not seen in training, scored as unseen: {shown}{more}")
        return out

    def problems(self) -> list[str]:
        """Everything that stops scoring, then the notes."""
        out = []
        if self.missing:
            out.append(f"missing columns: {', '.join(self.missing)}")
        out += [f"{col}: {why}" for col, why in self.bad_types.items()]
        return out + self.notes()


def _examples(values: pd.Series) -> str:
    shown = values.astype(str).unique()[:3]
    return ", ".join(repr(v) for v in shown)


def convert(column: pd.Series, feature: TableFeature) -> tuple[pd.Series, str | None, dict]:
    """(the column as the model reads it, why it cannot be read as trained or None, unseen
    levels -> rows). Missing values stay missing; the model takes them."""
    name = feature.name
    if feature.kind == "category":
        s = column
        if pd.api.types.is_float_dtype(s) and s.dropna().mod(1).eq(0).all():
            s = s.astype("Int64")  # codes read as 1.0 this time, "1" in training
        text = s.astype("string")
        known = text.isin(feature.levels).fillna(False).astype(bool)
        new = text[text.notna() & ~known]
        unseen = {str(k): int(v) for k, v in new.value_counts().items()}
        values = pd.Categorical(text.where(known), categories=feature.levels)
        return pd.Series(values, index=column.index, name=name), None, unseen
    if pd.api.types.is_bool_dtype(column):
        if feature.kind == "flag":
            return column.astype("float64"), None, {}
        return column, f"trained as numbers, read as true/false ({feature.read_as} in training)", {}
    if pd.api.types.is_numeric_dtype(column):
        values = column.astype("float64")
        if feature.kind == "flag":
            bad = values.notna() & ~values.isin([0.0, 1.0])
            if bad.any():
                why = f"trained as true/false; {int(bad.sum()):,} values are neither 0 nor 1 "
                return values, why + f"(e.g. {_examples(column[bad])})", {}
        return values, None, {}
    text = column.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if feature.kind == "flag":
        low = text.str.lower()
        values = pd.Series(np.nan, index=column.index, dtype="float64")
        values[low.isin(_TRUE).fillna(False).astype(bool)] = 1.0
        values[low.isin(_FALSE).fillna(False).astype(bool)] = 0.0
        bad = ~blank & values.isna()
        what = "true/false"
    else:
        values = pd.to_numeric(text.where(~blank), errors="coerce").astype("float64")
        bad = ~blank & values.isna()
        what = "numbers"
    if bad.any():
        why = (
            f"trained as {what}; {int(bad.sum()):,} values cannot be read as {what} "
            f"(e.g. {_examples(column[bad])})"
        )
        return values, why, {}
    return values, None, {}


def conform(df: pd.DataFrame, spec: TableSpec) -> Conformed:
    """The extract's feature columns converted as trained, and every mismatch."""
    out = Conformed(frame=pd.DataFrame(index=df.index))
    for feature in spec.features:
        if feature.name not in df:
            out.missing.append(feature.name)
            continue
        values, why, unseen = convert(df[feature.name], feature)
        out.frame[feature.name] = values
        if why:
            out.bad_types[feature.name] = why
        if unseen:
            out.unseen[feature.name] = unseen
    known = {f.name for f in spec.features} | set(spec.excluded) | {spec.target}
    out.extra = [c for c in df.columns if c not in known]
    return out


# --- registration (called by train-table inside its run) ------------------------------------


def _window(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    first, last = values.min(), values.max()
    fmt = (lambda v: v.strftime("%Y-%m-%d")) if isinstance(first, pd.Timestamp) else str
    return f"{fmt(first)}..{fmt(last)}"


def build_spec(
    request,
    name: str,
    df: pd.DataFrame,
    frame: pd.DataFrame,
    parts_idx: dict[str, np.ndarray],
    times: pd.Series | None,
    model: ScoringModel,
    excluded: dict[str, str],
) -> TableSpec:
    features = []
    for col in model.features:
        read_as = str(df[col].dtype)
        if col in model.categories:
            kind, levels = "category", list(model.categories[col])
        else:
            kind, levels = ("flag" if pd.api.types.is_bool_dtype(df[col]) else "number"), []
        features.append(TableFeature(name=col, kind=kind, read_as=read_as, levels=levels))
    windows = {}
    if times is not None:
        windows = {k: _window(times.iloc[v]) for k, v in parts_idx.items()}
    y = frame[LABEL]
    reading = {"sep": request.sep, "encoding": request.encoding}
    run = mlflow.active_run()
    tags = MlflowClient().get_run(run.info.run_id).data.tags if run else {}
    warned = {k.removeprefix("warning."): v for k, v in tags.items() if k.startswith("warning.")}
    return TableSpec(
        name=name,
        registered_name=PREFIX + name,
        file=str(Path(request.file).resolve()),
        data_sha256=file_sha256(request.file),
        target=request.target,
        positive=None if request.positive is None else str(request.positive),
        time_col=request.time_col,
        horizon=request.horizon,
        split="out-of-time" if request.time_col else "stratified random",
        windows=windows,
        rows={k: len(v) for k, v in parts_idx.items()},
        event_rates={k: round(float(y.iloc[v].mean()), 6) for k, v in parts_idx.items()},
        features=features,
        excluded={str(k): str(v) for k, v in excluded.items()},
        warnings=warned,
        reading={k: v for k, v in reading.items() if v is not None},
    )


def table_card(spec: TableSpec, metrics: dict[str, float]) -> str:
    """The model card of a flat-table model (Markdown, as the book models' `model_card`)."""
    event = (
        f"`{spec.target}` = `{spec.positive}`"
        if spec.positive is not None
        else f"`{spec.target}` is 1 (true)"
    )
    lines = [
        f"# Model card: {spec.registered_name}",
        "",
        f"A flat-table model trained with `bookpulse train-table` on one extract: the "
        f"calibrated probability that {event}, for each row (one case per row).",
        "",
        "## Target",
        f"- column: `{spec.target}`; event: {event}",
        f"- event rate: {spec.event_rates.get('train', float('nan')):.2%} in training, "
        f"{spec.event_rates.get('test', float('nan')):.2%} in the test part",
        "",
        "## Data",
        f"- file: {spec.file} (sha256 {spec.data_sha256[:16]}...)",
        f"- split: {spec.split}"
        + (f" on `{spec.time_col}` (the latest periods for test)" if spec.time_col else ""),
    ]
    if spec.horizon and spec.horizon > 1:
        lines.append(
            f"- horizon {spec.horizon} periods: the {spec.horizon - 1} before the test are "
            "left out, so no calibration outcome falls inside the test's"
        )
    for part in ("train", "valid", "calibration", "test"):
        if part not in spec.rows:
            continue
        window = f"{spec.windows[part]}, " if spec.windows.get(part) else ""
        lines.append(
            f"- {part}: {window}{spec.rows[part]:,} rows, event rate {spec.event_rates[part]:.2%}"
        )
    lines += ["", f"## Features ({len(spec.features)})", "", "| column | read as | levels |"]
    lines.append("|---|---|---|")
    for f in spec.features:
        lines.append(f"| {f.name} | {f.kind} | {len(f.levels) if f.levels else ''} |")
    if spec.excluded:
        lines += ["", "## Columns left out", "", "| column | why |", "|---|---|"]
        lines += [f"| {c} | {why} |" for c, why in spec.excluded.items()]
    if spec.warnings:
        lines += ["", "## Warnings at training", ""]
        lines += [f"- **{kind}**: {text}" for kind, text in spec.warnings.items()]
    lines += ["", "## Test metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    g = spec.gates
    lines += [
        "",
        "## Gates",
        f"- minimum AUC {g.min_auc}, calibration error at most {g.max_calibration_error} "
        "above its sampling noise (ece_noise); against the champion, on this version's test "
        "rows scored by both, DeLong's paired test: promoted when the 95% interval of the AUC "
        f"difference rules out trailing by more than {g.max_auc_drop}",
        "",
        "## Limits",
        "- Trained and tested on one extract: "
        + (
            "the test part is its latest periods, so the test is out of time within the file; "
            if spec.time_col
            else "the test part is a random fifth of its rows, so the test is not out of time "
            "and later extracts may score worse; "
        )
        + "watch performance on new extracts.",
        "- bookpulse cannot know when each column was recorded: a column filled in after the "
        "outcome (a status, another model's score) leaks it. Check the columns above.",
        "- Probabilities are calibrated on the calibration part; an extract with another base "
        "rate (another population, season or campaign) shifts them, not the ranking.",
        "- Category levels not seen in training are scored as unseen (missing); columns read "
        "as another type are refused (`bookpulse score-table` says which).",
        "- Scores rank the rows of an extract; they are not causal effects of any action.",
        "- No weak-spot or fairness breakdowns: bookpulse does not know the extract's groups.",
    ]
    return "\n".join(lines) + "\n"


def register_table_model(
    request,
    name: str,
    df: pd.DataFrame,
    frame: pd.DataFrame,
    parts_idx: dict[str, np.ndarray],
    times: pd.Series | None,
    model: ScoringModel,
    metrics: dict[str, float],
    excluded: dict[str, str],
) -> str:
    """Log the spec, the test rows and the model card with the active run (train-table's),
    register the pyfunc as bookpulse-table-<name> with alias challenger; returns the version.

    `df`: the file as read (labelled rows), `frame`: the model's input with the label column,
    `parts_idx`: row positions of each part, `times`: the time column as split on (or None)."""
    spec = build_spec(request, name, df, frame, parts_idx, times, model, excluded)
    test_idx = parts_idx["test"]
    rows = frame.iloc[test_idx][[*model.features, LABEL]].reset_index(drop=True)
    for extra, values in _champion_columns(spec, df.iloc[test_idx]).items():
        rows[extra] = values.to_numpy()
    card = table_card(spec, metrics)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / SPEC_FILE).write_text(spec.model_dump_json(indent=2))
        (out / CARD_FILE).write_text(card)
        rows.to_parquet(out / TEST_ROWS_FILE, index=False)
        for file in (SPEC_FILE, CARD_FILE, TEST_ROWS_FILE):
            mlflow.log_artifact(str(out / file), artifact_path="validation")
        model_file = out / tracking.MODEL_FILE
        model_file.write_text(model.to_json())
        test = rows.head(5)
        version = tracking.register(
            tracking.CalibratedProbability(),
            {"scoring_model": str(model_file), "table_spec": str(out / SPEC_FILE)},
            tracking.example_input(test, model.features),
            pd.DataFrame({"probability": model.predict(test)}),
            spec.registered_name,
            description=f"Flat-table model: the probability that {spec.event}, trained with "
            f"`bookpulse train-table` on {Path(spec.file).name}.",
            card=card,
            tags=_version_tags(spec),
        )
    mlflow.set_tags({"registered_name": spec.registered_name, "registered_version": version})
    return version


def _version_tags(spec: TableSpec) -> dict[str, str]:
    def cut(text: str) -> str:
        return text if len(text) <= 4000 else text[:3990] + " ..."

    return {
        "mode": "flat-table",
        "model": spec.name,
        "file": spec.file,
        "data_sha256": spec.data_sha256,
        "target": spec.target,
        "positive": str(spec.positive),
        "time_col": str(spec.time_col),
        "horizon": str(spec.horizon),
        "split": spec.split,
        "spec_hash": spec.spec_hash,
        "n_features": str(len(spec.features)),
        "features": cut(", ".join(f"{f.name}:{f.kind}" for f in spec.features)),
        "excluded": cut("; ".join(f"{c}: {w}" for c, w in spec.excluded.items())),
        **{f"warning.{k}": cut(v) for k, v in spec.warnings.items()},
        **{f"reading.{k}": v for k, v in spec.reading.items()},
        **{f"rows.{k}": str(v) for k, v in spec.rows.items()},
        **{f"window.{k}": v for k, v in spec.windows.items() if v},
        **{f"gates.{k}": str(v) for k, v in spec.gates.model_dump().items()},
        "spec_artifact": f"validation/{SPEC_FILE}",
    }


def _champion_columns(spec: TableSpec, test: pd.DataFrame) -> dict[str, pd.Series]:
    """The columns the current champion reads that this version does not, as the champion
    reads them: logged with the test rows so that the two can be compared on them even when
    the new version leaves some out."""
    champion = registry.alias_version(spec.registered_name, tracking.CHAMPION)
    if champion is None:
        return {}
    old, _ = load_table_version(spec.registered_name, champion)
    mine = {f.name for f in spec.features}
    out = {}
    for feature in old.features:
        if feature.name not in mine and feature.name in test:
            out[feature.name] = convert(test[feature.name], feature)[0]
    return out


# --- reading a version back -----------------------------------------------------------------


def load_table_version(name: str, version: str, threads: int = 1) -> tuple[TableSpec, ScoringModel]:
    """A registered table model version's spec and fitted model, from its pyfunc's files."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp))
        spec_file = next(local.rglob(SPEC_FILE), None)
        model_file = next(local.rglob(tracking.MODEL_FILE), None)
        if spec_file is None or model_file is None:
            raise RegistryError(
                f"{name} version {version} has no {SPEC_FILE}: it is not a flat-table model "
                "registered by `bookpulse train-table`"
            )
        spec = TableSpec.model_validate_json(spec_file.read_text())
        return spec, ScoringModel.from_json(model_file.read_text(), threads=threads)


@dataclass(frozen=True)
class TableRef:
    """A table model known to the tracking store: its short name and registered name."""

    name: str
    registered_name: str

    @property
    def decisions_as(self) -> str:
        """The model tag of its promotion decisions: the registered name (a table may share
        its short name with a book model)."""
        return self.registered_name


def table_models() -> list[str]:
    """Names of the table models trained in the tracking store (registered or only run)."""
    client = MlflowClient()
    names = {m.name for m in client.search_registered_models(f"name LIKE '{PREFIX}%'")}
    names |= {e.name for e in client.search_experiments(filter_string=f"name LIKE '{PREFIX}%'")}
    return sorted(n.removeprefix(PREFIX) for n in names)


def table_named(model: str) -> TableRef:
    """The table model `model` (its name, or bookpulse-table-<name>); tracking configured.
    An unknown name is refused with every kind of model that could be meant."""
    name = table_name(model.removeprefix(PREFIX))
    registered = PREFIX + name
    client = MlflowClient()
    found = client.get_experiment_by_name(registered) is not None
    if not found:
        try:
            client.get_registered_model(registered)
            found = True
        except MlflowException:
            found = False
    if found:
        return TableRef(name, registered)
    tables = table_models()
    raise SpecError(
        f"unknown model {model!r}: book models {', '.join(model_names()) or 'none'}; uplift "
        f"models {', '.join(load_uplift_specs()) or 'none'}; table models "
        + (
            ", ".join(tables)
            if tables
            else "none yet (train one with `bookpulse train-table FILE --target COL`)"
        )
    )


# --- promotion --------------------------------------------------------------------------------


def promote_table(home: Path, ref: TableRef) -> Decision:
    """The challenger against the gates and, when there is one, the champion on the
    challenger's test rows (module docstring). Recorded as the book models' decisions are,
    under the registered name."""
    name = ref.registered_name
    challenger = registry.alias_version(name, tracking.CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"{name} has no challenger: train one (`bookpulse train-table FILE --target COL"
            f" --name {ref.name}`)"
        )
    champion = registry.alias_version(name, tracking.CHAMPION)
    spec, new_model = load_table_version(name, challenger)
    test_window = spec.windows.get("test", "")
    window = test_window.split("..") if test_window else []
    if challenger == champion:
        return registry.unchanged(home, ref.decisions_as, challenger, window)
    run_id = MlflowClient().get_model_version(name, challenger).run_id
    rows = _test_rows(name, challenger, run_id)
    y = rows[spec.label].to_numpy()
    p_old, note = None, ""
    if champion is not None:
        old, old_model = load_table_version(name, champion)
        if (old.target, old.positive) != (spec.target, spec.positive):
            raise RegistryError(
                f"{name}: the champion (version {champion}) predicts {old.event}, the "
                f"challenger (version {challenger}) {spec.event}: not the same event, so their "
                f"AUCs cannot be compared. Train the new target under another name (--name)."
            )
        cannot = [f for f in old_model.features if f not in rows]
        if cannot:
            raise RegistryError(
                f"{name}: the champion (version {champion}) cannot score the challenger's "
                f"(version {challenger}) test rows: it needs {', '.join(cannot)}, which the "
                f"challenger's training file ({Path(spec.file).name}) does not have. The two "
                "must be compared on the same rows: train the challenger on an extract with "
                "those columns (leave them out of its features with --drop if you wish: its "
                "test rows keep every column the champion reads)."
            )
        p_old = old_model.predict(rows)
        note = _overlap(old, champion, spec)
    p_new = new_model.predict(rows)
    return registry.judge(
        home,
        ref.decisions_as,
        name,
        challenger,
        champion,
        window,
        y,
        p_new,
        p_old,
        spec.gates,
        rows_from=f"the test rows of version {challenger}'s run {run_id} ({len(rows):,} rows, "
        f"{int(y.sum()):,} events)",
        note=note,
        failing=(
            {"no_leakage": f"training warned of leakage: {spec.warnings['leakage']}"}
            if "leakage" in spec.warnings
            else None
        ),
    )


def _test_rows(name: str, version: str, run_id: str) -> pd.DataFrame:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"validation/{TEST_ROWS_FILE}", dst_path=tmp
            )
            return pd.read_parquet(local)
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"{name} version {version}: its run {run_id} has no validation/{TEST_ROWS_FILE} "
            f"({type(exc).__name__}), so it cannot be judged on its test rows; retrain it"
        ) from None


def _overlap(old: TableSpec, champion: str, new: TableSpec) -> str:
    """Why the champion may have fitted some of the challenger's test rows, or ''."""
    same_split = (old.split, old.time_col, old.target, old.positive) == (
        new.split,
        new.time_col,
        new.target,
        new.positive,
    )
    if old.data_sha256 == new.data_sha256 and same_split:
        return ""  # the same file split the same way: the same held-out rows
    if old.time_col and old.time_col == new.time_col:
        fitted = old.windows.get("calibration", "").split("..")[-1]
        tested = new.windows.get("test", "").split("..")[0]
        try:
            if fitted and tested and pd.Timestamp(fitted) < pd.Timestamp(tested):
                return ""  # the champion's data ends before these rows begin
        except (ValueError, TypeError):
            pass
    return (
        f"the champion (version {champion}) was trained on another file "
        f"({Path(old.file).name}) and may have fitted some of these rows, which can only "
        "favour it"
    )


# --- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreTableRequest:
    """Score FILE with table model MODEL's champion into OUT (.csv or .parquet). `carry`:
    columns of the file copied beside the scores (default: those training left out, such
    as identifiers and dates, that the file has). `sep`, `encoding`: for reading a CSV
    (default: as the training file was read when told, else sniffed / UTF-8)."""

    home: Path
    model: str
    file: Path
    out: Path
    carry: tuple[str, ...] | None = None
    sep: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class ScoreTableResult:
    registered_name: str
    version: str
    run_id: str
    out: Path
    rows: int
    kept: list[str]
    notes: list[str]
    mean_probability: float
    top_decile_probability: float
    seconds: float


def _out_format(out: Path) -> str:
    kind = OUT_SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise TableError(f"--out {out}: name a .csv or .parquet file")
    return kind


def score_table(request: ScoreTableRequest) -> ScoreTableResult:
    """Check the extract against the champion's spec (every problem in one message, before
    any work), score it, write OUT whole or not at all."""
    started = time.perf_counter()
    kind = _out_format(request.out)
    if request.out.resolve() == Path(request.file).resolve():
        raise TableError(f"--out {request.out} is the extract itself: write the scores elsewhere")
    if request.out.is_dir():
        raise TableError(f"--out {request.out} is a folder: give a file name (.csv or .parquet)")
    tracking.configure(request.home)
    ref = table_named(request.model)
    version = registry.alias_version(ref.registered_name, tracking.CHAMPION)
    if version is None:
        raise RegistryError(
            f"{ref.registered_name} has no champion: promote its challenger first "
            f"(`bookpulse promote {ref.name}`)"
        )
    spec, model = load_table_version(ref.registered_name, version)
    run_id = MlflowClient().get_model_version(ref.registered_name, version).run_id
    told = {"sep": request.sep, "encoding": request.encoding}
    reading = {**spec.reading, **{k: v for k, v in told.items() if v is not None}}
    df = read_table(Path(request.file), **reading)
    if df.empty:
        raise TableError(f"{request.file} has no rows to score")
    checked = conform(df, spec)
    carry = request.carry
    keep = list(carry) if carry is not None else [c for c in spec.excluded if c in df]
    absent = [c for c in keep if c not in df]
    if absent:
        checked.missing += [f"{c} (asked for with --carry)" for c in absent]
    taken = set(output_columns())
    if carry is not None and taken & set(carry):
        raise TableError(
            f"--carry {', '.join(c for c in carry if c in taken)}: the scores have a column of "
            "that name; carry it under another name (rename it in the extract) or leave it out"
        )
    if not checked.ok:
        listed = "\n".join(f"  - {p}" for p in checked.problems())
        raise TableError(
            f"{request.file} does not match what {ref.registered_name} version {version} was "
            f"trained on ({Path(spec.file).name}); nothing was scored:\n{listed}"
        )
    scores = score_rows(model, spec, df, checked.frame)
    out = pd.DataFrame({"row": np.arange(1, len(df) + 1)})
    for col in keep:  # a carried column named like a score's keeps its values under extract_
        out[f"extract_{col}" if col in taken else col] = df[col].to_numpy()
    for col in scores.columns:
        out[col] = scores[col].to_numpy()
    out["model"] = ref.registered_name
    out["model_version"] = version
    out["run_id"] = run_id
    write_atomically(out, request.out, kind)
    p = scores["probability"]
    return ScoreTableResult(
        ref.registered_name,
        version,
        run_id,
        request.out,
        len(out),
        keep,
        checked.notes(),
        float(p.mean()),
        float(p[scores["decile"] == 1].mean()),
        time.perf_counter() - started,
    )


def output_columns() -> list[str]:
    """The columns score-table writes besides the carried ones (the scoring core's, with the
    row number and the rank within the extract)."""
    return ["row", "percentile", "decile", *score_columns()]


def score_rows(
    model: ScoringModel, spec: TableSpec, raw: pd.DataFrame, frame: pd.DataFrame
) -> pd.DataFrame:
    """probability, percentile and decile within these rows, and the top reasons (feature,
    direction, contribution in calibrated log-odds, sentence) for the model input `frame`
    (`conform`'s) of the extract `raw`."""
    paths = PathAttribution.from_booster(model.booster)
    groups = np.arange(len(model.features), dtype=np.int32)  # no catalog: the plain top 3
    probability, credit, top = attribute(model, paths, model_matrix(model, frame), groups)
    out = pd.DataFrame({"probability": probability}, index=frame.index)
    ranks = rank_in_book(out["probability"])
    out["percentile"], out["decile"] = ranks["percentile"], ranks["decile"]
    names = np.asarray(model.features, dtype=object)
    shown: dict[int, np.ndarray] = {}
    rows = np.arange(len(frame))
    for j in range(top.shape[1]):
        idx = top[:, j]
        contribution = credit[rows, idx]
        direction = np.where(contribution >= 0, "raises", "lowers")
        sentence = np.empty(len(frame), dtype=object)
        for f in np.unique(idx):
            if f not in shown:
                shown[f] = _shown(raw[names[f]], frame[names[f]], spec.feature(names[f]))
            sel = np.flatnonzero(idx == f)
            sentence[sel] = [
                f"{names[f]} = {v} {d} the score"
                for v, d in zip(shown[f][sel], direction[sel], strict=True)
            ]
        out[f"reason{j + 1}_feature"] = names[idx]
        out[f"reason{j + 1}_direction"] = direction
        out[f"reason{j + 1}_contribution"] = contribution
        out[f"reason{j + 1}_sentence"] = sentence
    return out


def _shown(raw: pd.Series, read: pd.Series, feature: TableFeature) -> np.ndarray:
    """Each row's value of a feature as a reason names it: as written in the extract;
    "(missing)" when empty, and a level not seen in training says so."""
    if feature.kind == "category":
        text = raw.astype("string")
        out = text.fillna("(missing)").to_numpy(object)
        unseen = (text.notna() & read.isna()).to_numpy()
        out[unseen] = [f"{v} (not seen in training)" for v in out[unseen]]
        return out
    if feature.kind == "flag":
        v = read.to_numpy(np.float64)
        return np.where(np.isnan(v), "(missing)", np.where(v == 1.0, "true", "false")).astype(
            object
        )
    v = read.to_numpy(np.float64)
    labels, inverse = np.unique(v, return_inverse=True)
    text = np.asarray(["(missing)" if np.isnan(x) else f"{x:.6g}" for x in labels], dtype=object)
    return text[inverse.ravel()]


def write_atomically(frame: pd.DataFrame, out: Path, kind: str) -> None:
    """Write beside `out`, then rename into place: `out` holds the old file or the whole new
    one, never part of one; nothing is left behind on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name, created by the writer under the user's umask (mkstemp would make it 0600)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if kind == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        if out.exists():  # a replaced file keeps its permissions
            os.chmod(tmp, out.stat().st_mode & 0o7777)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
