"""The `bookpulse` command: it parses arguments, calls one job (`bookpulse.jobs`) and prints
what comes back (`bookpulse.cli_tables`). Errors bookpulse raises on purpose, and the
tracking server's and LightGBM's, are printed once here as a message, never a traceback."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bookpulse import cli_tables as show
from bookpulse.cli_tables import console, err
from bookpulse.config import get_settings
from bookpulse.errors import BookpulseError

app = typer.Typer(
    help="bookpulse: scores for a retail bank's book (churn, tier upgrade, card activation, "
    "wealth take-up and any target declared in models/*.yaml).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
book_app = typer.Typer(
    help="Make, check and describe a book (the bank's customer data).", no_args_is_help=True
)
app.add_typer(book_app, name="book")
features_app = typer.Typer(
    help="Point-in-time features: one row per active customer (and per new card) as of a "
    "month-end.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")

MODEL_HELP = "A model's name (its file in models/), e.g. churn; or all."
ONE_MODEL_HELP = "A model's name (its file in models/), e.g. churn."
BookOpt = Annotated[Path | None, typer.Option(help="Book folder [default: $BOOKPULSE_HOME/book].")]


def _month(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise typer.BadParameter(f"{value!r} is not a month: write it as YYYY-MM, e.g. 2026-10")
    return value


def _home() -> Path:
    return get_settings().home


def _quiet_mlflow() -> None:
    """MLflow's info logs and advice warnings would bury the command's own output."""
    import logging
    import warnings

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # MLflow sets its loggers' level from this when imported (jobs import it when they need it)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", module="mlflow")
    warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)


@contextmanager
def _errors():
    """The one place errors become messages (exit 2)."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, (BookpulseError, *_tool_errors())):
            raise
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _tool_errors() -> tuple[type[Exception], ...]:
    """MLflow's and LightGBM's errors, from those of them the job imported (one that was not
    imported raised nothing; importing it only to compare would cost a refusal seconds)."""
    import sys

    found = []
    for module, name in (
        ("mlflow.exceptions", "MlflowException"),
        ("lightgbm.basic", "LightGBMError"),
    ):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def run(job: Callable, *args, status: str | None = None, **kwargs):
    """Call a job with the errors turned into messages, under a spinner when it is long."""
    _quiet_mlflow()
    with _errors():
        if status is None:
            return job(*args, **kwargs)
        with console.status(status):
            return job(*args, **kwargs)


# --- book and features ------------------------------------------------------------------


