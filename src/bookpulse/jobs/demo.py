"""`bookpulse demo`: the whole job on the embedded default, step by step.

A 20,000-customer, 24-month synthetic book under $BOOKPULSE_HOME (reused when the demo made
it, never replacing a book the simulator did not make), validated and summarised; the latest
month's features; each model's training set; every model in `models/` trained, tracked and
promoted through its gates; the latest month scored and monitored; the earliest month every
champion can be judged on scored and reviewed. `demo` yields one step at a time (`Step`), so
the CLI prints each as it comes; the work is the other jobs'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bookpulse.adapters.registry import Decision
from bookpulse.adapters.report import reports_dir
from bookpulse.book import io
from bookpulse.book.validate import Problem
from bookpulse.errors import BookpulseError
from bookpulse.features.build import FeatureFiles
from bookpulse.jobs import book as book_jobs
from bookpulse.jobs.monitor import MonitorRequest, MonitorResult, monitor
from bookpulse.jobs.promote import PromoteRequest, promote
from bookpulse.jobs.review import ReviewRequest, ReviewResult, earliest_reviewable, review
from bookpulse.jobs.score import ScoreRequest, ScoreResult, score
from bookpulse.jobs.serve import curl_example, key_file
from bookpulse.jobs.train import TrainRequest, TrainResult, train
from bookpulse.model.dataset import split_months, training_sets
from bookpulse.specs import ModelSpec, load_model_specs
from bookpulse.synthetic.simulate import GENERATORS
from bookpulse.synthetic.summary import BookSummary

CUSTOMERS = 20_000
MONTHS = 24
SEED = 42


@dataclass(frozen=True)
class Working:
    """A long step starts."""

    what: str


@dataclass(frozen=True)
class BookReady:
    book: Path
    meta: dict
    reused: bool
    replaced: bool


@dataclass(frozen=True)
class Validated:
    book: Path
    problems: list[Problem]


@dataclass(frozen=True)
class Summarised:
    book: Path
    summary: BookSummary


@dataclass(frozen=True)
class FeaturesBuilt:
    month: str
    files: FeatureFiles


@dataclass(frozen=True)
class TrainingSets:
    specs: dict[str, ModelSpec]
    sets: dict[str, pd.DataFrame]
    splits: dict[str, dict[str, list[str]]]


@dataclass(frozen=True)
class Trained:
    results: list[TrainResult]
    tracking_store: Path


@dataclass(frozen=True)
class Promoted:
    decisions: list[Decision]


@dataclass(frozen=True)
class Stopped:
    why: str


@dataclass(frozen=True)
class Scored:
    result: ScoreResult


@dataclass(frozen=True)
class Monitored:
    result: MonitorResult


@dataclass(frozen=True)
class Reviewing:
    month: str


@dataclass(frozen=True)
class Reviewed:
    result: ReviewResult


@dataclass(frozen=True)
class Finished:
    curl: str
    reports: list[Path]


Step = (
    Working
    | BookReady
    | Validated
    | Summarised
    | FeaturesBuilt
    | TrainingSets
    | Trained
    | Promoted
    | Stopped
    | Scored
    | Monitored
    | Reviewing
    | Reviewed
    | Finished
)


def _book(book: Path, end_month: str) -> BookReady:
    """Reuse the demo's own book; replace a synthetic book of another shape; refuse to touch
    a book the simulator did not make."""
    wanted = {"customers": CUSTOMERS, "seed": SEED, "end_month": end_month}
    try:
        meta = io.read_meta(book) if book.exists() else None
    except io.BookError:
        meta = None
    if (
        meta is not None
        and all(meta.get(k) == v for k, v in wanted.items())
        and len(meta.get("months", [])) == MONTHS
        and meta.get("generator") in GENERATORS
    ):
        return BookReady(book, meta, reused=True, replaced=False)
    made_here = meta is not None and meta.get("generator") in GENERATORS
    if book.exists() and any(book.iterdir()) and not made_here:
        raise BookpulseError(
            f"{book} holds a book the simulator did not make; the demo will not replace it. "
            "Set BOOKPULSE_HOME to another folder for the demo."
        )
    made = book_jobs.generate(
        book_jobs.GenerateRequest(
            out=book,
            customers=CUSTOMERS,
            months=MONTHS,
            seed=SEED,
            end_month=end_month,
            force=True,
        )
    )
    return BookReady(book, made.meta, reused=False, replaced=meta is not None)


def demo(home: Path) -> Iterator[Step]:
    """The demo's steps, each done before it is yielded."""
    home = Path(home)
    book = home / "book"
    yield Working("preparing the demo book")
    yield _book(book, book_jobs.last_complete_month())
    yield Working("validating the book")
    _, problems = book_jobs.validate(book)
    yield Validated(book, problems)
    if problems:
        raise BookpulseError(f"the demo book has {len(problems)} problem(s)")
    yield Working("summarising the book")
    yield Summarised(book, book_jobs.summary(book)[1])
    latest = io.read_meta(book)["months"][-1]
    yield Working(f"building features as of {latest}")
    files = book_jobs.build_features(book_jobs.FeaturesRequest(home, latest, book))
    yield FeaturesBuilt(latest, files)

    specs = load_model_specs()
    months = io.read_meta(book)["months"]
    yield Working("building the training sets")
    sets = training_sets(book, list(specs.values()))
    splits = {name: split_months(spec, months) for name, spec in specs.items()}
    yield TrainingSets(specs, sets, splits)
    yield Working("training")
    results = train(TrainRequest(home, "all", book), sets=sets)
    yield Trained(results, home / "mlflow.db")
    yield Working("promoting: challenger against champion on the latest closed months")
    decisions = promote(PromoteRequest(home, "all", book))
    yield Promoted(decisions)
    if not all(d.champion_after for d in decisions if d.model in specs):
        yield Stopped("not every model has a champion: the demo stops before scoring")
        return

    yield Working(f"scoring {latest}")
    yield Scored(score(ScoreRequest(home, book, latest)))
    yield Working(f"monitoring {latest}")
    yield Monitored(monitor(MonitorRequest(home, book, latest)))
    reviewed = earliest_reviewable(home)
    yield Reviewing(reviewed)
    yield Working(f"scoring {reviewed}")
    yield Scored(score(ScoreRequest(home, book, reviewed)))
    yield Working(f"reviewing {reviewed}")
    yield Reviewed(review(ReviewRequest(home, reviewed, book)))

    key_file(home, "api_key")
    first = pd.read_parquet(
        home / "scores" / latest / "customers.parquet", columns=["customer_id"]
    )["customer_id"].iloc[0]
    pages = [
        reports_dir(home) / f"monitor-{latest}.html",
        reports_dir(home) / f"review-{reviewed}.html",
    ]
    yield Finished(curl_example(home, 3000, int(first)), pages)
