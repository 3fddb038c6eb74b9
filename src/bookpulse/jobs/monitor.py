"""`bookpulse monitor`: each champion's drift in one month against the reference profile
logged with its training run (PSI, missing, mix, volume: `bookpulse.model.drift`); the early
outcome reads of every published month whose outcome window is still open, and each
champion's label-free expected performance this month (`bookpulse.model.early`); the trend of
the last 12 monitored months; an HTML report and a run in the MLflow experiment
bookpulse-monitoring.

The early reads take the scored months published under the home's scores folder
(`$BOOKPULSE_HOME/scores/YYYY-MM`, or the folder given), each with the probabilities and the
model versions that scored it, and read the book only up to the monitored month. The trend
reads the earlier monitor runs of the same book from MLflow (their logged score PSI, rows,
verdict and top drifting features) and adds this month."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.adapters.champions import available_champions
from bookpulse.adapters.publish import MANIFEST_FILE, Manifest
from bookpulse.adapters.registry import load_reference, run_metrics
from bookpulse.adapters.report import (
    EXPERIMENT,
    log_report_run,
    monitor_html,
    reports_dir,
    write_page,
)
from bookpulse.book import io
from bookpulse.config import get_settings
from bookpulse.domain import ENTITY_TABLES
from bookpulse.errors import BookpulseError, MonitorError
from bookpulse.features import build_features, read_frames
from bookpulse.jobs.score import check_month, latest_month, require_month
from bookpulse.labels import BookSnapshots, snapshot_columns
from bookpulse.model.batch import scored_population
from bookpulse.model.core import Champion
from bookpulse.model.drift import Drift, compare, top_drifting, worst
from bookpulse.model.early import (
    EarlyRead,
    Elapsed,
    Estimate,
    Timing,
    early_read,
    elapsed,
    estimate,
    partial_labels,
    reading_of,
    timing,
)
from bookpulse.specs import ModelSpec, load_feature_catalog, load_model_specs

TREND_MONTHS = 12
COVERAGE = 0.99  # a published month's rows found in the book's population at its month-end


@dataclass(frozen=True)
class MonitorRequest:
    """One month to check; `None` takes the home's book and the book's latest month."""

    home: Path
    book: Path | None = None
    as_of: str | None = None
    scores: Path | None = None  # the folder of published months (default $BOOKPULSE_HOME/scores)


@dataclass
class Report:
    month: str
    path: Path  # the HTML page
    run_id: str  # its MLflow run


@dataclass
class MonitorResult:
    report: Report
    drifts: dict[str, Drift]
    not_monitored: dict[str, str]  # model -> why (no champion yet)
    early: list[EarlyRead] = field(default_factory=list)  # open windows' events so far
    early_skipped: dict[str, str] = field(default_factory=dict)  # "model scored T" -> why not
    estimates: dict[str, Estimate] = field(default_factory=dict)  # model -> CBPE this month
    trend: dict[str, pd.DataFrame] = field(default_factory=dict)  # model -> last 12 months

    @property
    def early_flagged(self) -> list[EarlyRead]:
        return [r for r in self.early if r.flagged]


def month_checks(
    book: Path, as_of: str, champions: dict[str, Champion]
) -> tuple[dict[str, Drift], dict[str, np.ndarray]]:
    """Each champion's drift in month `as_of` of `book` against its run's reference, on the
    rows it scores (its population), and its probabilities for those rows."""
    as_of = io.month_key(as_of)
    check_month(book, as_of)
    references = {name: load_reference(c) for name, c in champions.items()}
    catalog = load_feature_catalog()
    skip = frozenset(
        f for e in ("customer", "card") for f, s in catalog.for_entity(e).items() if not s.monitor
    )
    customers, cards = build_features(read_frames(book, as_of), as_of)
    frames = {"customer": customers, "card": cards}
    out, probabilities = {}, {}
    for name, champ in champions.items():
        frame = scored_population(champ.spec, frames[champ.spec.entity])
        scores = champ.model.predict(frame) if len(frame) else np.array([])
        out[name] = compare(name, references[name], frame, scores, skip=skip)
        probabilities[name] = np.asarray(scores, dtype=float)
    return out, probabilities


def drifts(book: Path, as_of: str, champions: dict[str, Champion]) -> dict[str, Drift]:
    """Each champion's drift in month `as_of` of `book` (see `month_checks`)."""
    return month_checks(book, as_of, champions)[0]