@book_app.command("generate")
def book_generate(
    customers: Annotated[int, typer.Option(min=100, help="Customers in the book.")] = 20_000,
    months: Annotated[int, typer.Option(min=4, max=120, help="Month-ends to simulate.")] = 24,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives identical files.")
    ] = 42,
    end_month: Annotated[
        str | None,
        typer.Option(
            callback=_month,
            help="Last month-end in the book, YYYY-MM [default: the last complete month].",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing book at --out.")] = False,
    shock: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KIND@YYYY-MM[:STRENGTH]",
            help="A shock from that month on, repeatable: rate_cut (deposit-rate cut; strength "
            "scales it, default 1) or card_campaign (a quarter of bulk card issuance; strength = "
            "new cards as a multiple of the usual, default 6), e.g. rate_cut@2026-05 or "
            "card_campaign@2026-06:8.",
        ),
    ] = None,
) -> None:
    """Generate a synthetic retail book: customers, month-end snapshots, cards, spend,
    relationships, branches and RMs, plus the simulator's true probabilities under truth/."""
    from bookpulse.jobs.book import GenerateRequest, generate, parse_shocks

    try:
        parse_shocks(tuple(shock or ()))
    except BookpulseError as exc:  # a bad --shock is a usage error, before any work
        raise typer.BadParameter(str(exc), param_hint="--shock") from None
    request = GenerateRequest(out, customers, months, seed, end_month, force, tuple(shock or ()))
    columns = (TextColumn("[bold]generating book"), BarColumn(), MofNCompleteColumn())
    unit = TextColumn("months (x blocks of customers)")
    with Progress(*columns, unit, TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("months", total=months)
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        made = run(generate, request, progress)
    show.generated(made, time.perf_counter() - started)


@book_app.command("validate")
def book_validate(
    book: Annotated[
        Path | None, typer.Argument(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
) -> None:
    """Check every table of a book against its schema; list every problem found.

    Exits 0 when the book is valid and 1 when it has problems."""
    from bookpulse.book.validate import format_problems
    from bookpulse.jobs.book import validate

    book, problems = run(validate, book, status="validating the book")
    if problems:
        console.print(format_problems(problems))
        err.print(f"[bold red]{len(problems)} problem(s)[/] in {book}: fix them before using it.")
        raise typer.Exit(1)
    console.print(f"[green]valid:[/] {book} passes every schema and cross-table check")


@book_app.command("summary")
def book_summary(
    book: Annotated[
        Path | None, typer.Argument(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
) -> None:
    """Tier, segment and product mixes, event rates and the ceiling AUCs of a generated book."""
    from bookpulse.jobs.book import summary

    show.summary(*run(summary, book, status="summarising the book"))


@features_app.command("build")
def features_build(
    as_of: Annotated[
        str, typer.Option(callback=_month, help="Month-end to build features as of, YYYY-MM.")
    ],
    book: BookOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Parquet file for the customer frame; the card frame goes beside it as "
            "<name>_cards.parquet [default: $BOOKPULSE_HOME/features/YYYY-MM/customers.parquet "
            "and cards.parquet]."
        ),
    ] = None,
) -> None:
    """Build the features as of a month-end from data dated up to it only, check them against
    features/*.yaml and write them to Parquet (replacing that month's files atomically)."""
    from bookpulse.jobs.book import FeaturesRequest, build_features

    request = FeaturesRequest(_home(), as_of, book, out)
    files = run(build_features, request, status=f"building features as of {as_of}")
    show.features(as_of, files)


# --- models -----------------------------------------------------------------------------


@app.command()
def train(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    book: BookOpt = None,
    threads: Annotated[int, typer.Option(min=0, help="LightGBM threads (0: all cores).")] = 0,
) -> None:
    """Train out of time from the model spec, evaluate on the latest closed months, log the
    validation pack to MLflow and register the model under its registered_name (alias
    challenger). Tracking goes to $BOOKPULSE_HOME/mlflow.db unless MLFLOW_TRACKING_URI is set."""
    from bookpulse.jobs.train import TrainRequest
    from bookpulse.jobs.train import train as train_job

    request = TrainRequest(_home(), model, book, threads)
    with console.status("training") as status:
        results = run(train_job, request, progress=status.update)
    show.trained(results)


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    book: BookOpt = None,
) -> None:
    """Evaluate challenger and champion on the same latest out-of-time window and move the
    champion alias only when the spec's gates pass (the first model: the absolute gates).
    Every decision is recorded in MLflow (experiment bookpulse-promotions)."""
    from bookpulse.jobs.promote import PromoteRequest
    from bookpulse.jobs.promote import promote as promote_job

    made = []
    _quiet_mlflow()
    with _errors(), console.status("evaluating challenger and champion"):
        try:
            promote_job(PromoteRequest(_home(), model, book), made.append)
        finally:  # the decisions made before a failure are shown, then the error
            if made:
                show.decisions(made)


@app.command()
def promotions(model: Annotated[str, typer.Argument(help=ONE_MODEL_HELP)]) -> None:
    """The history of promotion and rollback decisions for a model, newest first."""
    from bookpulse.jobs.promote import promotions as history

    found = run(history, _home(), model)
    if not found:
        console.print(f"no decisions recorded for {model} yet: run `bookpulse promote {model}`")
        return
    show.history(model, found)


@app.command()
def rollback(model: Annotated[str, typer.Argument(help=ONE_MODEL_HELP)]) -> None:
    """Move the champion back to the previous champion, and record it."""
    from bookpulse.jobs.promote import rollback as rollback_job

    d = run(rollback_job, _home(), model)
    console.print(f"[green]{model}[/]: {d.reason}")


@app.command("model-risk")
def model_risk(
    model: Annotated[str, typer.Argument(help=ONE_MODEL_HELP)],
    version: Annotated[
        str | None,
        typer.Option(help="A registered version to document (default: the champion)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the .md and .html (default: $BOOKPULSE_HOME/reports)."),
    ] = None,
) -> None:
    """Write the model-risk document of a scoring model's champion (or --version), for a
    bank's model-risk reviewer: purpose and population, data and windows, features with their
    descriptions and gain ranks, performance with slices, calibration, stability, fairness,
    the promotion decision, limitations and the monitoring plan with its thresholds. Built
    from what the version's training run and the registry logged (nothing is recomputed);
    logged to that run as model-risk/MODEL-vVERSION.md and .html, and written to --out.
    Promotion and rollback write it for the new champion on their own. Uplift models are not
    covered."""
    from bookpulse.jobs.model_risk import ModelRiskRequest
    from bookpulse.jobs.model_risk import model_risk as model_risk_job

    request = ModelRiskRequest(_home(), model, version, out)
    r = run(model_risk_job, request, status=f"writing the model-risk document of {model}")
    which = "champion" if r.champion else "not the champion"
    console.print(
        f"[green]{r.model}[/] version {r.version} ({which}): {r.markdown} and {r.html}; "
        f"logged to run {r.run_id} as {', '.join(r.logged)}",
        soft_wrap=True,
    )


@app.command()
def runs(
    model: Annotated[str, typer.Argument(help=ONE_MODEL_HELP)],
    last: Annotated[int, typer.Option(min=1, max=50, help="How many recent runs.")] = 5,
) -> None:
    """A model's latest runs side by side: key metrics, and the parameters that differ."""
    from bookpulse.jobs.runs import runs as runs_job

    metrics, diff = run(runs_job, _home(), model, last)
    if metrics.empty:
        console.print(f"no runs for {model} yet: run `bookpulse train {model}`")
        return
    show.runs(model, metrics, diff)


@app.command("train-table")
def train_table_command(
    file: Annotated[Path, typer.Argument(help="A CSV or Parquet extract, one row per case.")],
    target: Annotated[str, typer.Option(help="The column holding the outcome.")],
    positive: Annotated[
        str | None, typer.Option(help="The target value that counts as the event.")
    ] = None,
    time_col: Annotated[
        str | None, typer.Option(help="A date or period column: split out of time on it.")
    ] = None,
    drop: Annotated[
        list[str] | None, typer.Option(help="A column to leave out (repeat for more).")
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="LightGBM threads (0: one per 50,000 training rows, at least 1, at most the "
            "cores).",
        ),
    ] = 0,
    name: Annotated[
        str | None,
        typer.Option(
            help="The model's name: registered as bookpulse-table-<name> (default: the file's "
            "name, lower case). Retrain under the same name to make a new challenger."
        ),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            help="A column to learn from even if it looks like an identifier or has too many "
            "text levels (repeat for more)."
        ),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="The target's window in --time-col periods (e.g. 3 for churn within 3 "
            "months): horizon - 1 periods are left out between calibration and test.",
        ),
    ] = None,
    sep: Annotated[
        str | None,
        typer.Option(help="The CSV's separator, e.g. ';' or '\\t' [default: sniffed]."),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="The CSV's encoding, e.g. latin-1 or cp1252 [default: utf-8]."),
    ] = None,
) -> None:
    """Train the bookpulse recipe on any flat extract, log the validation pack to MLflow
    (experiment bookpulse-table-<name>) and register the model with the alias challenger
    (`bookpulse promote <name>`, then `bookpulse score-table <name> FILE --out OUT`). Strings
    become categoricals; identifier-like columns and text with too many levels are left out,
    and a model too good to be true is flagged as a likely leak, each with a warning; the
    split is out of time with --time-col (an embargo before the test with --horizon),
    otherwise stratified. A CSV's separator is sniffed (--sep to give it)."""
    from bookpulse.jobs.train_table import TableRequest, train_table

    request = TableRequest(
        _home(),
        file,
        target,
        positive,
        time_col,
        tuple(drop or ()),
        threads,
        name=name,
        keep=tuple(keep or ()),
        horizon=horizon,
        sep=sep,
        encoding=encoding,
    )
    result = run(train_table, request, status=f"training on {file}")
    show.table_result(result)
    show.table_registered(result)


