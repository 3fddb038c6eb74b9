"""`bookpulse monitor` and `bookpulse review`: read the book, the scores and MLflow, compute
(drift.py, review.py), write the HTML report and log a monitoring run (I/O at the edges)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bookpulse.book import io
from bookpulse.features import build_features, read_frames
from bookpulse.labels import labelled_months, labels_for_month
from bookpulse.monitoring.drift import Drift, compare, worst
from bookpulse.monitoring.report import monitor_html, review_html
from bookpulse.monitoring.review import OUTCOME, Realised, list_outcomes, list_totals, realised
from bookpulse.scoring.batch import (
    PREFIX,
    check_month,
    default_out,
    read_scores,
    scored_population,
)
from bookpulse.scoring.core import Champion
from bookpulse.specs import ModelSpec, Playbook, load_feature_catalog
from bookpulse.training import tracking

EXPERIMENT = "bookpulse-monitoring"
PROMISED = (
    "auc",
    "lift_top10",
    "ece",
    "ece_noise",
    "event_rate",
    "mean_probability",
    "oe_month_max_dev",
)


class MonitorError(Exception):
    """The month cannot be monitored or reviewed; the message says what to do."""


@dataclass
class Report:
    month: str
    path: Path  # the HTML page
    run_id: str  # its MLflow run


def reports_dir(home: Path) -> Path:
    return Path(home) / "reports"


def load_reference(champion: Champion) -> dict:
    """The reference profile logged with the champion's training run."""
    name = f"{champion.spec.registered_name} v{champion.version}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=champion.run_id,
                artifact_path=f"validation/{tracking.REFERENCE_FILE}",
                dst_path=tmp,
            )
            return json.loads(Path(local).read_text())
    except (MlflowException, OSError) as exc:
        raise MonitorError(
            f"{name} has no reference profile in its training run ({type(exc).__name__}): it "
            f"was trained before the monitor existed; retrain it (`bookpulse train "
            f"{champion.spec.name}`, then `bookpulse promote {champion.spec.name}`)"
        ) from None


def monitor(
    home: Path, book: Path, as_of: str, champions: dict[str, Champion]
) -> dict[str, Drift]:
    """Each champion's drift in month `as_of` of `book` against its run's reference."""
    tracking.configure(home)
    as_of = io.month_key(as_of)
    check_month(book, as_of)
    references = {name: load_reference(c) for name, c in champions.items()}
    catalog = load_feature_catalog()
    skip = frozenset(
        f for e in ("customer", "card") for f, s in catalog.for_entity(e).items() if not s.monitor
    )
    customers, cards = build_features(read_frames(book, as_of), as_of)
    drifts = {}
    for name, champ in champions.items():
        frame = scored_population(
            name, customers if champ.spec.target.entity == "customer" else cards
        )
        scores = champ.model.predict(frame) if len(frame) else np.array([])
        drifts[name] = compare(name, references[name], frame, scores, skip=skip)
    return drifts


def first_test_month(client: MlflowClient, run_id: str) -> str:
    """The first month of a training run's out-of-time test window: the earliest month its
    model can be judged on (every earlier month was fitted on, calibrated on, or embargoed)."""
    window = client.get_run(run_id).data.params.get("window.test", "")
    return window.split("..")[0]


def earliest_reviewable(home: Path, champions: dict[str, Champion]) -> str:
    """The earliest month every champion can be reviewed on."""
    tracking.configure(home)
    client = MlflowClient()
    return max(first_test_month(client, c.run_id) for c in champions.values())


