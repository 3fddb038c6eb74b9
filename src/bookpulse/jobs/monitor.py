"""`bookpulse monitor`: each champion's drift in one month against the reference profile
logged with its training run (PSI, missing, mix, volume: `bookpulse.model.drift`), an HTML
report and a run in the MLflow experiment bookpulse-monitoring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bookpulse.adapters import tracking
from bookpulse.adapters.champions import available_champions
from bookpulse.adapters.registry import load_reference
from bookpulse.adapters.report import log_report_run, monitor_html, reports_dir, write_page
from bookpulse.book import io
from bookpulse.config import get_settings
from bookpulse.errors import MonitorError
from bookpulse.features import build_features, read_frames
from bookpulse.jobs.score import check_month, latest_month, require_month
from bookpulse.model.batch import scored_population
from bookpulse.model.core import Champion
from bookpulse.model.drift import Drift, compare, worst
from bookpulse.specs import load_feature_catalog, load_model_specs


@dataclass(frozen=True)
class MonitorRequest:
    """One month to check; `None` takes the home's book and the book's latest month."""

    home: Path
    book: Path | None = None
    as_of: str | None = None


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


def drifts(book: Path, as_of: str, champions: dict[str, Champion]) -> dict[str, Drift]:
    """Each champion's drift in month `as_of` of `book` against its run's reference, on the
    rows it scores (its population)."""
    as_of = io.month_key(as_of)
    check_month(book, as_of)
    references = {name: load_reference(c) for name, c in champions.items()}
    catalog = load_feature_catalog()
    skip = frozenset(
        f for e in ("customer", "card") for f, s in catalog.for_entity(e).items() if not s.monitor
    )
    customers, cards = build_features(read_frames(book, as_of), as_of)
    frames = {"customer": customers, "card": cards}
    out = {}
    for name, champ in champions.items():
        frame = scored_population(champ.spec, frames[champ.spec.entity])
        scores = champ.model.predict(frame) if len(frame) else np.array([])
        out[name] = compare(name, references[name], frame, scores, skip=skip)
    return out


def monitor(request: MonitorRequest) -> MonitorResult:
    """Check every champion in one month; write the page and log the run."""
    home = Path(request.home)
    book = request.book or get_settings().book_dir
    as_of = io.month_key(request.as_of) if request.as_of else latest_month(book)
    require_month(book, as_of)
    tracking.configure(home)
    champions, missing = available_champions(list(load_model_specs().values()))
    try:
        found = drifts(book, as_of, champions)
    except (OSError, KeyError, ValueError) as exc:  # unreadable files, a damaged reference
        raise MonitorError(f"monitoring {as_of} failed: {type(exc).__name__}: {exc}") from None
    versions = {n: c.version for n, c in champions.items()}
    page = reports_dir(home) / f"monitor-{as_of}.html"
    write_page(page, monitor_html(as_of, found, versions))
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
    tags["verdict"] = worst(d.verdict for d in found.values())
    run_id = log_report_run(home, "monitor", as_of, metrics, tags, page)
    return MonitorResult(Report(as_of, page, run_id), found, missing)