@app.command("score-table")
def score_table_command(
    model: Annotated[
        str, typer.Argument(help="A table model's name (as `bookpulse train-table` named it).")
    ],
    file: Annotated[
        Path, typer.Argument(help="A CSV or Parquet extract with the columns it was trained on.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Where to write the scores: a .csv or .parquet file, written whole or not at "
            "all (an existing file is replaced only by a complete one)."
        ),
    ],
    carry: Annotated[
        list[str] | None,
        typer.Option(
            help="A column of the extract to carry into OUT beside the scores (repeat for "
            "more). Default: the columns training left out that the extract has, e.g. "
            "identifiers and dates."
        ),
    ] = None,
    sep: Annotated[
        str | None,
        typer.Option(
            help="The CSV's separator, e.g. ';' or '\\t'. Default: as the training file was "
            "read when given, else sniffed from the first lines."
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="The CSV's encoding, e.g. latin-1. Default: as the training file was read "
            "when given, else UTF-8."
        ),
    ] = None,
) -> None:
    """Score an extract with the champion of a table model: for each row its probability,
    percentile and decile within the extract, and the top 3 reasons (feature, direction,
    contribution, and a sentence such as "Balance = 1200 lowers the score"). The extract is
    checked against the training schema before any work: missing columns and values that
    cannot be read as trained are refused, all in one message; extra columns are ignored and
    category levels not seen in training are scored as unseen, both noted."""
    from bookpulse.jobs.table_model import ScoreTableRequest, score_table

    request = ScoreTableRequest(
        _home(), model, file, out, tuple(carry) if carry else None, sep, encoding
    )
    show.table_scored(run(score_table, request, status=f"scoring {file}"))