def estimates(
    as_of: str,
    probabilities: dict[str, np.ndarray],
    champions: dict[str, Champion],
    found: dict[str, Drift],
) -> dict[str, Estimate]:
    """Each champion's expected performance this month from its probabilities alone (CBPE),
    beside the figures its validation pack promised and the estimate on its test window."""
    out = {}
    for name, p in probabilities.items():
        try:
            promised = run_metrics(champions[name].run_id)
        except MlflowException:
            promised = {}
        out[name] = estimate(name, as_of, p, promised, found[name].reference_expected_auc)
    return out


def _published(scores: Path, at: str) -> list[str]:
    """The months published under `scores` (folders YYYY-MM with a manifest) before `at`."""
    if not scores.is_dir():
        return []
    found = [
        d.name
        for d in scores.iterdir()
        if re.fullmatch(r"\d{4}-\d{2}", d.name) and (d / MANIFEST_FILE).is_file()
    ]
    return sorted(m for m in found if m < at)


def early_reads(
    book: Path, at: str, scores: Path, specs: dict[str, ModelSpec]
) -> tuple[list[EarlyRead], dict[str, str]]:
    """For each month published under `scores` whose outcome window is open at month-end `at`
    for a model that scored it: the events so far in the book (read up to `at` only) against
    what that month's published probabilities expect for the time elapsed, by the timing of
    events measured on the book's own closed windows (`bookpulse.model.early`). Also what
    could not be read, and why."""
    at = io.month_key(at)
    months = io.read_meta(book)["months"]
    upto = months[: months.index(at) + 1]
    wanted: list[tuple[str, Manifest, ModelSpec]] = []
    skipped: dict[str, str] = {}
    for scored in _published(Path(scores), at):
        if scored not in upto:
            continue
        try:
            manifest = Manifest.read(Path(scores) / scored)
        except BookpulseError as exc:
            skipped[f"scores of {scored}"] = str(exc)
            continue
        if io.month_key(manifest.as_of) != scored:
            skipped[f"scores of {scored}"] = f"the folder holds the scores of {manifest.as_of}"
            continue
        for name in manifest.models:
            spec = specs.get(name)
            if spec is not None and elapsed(spec.target, scored, at, upto) is not None:
                wanted.append((scored, manifest, spec))
    columns = list(dict.fromkeys(c for _, _, s in wanted for c in snapshot_columns(s.target)))
    snapshots = BookSnapshots(book, columns)
    cards = None
    if any(s.target.kind == "first_use" for _, _, s in wanted):
        cards = io.read_static(book, "cards", ["card_id", "issue_date", "first_use_date"])
        later = cards["first_use_date"] > io.month_end(at)  # not yet known at `at`
        cards.loc[later, "first_use_date"] = pd.NaT
    reads = []
    timings: dict[tuple[str, Elapsed], Timing | None] = {}  # the same for every scored month
    for scored, manifest, spec in wanted:
        name, target, used = spec.name, spec.target, manifest.models[spec.name]
        what = f"{name} scored {scored}"
        key, column = spec.id_column, f"{spec.prefix}_probability"
        path = Path(scores) / scored / f"{ENTITY_TABLES[spec.entity]}.parquet"
        try:
            published = pd.read_parquet(path, columns=[key, column]).dropna(subset=[column])
        except (OSError, KeyError, ValueError) as exc:
            skipped[what] = f"{path} could not be read ({type(exc).__name__}: {exc})"
            continue
        labels = partial_labels(target, scored, at, upto, snapshots, cards)[[key, target.label]]
        joined = published.astype({key: "int64"}).merge(labels, on=key)
        if len(published) == 0 or len(joined) < COVERAGE * len(published):
            skipped[what] = (
                f"{len(joined):,} of its {len(published):,} published rows are in this book's "
                f"population at {scored}: the month was scored on another book"
            )
            continue
        try:
            promised = run_metrics(used.run_id)
        except MlflowException:
            promised = {}
        part = elapsed(target, scored, at, upto)
        if (name, part) not in timings:
            timings[name, part] = timing(target, part, at, upto, snapshots, cards)
        reads.append(
            early_read(
                name,
                scored,
                at,
                part,
                joined[target.label].to_numpy(int),
                joined[column].to_numpy(float),
                band=float(promised.get("oe_month_max_dev", 0.0)),
                reading=reading_of(target, scored, at),
                measured=timings[name, part],
            )
        )
    return reads, skipped