def review(
    home: Path,
    book: Path,
    scored: str,
    specs: dict[str, ModelSpec],
    playbook: Playbook,
    out: Path | None = None,
) -> tuple[dict[str, Realised], dict[str, tuple[str, pd.DataFrame, dict]], dict[str, str]]:
    """Realised outcomes of scored month `scored` (published at `out`, by default under
    $home/scores) against the promise of the models that scored it, and of its lists."""
    tracking.configure(home)
    scored = io.month_key(scored)
    out = Path(out) if out else default_out(home, scored)
    if not (out / "manifest.json").is_file():
        raise MonitorError(
            f"{scored} has not been scored at {out}: run `bookpulse score --as-of {scored}` "
            "first (the review reads what was actually scored then)"
        )
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if io.month_key(str(manifest["as_of"])) != scored:
            raise MonitorError(
                f"{out} holds the scores of {manifest['as_of']}, not {scored}: point --scores "
                f"at the folder of {scored}"
            )
        used_models = dict(manifest["models"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MonitorError(f"{out / 'manifest.json'} is not a scoring manifest ({exc})") from None
    months = io.read_meta(book)["months"]
    client = MlflowClient()
    results: dict[str, Realised] = {}
    tables: dict[str, pd.DataFrame] = {}  # each score file read once
    outcomes: dict[str, pd.DataFrame] = {}
    skipped: dict[str, str] = {}
    for name, used in used_models.items():
        spec = specs.get(name)
        if spec is None:
            skipped[name] = "no model spec of that name any more"
            continue
        kind = spec.target.kind
        if scored not in labelled_months(months, kind):
            skipped[name] = (
                f"its outcome window has not closed in the book (last month {months[-1]})"
            )
            continue
        try:
            first = first_test_month(client, used["run_id"])
            promised_all = client.get_run(used["run_id"]).data.metrics
        except MlflowException:
            skipped[name] = f"run {used['run_id']} of version {used['version']} is not in MLflow"
            continue
        if not first:
            skipped[name] = (
                f"run {used['run_id']} logged no test window: the month cannot be shown to be "
                "out of time for it"
            )
            continue
        if scored < first:
            skipped[name] = (
                f"version {used['version']} was fitted, calibrated or embargoed on months "
                f"before {first}: a review of {scored} would be in-sample"
            )
            continue
        key = "card_id" if spec.target.entity == "card" else "customer_id"
        file = "cards" if spec.target.entity == "card" else "customers"
        if file not in tables:
            tables[file] = read_scores(out, file)
        table = tables[file]
        labels = labels_for_month(book, kind, scored, months)[[key, spec.target.label]]
        prefix = PREFIX[name]
        joined = table[[key, "branch_id", "rm_id", f"{prefix}_probability", f"{prefix}_decile"]]
        joined = joined.dropna(subset=[f"{prefix}_probability"]).merge(labels, on=key)
        promised = {k: float(promised_all[k]) for k in PROMISED if k in promised_all}
        results[name] = realised(
            name,
            joined[spec.target.label].to_numpy(int),
            joined[f"{prefix}_probability"].to_numpy(float),
            joined[f"{prefix}_decile"].to_numpy(int),
            promised,
        )
        outcomes[name] = joined.rename(columns={key: "id", spec.target.label: "y"})[
            ["id", "branch_id", "rm_id", "y"]
        ]
    lists = {}
    for list_name, action_list in playbook.lists.items():
        path = out / "lists" / f"{list_name}.parquet"
        if action_list.model not in outcomes:
            continue  # its model was not reviewed (said above)
        if not path.is_file():
            skipped[f"list {list_name}"] = f"{path} is missing"
            continue
        listed = pd.read_parquet(path)
        key = "card_id" if action_list.model == "card_activation" else "customer_id"
        word = OUTCOME[action_list.model]
        table = list_outcomes(outcomes[action_list.model], listed[key].dropna(), word)
        lists[list_name] = (word, table, list_totals(table, word))
    if not results:
        raise MonitorError(
            f"nothing to review for {scored}: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return results, lists, skipped


def _write(path: Path, text: str) -> None:
    """Replace the report whole (a reader never sees half a page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _log(home: Path, kind: str, month: str, metrics: dict, tags: dict, page: Path) -> str:
    tracking.configure(home)
    exp = tracking.experiment_id(home, EXPERIMENT)
    with mlflow.start_run(experiment_id=exp, run_name=f"{kind} {month}") as run:
        mlflow.set_tags({"kind": kind, "month": month, **tags})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifact(str(page))
    return run.info.run_id


def monitor_report(
    home: Path, book: Path, as_of: str, champions: dict[str, Champion]
) -> tuple[Report, dict[str, Drift]]:
    drifts = monitor(home, book, as_of, champions)
    as_of = io.month_key(as_of)
    versions = {n: c.version for n, c in champions.items()}
    page = reports_dir(home) / f"monitor-{as_of}.html"
    _write(page, monitor_html(as_of, drifts, versions))
    metrics, tags = {}, {}
    for name, d in drifts.items():
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
    tags["verdict"] = worst(d.verdict for d in drifts.values())
    run_id = _log(home, "monitor", as_of, metrics, tags, page)
    return Report(as_of, page, run_id), drifts


def review_report(
    home: Path,
    book: Path,
    scored: str,
    specs: dict[str, ModelSpec],
    playbook: Playbook,
    out: Path | None = None,
) -> tuple[Report, dict[str, Realised], dict[str, str]]:
    results, lists, skipped = review(home, book, scored, specs, playbook, out)
    scored = io.month_key(scored)
    page = reports_dir(home) / f"review-{scored}.html"
    _write(page, review_html(scored, results, lists, skipped))
    metrics, tags = {}, {}
    for name, r in results.items():
        for k, v in r.metrics.items():
            metrics[f"{name}.{k}"] = v
        for k, v in r.promised.items():
            metrics[f"{name}.promised_{k}"] = v
        tags[f"{name}.verdict"] = r.verdict
    for list_name, (_, _, totals) in lists.items():
        metrics[f"list.{list_name}.listed_rate"] = totals["listed_rate"]
        metrics[f"list.{list_name}.not_listed_rate"] = totals["not_listed_rate"]
    run_id = _log(home, "review", scored, metrics, tags, page)
    return Report(scored, page, run_id), results, skipped