# --- the month --------------------------------------------------------------------------


@app.command()
def score(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", callback=_month, help="Month-end to score, YYYY-MM. Default: the latest."
        ),
    ] = None,
    book: BookOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where to publish. Default: $BOOKPULSE_HOME/scores/YYYY-MM."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local (this machine, both cores) or spark.")
    ] = "local",
    spark_master: Annotated[
        str,
        typer.Option(help="Spark master URL for --engine spark, e.g. spark://host:7077."),
    ] = "local[*]",
    threads: Annotated[int, typer.Option(min=0, help="Scoring threads (0: all cores).")] = 0,
    allow_short_history: Annotated[
        bool,
        typer.Option(
            help="Score a month with fewer than 13 month-ends of history in the book (its "
            "12-month features are partial); the manifest marks it."
        ),
    ] = False,
) -> None:
    """Score every row of each model's population in one month with the champions:
    probabilities, percentile and decile in the book, top-3 reasons, model versions; ranked
    action lists per branch and RM with a suggested action (models/playbook.yaml); a manifest
    with counts, versions, checksums and timings. The month is published whole or not at
    all; re-running it replaces it."""
    from bookpulse.jobs.score import ScoreRequest
    from bookpulse.jobs.score import score as score_job

    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"unknown engine {engine!r}: use local or spark")
    request = ScoreRequest(
        _home(), book, as_of, out, engine, spark_master, threads, allow_short_history
    )
    if engine == "spark":
        result = run(score_job, request, status=f"scoring on Spark ({spark_master})")
    else:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("scoring", total=None, rate="-")

            def progress(stage: str, done: int, total: int) -> None:
                elapsed = bar.tasks[0].elapsed or 1e-9
                bar.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f}")

            result = run(score_job, request, progress)
    show.scored(result)