def history(home: Path, book: Path, at: str, found: dict[str, Drift]) -> dict[str, pd.DataFrame]:
    """Each model's last TREND_MONTHS monitored months up to `at`: month, rows, score PSI,
    verdict and top drifting features, from the earlier monitor runs of this book logged in
    MLflow (the latest run of a month counts; runs logged before the book was recorded count
    too), with this month's figures in place of any earlier run of it."""
    rows: dict[tuple[str, str], dict] = {}
    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = []
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string="tags.kind = 'monitor'",
            order_by=["attributes.start_time ASC"],
            max_results=5000,
        )
    book_tag = str(Path(book).resolve())
    for run in runs:  # oldest first: a later run of a month replaces an earlier one
        tags, metrics = run.data.tags, run.data.metrics
        month = tags.get("month", "")
        if not month or month >= at or tags.get("book", book_tag) != book_tag:
            continue
        for name in found:
            if f"{name}.score_psi" not in metrics:
                continue
            rows[name, month] = {
                "month": month,
                "rows": metrics.get(f"{name}.rows", float("nan")),
                "score_psi": metrics[f"{name}.score_psi"],
                "verdict": tags.get(f"{name}.verdict", ""),
                "top_drifting": tags.get(f"{name}.top_drifting", ""),
            }
    out = {}
    for name, d in found.items():
        rows[name, at] = {
            "month": at,
            "rows": float(d.rows),
            "score_psi": d.score_psi,
            "verdict": d.verdict,
            "top_drifting": top_drifting(d.features),
        }
        table = pd.DataFrame([r for (n, _), r in rows.items() if n == name])
        out[name] = table.sort_values("month").tail(TREND_MONTHS).reset_index(drop=True)
    return out


def monitor(request: MonitorRequest) -> MonitorResult:
    """Check every champion in one month, read the open windows early; write the page and log
    the run."""
    home = Path(request.home)
    book = request.book or get_settings().book_dir
    as_of = io.month_key(request.as_of) if request.as_of else latest_month(book)
    require_month(book, as_of)
    tracking.configure(home)
    specs = load_model_specs()
    champions, missing = available_champions(list(specs.values()))
    scores = Path(request.scores) if request.scores else Path(home) / "scores"
    try:
        found, probabilities = month_checks(book, as_of, champions)
        reads, early_skipped = early_reads(book, as_of, scores, specs)
    except (OSError, KeyError, ValueError) as exc:  # unreadable files, a damaged reference
        raise MonitorError(f"monitoring {as_of} failed: {type(exc).__name__}: {exc}") from None
    expected = estimates(as_of, probabilities, champions, found)
    trend = history(home, book, as_of, found)
    versions = {n: c.version for n, c in champions.items()}
    catalog = load_feature_catalog()
    descriptions = {
        f: s.description for e in ("customer", "card") for f, s in catalog.for_entity(e).items()
    }
    page = reports_dir(home) / f"monitor-{as_of}.html"
    write_page(
        page,
        monitor_html(as_of, found, versions, reads, early_skipped, expected, trend, descriptions),
    )
    metrics, tags = {}, {}
    for name, d in found.items():
        metrics[f"{name}.score_psi"] = d.score_psi
        top = d.features.loc[d.features["top"]]
        metrics[f"{name}.max_top_feature_psi"] = float(top["psi"].max()) if len(top) else 0.0
        metrics[f"{name}.max_missing_change"] = float(
            (d.features["missing_now"] - d.features["missing_reference"]).abs().max()
        )
        metrics[f"{name}.mean_score"] = d.mean_score
        metrics[f"{name}.rows"] = float(d.rows)
        metrics[f"{name}.alarm"] = float(("stable", "watch", "act").index(d.verdict))
        tags[f"{name}.verdict"] = d.verdict
        tags[f"{name}.version"] = versions[name]
        tags[f"{name}.top_drifting"] = top_drifting(d.features) or "-"
    for name, e in expected.items():
        metrics[f"{name}.cbpe_auc"] = e.expected_auc
        metrics[f"{name}.cbpe_event_rate"] = e.expected_event_rate
        tags[f"{name}.cbpe"] = e.verdict
    for r in reads:
        key = f"{r.model}.early.{r.scored}"
        metrics[f"{key}.observed"] = float(r.observed)
        metrics[f"{key}.expected"] = r.expected
        metrics[f"{key}.observed_over_expected"] = r.observed_over_expected
        metrics[f"{key}.z"] = r.z
        metrics[f"{key}.elapsed_fraction"] = r.elapsed.fraction
        tags[f"{key}.verdict"] = r.verdict
    flagged = [r for r in reads if r.flagged]
    tags["verdict"] = worst(d.verdict for d in found.values())
    tags["early.verdict"] = (
        "; ".join(f"{r.model} scored {r.scored}: {r.verdict}" for r in flagged) or "as expected"
    )
    tags["book"] = str(Path(book).resolve())
    run_id = log_report_run(home, "monitor", as_of, metrics, tags, page)
    return MonitorResult(
        Report(as_of, page, run_id), found, missing, reads, early_skipped, expected, trend
    )