@app.command()
def status() -> None:
    """Which month the API serves, the months published under $BOOKPULSE_HOME/scores with
    their model versions, the champions, and what does not agree (a month whose online-store
    publish did not finish, champions newer than the served month's models)."""
    from bookpulse.jobs.status import status as status_job

    show.status(run(status_job, _home()))


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (use --host to expose).")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Start the real-time scoring API (BentoML) with the champion models and the online
    store the last `bookpulse score` published. Callers send the header X-API-Key: keys come
    from BOOKPULSE_API_KEYS or BOOKPULSE_API_KEYS_FILE; without either, a key is made in
    $BOOKPULSE_HOME/api_key (and an admin key for /v1/admin/reload in admin_key)."""
    from bookpulse.jobs.serve import plan

    p = run(plan, _home(), host, port)
    console.print(f"serving on http://{host}:{port}; try:")
    console.print("  " + p.curl, soft_wrap=True, markup=False)
    os.execve(p.argv[0], p.argv, p.env)


@app.command()
def monitor(
    as_of: Annotated[
        str | None,
        typer.Option(callback=_month, help="Month to check, YYYY-MM (default: the latest)."),
    ] = None,
    book: BookOpt = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            help="The folder of published months read early (default: $BOOKPULSE_HOME/scores)."
        ),
    ] = None,
) -> None:
    """Check every champion for drift in one month: PSI of its score and of its top features
    against its training run's out-of-time test window (stable < 0.10 <= watch < 0.25 <= act,
    noise-aware), missing rates and category mix. Reads early the outcomes of every published
    month whose window is still open (events so far against the calibrated probabilities'
    expectation for the time elapsed), estimates each model's performance this month without
    labels (CBPE), and shows the trend of the last 12 monitored months. Writes an HTML report
    under $BOOKPULSE_HOME/reports and logs the figures to the MLflow experiment
    bookpulse-monitoring. Exit code 0 whatever the verdict."""
    from bookpulse.jobs.monitor import MonitorRequest
    from bookpulse.jobs.monitor import monitor as monitor_job

    request = MonitorRequest(_home(), book, as_of, scores)
    show.monitored(run(monitor_job, request, status=f"monitoring {as_of or 'the latest month'}"))


@app.command()
def review(
    scored: Annotated[
        str, typer.Option(callback=_month, help="The scored month to review, YYYY-MM.")
    ],
    book: BookOpt = None,
    scores: Annotated[
        Path | None,
        typer.Option(help="The scored month's folder (default: $BOOKPULSE_HOME/scores/MONTH)."),
    ] = None,
) -> None:
    """Review a past scoring month whose outcome window has closed: realised outcome rate by
    decile, realised AUC, lift and calibration against what each model's validation pack
    promised; and for each action list, per branch and RM, how many listed customers had the
    outcome against those not listed. Writes an HTML report and logs an MLflow run
    (experiment bookpulse-monitoring)."""
    from bookpulse.jobs.review import ReviewRequest
    from bookpulse.jobs.review import review as review_job

    request = ReviewRequest(_home(), scored, book, scores)
    show.reviewed(run(review_job, request, status=f"reviewing {scored}"))


@app.command()
def monthly(
    as_of: Annotated[
        str | None,
        typer.Option(callback=_month, help="Month to run, YYYY-MM (default: the book's latest)."),
    ] = None,
    book: BookOpt = None,
) -> None:
    """The month's whole run, for a scheduler: score the month, monitor it, and review every
    scored month whose outcome windows have just closed. Idempotent: a month already done with
    the same champions is not done again. Exit codes: 0 done and calm; 3 done, but a monitor
    verdict is "act" or a review finds a model off its promise (someone should look); 2
    refused or failed (the message says why)."""
    from bookpulse.jobs.monthly import MonthlyRequest
    from bookpulse.jobs.monthly import monthly as monthly_job

    with console.status("the monthly run") as status:
        result = run(monthly_job, MonthlyRequest(_home(), as_of, book), progress=status.update)
    show.monthly(result)
    raise typer.Exit(result.exit_code)


@contextmanager
def _until_stopped():
    """Ctrl-C or SIGTERM (a service manager's stop) end the block normally, so whatever it
    started is stopped in order."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        signal.signal(signal.SIGTERM, before)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (use --host to expose).")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """MLflow's UI on $BOOKPULSE_HOME's embedded store, for an analyst: experiments open as
    classic machine-learning experiments, each with a saved view whose columns are the metrics
    analysts compare (the links printed open it). One web worker, no background jobs; Ctrl-C
    or SIGTERM stops it and everything it started."""
    from bookpulse.jobs.tracking_server import ui as ui_job

    _quiet_mlflow()
    with _errors(), _until_stopped(), ui_job(_home(), host, port) as (url, server, links):
        console.print(f"MLflow UI on {url} (answered in {server.seconds_to_answer:.1f} s)")
        console.print("each experiment's runs, with the metrics analysts compare as columns:")
        for name, link in links.items():
            console.print(f"  {name}: {link}", soft_wrap=True, markup=False)
        registry = f"{url}/#/models?workflowType=machine_learning"
        console.print(f"registered models and their model cards: {registry}", markup=False)
        console.print("Ctrl-C stops it.")
        server.wait()


@app.command("tracking-server")
def tracking_server_command(
    folder: Annotated[
        Path | None,
        typer.Option(
            help="Where the server keeps its database, artifacts and secrets "
            "[default: $BOOKPULSE_HOME/tracking-server]."
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port for the team's clients.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface (0.0.0.0 to serve the LAN).")] = "127.0.0.1",
    database: Annotated[
        str | None,
        typer.Option(
            help="Your bank's PostgreSQL for runs and models, as a SQLAlchemy URL "
            "(postgresql+psycopg://user@host/db; the password from PGPASSWORD) [default: a local "
            "cluster in FOLDER/pgdata]."
        ),
    ] = None,
    auth_database: Annotated[
        str | None, typer.Option(help="With --database: the database for users and rights.")
    ] = None,
) -> None:
    """The team's MLflow tracking server: PostgreSQL behind it (a local cluster unless
    --database names yours), artifacts proxied (clients see mlflow-artifacts:/ URIs), and
    MLflow's basic auth: every call needs a user. `admin` is made on first start, its password
    from MLFLOW_AUTH_ADMIN_PASSWORD or written to FOLDER/admin-password; add each analyst (and
    the scheduler's account) with `bookpulse tracking-user NAME`. Clients set
    MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD. Ctrl-C or
    SIGTERM stops the server and its database."""
    from bookpulse.jobs.tracking_server import tracking_server

    folder = folder or _home() / "tracking-server"
    with (
        _errors(),
        _until_stopped(),
        tracking_server(folder, host, port, database, auth_database) as running,
    ):
        console.print(
            f"tracking server on {running.url} (answered in "
            f"{running.server.seconds_to_answer:.1f} s); data in {running.folder}"
        )
        if not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
            console.print(f"admin's password: {running.folder / 'admin-password'}")
        console.print(f"clients: export MLFLOW_TRACKING_URI={running.url}", markup=False)
        console.print("Ctrl-C stops it.")
        running.server.wait()


@app.command("tracking-user")
def tracking_user(
    name: Annotated[str, typer.Argument(help="The user to add (an analyst, or a job's account).")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="BOOKPULSE_NEW_USER_PASSWORD",
            help="The user's password, 12 characters at least (asked for when not given; or "
            "BOOKPULSE_NEW_USER_PASSWORD).",
        ),
    ],
    folder: Annotated[
        Path | None,
        typer.Option(
            help="The server's folder, for the admin's password file "
            "[default: $BOOKPULSE_HOME/tracking-server]."
        ),
    ] = None,
) -> None:
    """Add a user to the tracking server at MLFLOW_TRACKING_URI (or set the password of one
    there), as `admin`: the admin's password from MLFLOW_AUTH_ADMIN_PASSWORD or the server's
    FOLDER/admin-password. New users may read and edit every experiment and model (EDIT);
    the admin can narrow that per experiment with MLflow's permission API."""
    from bookpulse.jobs.tracking_server import ServerError, add_user

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    with _errors():
        if not uri.startswith(("http://", "https://")):
            raise ServerError("set MLFLOW_TRACKING_URI to the tracking server's address first")
        admin = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
        if not admin:
            file = (folder or _home() / "tracking-server") / "admin-password"
            if not file.is_file():
                raise ServerError(
                    f"no admin password: set MLFLOW_AUTH_ADMIN_PASSWORD, or give the server's "
                    f"--folder (no {file})"
                )
            admin = file.read_text().strip()
        add_user(uri, admin, name, password)
    console.print(f"user {name} can now sign in to {uri}")


@app.command()
def demo() -> None:
    """Run the whole job on the embedded default: a 20,000-customer, 24-month synthetic book
    under $BOOKPULSE_HOME (default ./data), validated and summarised; the latest month's
    features; each model's training set; every model in models/ trained, tracked in MLflow
    and promoted when its gates pass; the latest month scored and monitored; the earliest
    reviewable month scored and reviewed."""
    from bookpulse.jobs.demo import Working
    from bookpulse.jobs.demo import demo as demo_job

    _quiet_mlflow()
    with _errors(), console.status("starting") as status:
        for step in demo_job(_home()):
            if isinstance(step, Working):
                status.update(step.what)
            show.step(step)


if __name__ == "__main__":
    app()
