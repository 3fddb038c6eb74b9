"""The `bookpulse` command. It parses arguments, calls the package's functions and prints."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bookpulse.book.io import BookError, read_meta

app = typer.Typer(
    help="bookpulse: churn, tier-upgrade and card-activation scores for a retail bank's book.",
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
console = Console()
err = Console(stderr=True)

DEMO_CUSTOMERS = 20_000
DEMO_MONTHS = 24
DEMO_SEED = 42


def _last_complete_month() -> str:
    return str(pd.Timestamp.today().to_period("M") - 1)


def _month(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise typer.BadParameter(f"{value!r} is not a month: write it as YYYY-MM, e.g. 2026-10")
    return value


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings():
    from bookpulse.config import get_settings

    return get_settings()


def _shocks(values: list[str] | None) -> list:
    """--shock KIND@YYYY-MM[:STRENGTH] (repeatable) -> simulator Shocks."""
    if not values:
        return []
    from bookpulse.book.simulate import Shock

    try:
        return [Shock.parse(v) for v in values]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _generate(
    customers: int,
    months: int,
    seed: int,
    end_month: str,
    out: Path,
    force: bool,
    shocks: tuple = (),
):
    from bookpulse.book.simulate import BookSpec, generate_book

    spec = BookSpec(
        customers=customers, months=months, seed=seed, end_month=end_month, shocks=shocks
    )
    with Progress(
        TextColumn("[bold]generating book"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("months"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("months", total=months)
        started = time.perf_counter()
        meta = generate_book(
            spec, out, force=force, progress=lambda done, _: bar.update(task, completed=done)
        )
    seconds = time.perf_counter() - started
    console.print(
        f"[green]book written[/] to {out}: {customers:,} customers x {months} months "
        f"({meta['start_month']} .. {meta['end_month']}), {meta['snapshot_rows']:,} snapshot rows, "
        f"{meta['cards']:,} cards, in {seconds:.1f} s"
    )
    if shocks:
        console.print("[yellow]shocked:[/] " + ", ".join(str(s) for s in shocks))
    return meta


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
            callback=_shocks,
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
    out = out or _settings().book_dir
    end_month = end_month or _last_complete_month()
    try:
        _generate(customers, months, seed, end_month, out, force, tuple(shock or ()))
    except (BookError, ValueError) as exc:
        raise _fail(str(exc)) from None


@book_app.command("validate")
def book_validate(
    book: Annotated[
        Path | None, typer.Argument(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
) -> None:
    """Check every table of a book against its schema; list every problem found.

    Exits 0 when the book is valid and 1 when it has problems."""
    from bookpulse.book.validate import format_problems, validate_book

    book = book or _settings().book_dir
    with console.status(f"validating {book}"):
        problems = validate_book(book)
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
    book = book or _settings().book_dir
    try:
        _print_summary(book)
    except BookError as exc:
        raise _fail(str(exc)) from None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _print_summary(book: Path) -> None:
    from bookpulse.book.summary import summarize

    with console.status("summarising the book"):
        s = summarize(book)
    meta = s.meta
    console.print(
        f"\n[bold]Book[/] {book}: {meta['customers']:,} customers, {meta['start_month']} .. "
        f"{meta['end_month']}, seed {meta['seed']}; {s.active_customers:,} active at "
        f"{meta['end_month']}"
    )
    mixes = Table(title=f"Mix of active customers at {meta['end_month']}", show_lines=False)
    mixes.add_column("tier")
    mixes.add_column("share", justify="right")
    mixes.add_column("segment")
    mixes.add_column("share", justify="right")
    mixes.add_column("product lines")
    mixes.add_column("share", justify="right")
    mixes.add_column("3m churn", justify="right")
    tiers, segs, prods = (
        list(s.tier_mix.items()),
        list(s.segment_mix.items()),
        list(s.products_mix.items()),
    )
    for i in range(max(len(tiers), len(segs), len(prods))):
        t = tiers[i] if i < len(tiers) else ("", None)
        g = segs[i] if i < len(segs) else ("", None)
        p = prods[i] if i < len(prods) else ("", None)
        churn = s.churn_by_products.get(p[0].rstrip("+"), None) if p[0] else None
        mixes.add_row(
            t[0],
            _pct(t[1]) if t[1] is not None else "",
            g[0],
            _pct(g[1]) if g[1] is not None else "",
            p[0],
            _pct(p[1]) if p[1] is not None else "",
            _pct(churn) if churn is not None else "",
        )
    console.print(mixes)
    events = Table(title="Events over the labelled months (realised) and the ceiling")
    events.add_column("target")
    events.add_column("labelled rows", justify="right")
    events.add_column("months", justify="right")
    events.add_column("event rate", justify="right")
    events.add_column("ceiling AUC", justify="right")
    events.add_column("by group")
    names = {
        "churn": "churn within 3 months",
        "tier_upgrade": "tier upgrade within 3 months",
        "card_activation": "card first use within 30 days",
    }
    for key, t in s.targets.items():
        groups = ", ".join(f"{k} {_pct(v)}" for k, v in t.by_group.items())
        events.add_row(
            names[key], f"{t.rows:,}", str(t.months), _pct(t.rate), f"{t.ceiling_auc:.3f}", groups
        )
    console.print(events)


@features_app.command("build")
def features_build(
    as_of: Annotated[
        str, typer.Option(callback=_month, help="Month-end to build features as of, YYYY-MM.")
    ],
    book: Annotated[
        Path | None, typer.Option(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
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
    from bookpulse.features.build import build_and_publish, cards_path_for, default_paths
    from bookpulse.features.schema import FeatureSchemaError
    from bookpulse.specs import SpecError

    settings = _settings()
    book = book or settings.book_dir
    if out is None:
        customers_path, cards_path = default_paths(settings.home, as_of)
    else:
        customers_path, cards_path = out, cards_path_for(out)
    started = time.perf_counter()
    try:
        with console.status(f"building features as of {as_of}"):
            files = build_and_publish(book, as_of, customers_path, cards_path)
    except (BookError, SpecError, FeatureSchemaError) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"[green]features as of {as_of}[/]: {files.customer_rows:,} customers -> "
        f"{files.customers}; {files.card_rows:,} new cards -> {files.cards} "
        f"({time.perf_counter() - started:.1f} s)"
    )


def _print_training_sets(book: Path) -> dict:
    from bookpulse.specs import load_model_specs
    from bookpulse.training.dataset import split_months, training_sets

    specs = load_model_specs()
    meta = read_meta(book)
    with Progress(
        TextColumn("[bold]training sets[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        months = sorted(
            {
                m
                for s in specs.values()
                for part in split_months(s, meta["months"]).values()
                for m in part
            }
        )
        task = bar.add_task("", total=len(months))
        sets = training_sets(
            book,
            list(specs.values()),
            progress=lambda m: bar.update(task, advance=1, description=m),
        )
    table = Table(title="Training sets (out-of-time split from each model spec)")
    for col in ("model", "rows", "as_of months", "positive rate", "train / valid / calib / test"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, spec in specs.items():
        df = sets[name]
        split = split_months(spec, meta["months"])
        table.add_row(
            name,
            f"{len(df):,}",
            f"{split['train'][0]} .. {split['test'][-1]}",
            _pct(df[spec.target.label].mean()),
            " / ".join(str(len(v)) for v in split.values()),
        )
    console.print(table)
    return sets


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="churn, tier_upgrade, card_activation or all.")],
    book: Annotated[
        Path | None, typer.Option(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="LightGBM threads (0: all cores).")] = 0,
) -> None:
    """Train out of time from the model spec, evaluate on the latest closed months, log the
    validation pack to MLflow and register the model as bookpulse-<model> (alias challenger).

    Tracking goes to $BOOKPULSE_HOME/mlflow.db unless MLFLOW_TRACKING_URI is set."""
    from bookpulse.specs import SpecError

    settings = _settings()
    book = book or settings.book_dir
    try:
        results = _train(book, settings.home, _specs_for(model), threads)
    except (BookError, SpecError, ValueError, *_service_errors()) as exc:
        raise _fail(str(exc)) from None
    _print_results(results)


def _quiet_mlflow() -> None:
    """MLflow's info logs and advice warnings would bury the command's own output."""
    import logging
    import warnings

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)


def _train(book: Path, home: Path, specs, threads: int, sets=None):
    from bookpulse.training.train import train_models

    _quiet_mlflow()
    with console.status("training") as status:
        return train_models(book, home, specs, threads, progress=status.update, sets=sets)


def _print_results(results) -> None:
    table = Table(title="Trained: out-of-time test on the latest closed months")
    for col in (
        "model",
        "version",
        "AUC",
        "ceiling",
        "gap",
        "ECE",
        "noise",
        "ECE truth",
        "lift@10%",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        m = r.metrics
        table.add_row(
            r.model,
            r.version,
            f"{m['auc']:.3f}",
            f"{m['ceiling_auc']:.3f}" if "ceiling_auc" in m else "-",
            f"{m['gap_to_ceiling']:.3f}" if "gap_to_ceiling" in m else "-",
            f"{m['ece']:.3f}",
            f"{m['ece_noise']:.3f}",
            f"{m['ece_truth']:.3f}" if "ece_truth" in m else "-",
            f"{m['lift_top10']:.1f}x",
        )
    console.print(table)
    console.print(
        "[dim]New versions carry the alias 'challenger'. ECE: calibration error, 10 equal-count "
        "bins; noise: the ECE a perfectly calibrated model shows on as many rows; ECE truth: "
        "against the simulator's true probabilities.[/]"
    )


def _service_errors() -> tuple[type[Exception], ...]:
    """Errors from the tracking server, the registry or LightGBM: shown as a message."""
    from lightgbm.basic import LightGBMError
    from mlflow.exceptions import MlflowException

    return (MlflowException, LightGBMError)


def _specs_for(model: str):
    from bookpulse.specs import MODEL_NAMES, load_model_specs

    if model != "all" and model not in MODEL_NAMES:
        raise _fail(f"unknown model {model!r}: use {', '.join(MODEL_NAMES)} or all")
    specs = load_model_specs()
    return list(specs.values()) if model == "all" else [specs[model]]


def _print_decisions(decisions) -> None:
    table = Table(title="Promotion decisions")
    for col in ("model", "outcome", "champion", "AUC new / old", "ECE (noise)", "reason"):
        table.add_column(col)
    for d in decisions:
        m = d.metrics
        auc = f"{m['challenger_auc']:.3f}" if "challenger_auc" in m else "-"
        if "champion_auc" in m:
            auc += f" / {m['champion_auc']:.3f}"
        ece = (
            f"{m['challenger_ece']:.3f} ({m['challenger_ece_noise']:.3f})"
            if "challenger_ece_noise" in m
            else "-"
        )
        table.add_row(
            d.model,
            d.outcome,
            f"{d.champion_before or '-'} -> {d.champion_after or '-'}",
            auc,
            ece,
            d.reason,
        )
    console.print(table)


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="churn, tier_upgrade, card_activation or all.")],
    book: Annotated[
        Path | None, typer.Option(help="Book folder [default: $BOOKPULSE_HOME/book].")
    ] = None,
) -> None:
    """Evaluate challenger and champion on the same latest out-of-time window and move the
    champion alias only when the spec's gates pass (the first model: the absolute gates).
    Every decision is recorded in MLflow (experiment bookpulse-promotions)."""
    from bookpulse.training.registry import RegistryError
    from bookpulse.training.registry import promote as promote_model

    settings = _settings()
    book = book or settings.book_dir
    specs = _specs_for(model)
    decisions = []
    try:
        with console.status("evaluating challenger and champion"):
            for spec in specs:
                decisions.append(promote_model(settings.home, book, spec))
    except (BookError, RegistryError, ValueError, KeyError, *_service_errors()) as exc:
        if decisions:
            _print_decisions(decisions)
        raise _fail(str(exc)) from None
    _print_decisions(decisions)


@app.command()
def promotions(
    model: Annotated[str, typer.Argument(help="churn, tier_upgrade or card_activation.")],
) -> None:
    """The history of promotion and rollback decisions for a model, newest first."""
    from bookpulse.training.registry import history

    spec = _specs_for(model)[0] if model != "all" else None
    if spec is None:
        raise _fail("name one model: churn, tier_upgrade or card_activation")
    try:
        decisions = history(_settings().home, spec.name)
    except _service_errors() as exc:
        raise _fail(str(exc)) from None
    if not decisions:
        console.print(f"no decisions recorded for {spec.name} yet: run `bookpulse promote`")
        return
    table = Table(title=f"Decisions for {spec.name}")
    for col in (
        "time",
        "action",
        "outcome",
        "challenger",
        "champion before -> after",
        "challenger AUC",
        "reason",
    ):
        table.add_column(col)
    for d in decisions:
        auc = d.metrics.get("challenger_auc")
        table.add_row(
            d.time,
            d.action,
            d.outcome,
            d.challenger or "-",
            f"{d.champion_before or '-'} -> {d.champion_after or '-'}",
            f"{auc:.3f}" if auc is not None else "-",
            d.reason,
        )
    console.print(table)


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="churn, tier_upgrade or card_activation.")],
) -> None:
    """Move the champion back to the previous champion, and record it."""
    from bookpulse.training.registry import RegistryError
    from bookpulse.training.registry import rollback as rollback_model

    if model == "all":
        raise _fail("name one model: churn, tier_upgrade or card_activation")
    spec = _specs_for(model)[0]
    try:
        d = rollback_model(_settings().home, spec)
    except (RegistryError, *_service_errors()) as exc:
        raise _fail(str(exc)) from None
    console.print(f"[green]{spec.name}[/]: {d.reason}")


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
    threads: Annotated[int, typer.Option(min=0, help="LightGBM threads (0: all cores).")] = 0,
) -> None:
    """Train the bookpulse recipe on any flat extract and log the validation pack to MLflow
    (experiment bookpulse-table-<file name>). Strings become categoricals; identifier-like
    columns are left out with a notice; the split is out of time with --time-col, otherwise
    stratified."""
    from bookpulse.training.table import TableError, train_table

    _quiet_mlflow()
    try:
        with console.status(f"training on {file}"):
            r = train_table(file, _settings().home, target, positive, time_col, drop or [], threads)
    except (TableError, ValueError, *_service_errors()) as exc:
        raise _fail(str(exc)) from None
    for col, why in r.excluded.items():
        console.print(f"[yellow]left out[/] {col}: {why}")
    m = r.metrics
    console.print(
        f"[green]{r.name}[/]: {len(r.features)} features; rows "
        + ", ".join(f"{k} {v:,}" for k, v in r.rows.items())
        + f"\n  test AUC {m['auc']:.3f}, PR-AUC {m['pr_auc']:.3f}, KS {m['ks']:.3f}, "
        f"calibration error {m['ece']:.3f}, lift top 10% {m['lift_top10']:.1f}x; "
        f"MLflow run {r.run_id}"
    )


@app.command()
def runs(
    model: Annotated[str, typer.Argument(help="churn, tier_upgrade or card_activation.")],
    last: Annotated[int, typer.Option(min=1, max=50, help="How many recent runs.")] = 5,
) -> None:
    """A model's latest runs side by side: key metrics, and the parameters that differ."""
    from bookpulse.training.runs import compare_runs

    if model == "all":
        raise _fail("name one model: churn, tier_upgrade or card_activation")
    spec = _specs_for(model)[0]
    try:
        metrics, diff = compare_runs(_settings().home, spec.registered_name, last)
    except _service_errors() as exc:
        raise _fail(str(exc)) from None
    if metrics.empty:
        console.print(f"no runs for {spec.name} yet: run `bookpulse train {spec.name}`")
        return
    for title, frame in (("metrics", metrics), ("parameters that differ", diff)):
        table = Table(title=f"{spec.name}: {title} (newest run first)")
        table.add_column("")
        for col in frame.columns:
            table.add_column(col, justify="right")
        for name, row in frame.iterrows():
            table.add_row(
                str(name),
                *[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.to_numpy()],
            )
        if len(frame):
            console.print(table)
        else:
            console.print(f"{spec.name}: no parameter differs between these runs")


@app.command()
def score(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Month-end to score, YYYY-MM. Default: the book's latest."),
    ] = None,
    book: Annotated[
        Path | None, typer.Option(help="Book folder. Default: $BOOKPULSE_HOME/book.")
    ] = None,
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
) -> None:
    """Score every active customer (churn, tier upgrade) and every new unused card
    (activation) of one month with the champion models: probabilities, percentile and decile
    in the book, top-3 reasons, model versions; ranked action lists per branch and RM with a
    suggested action (models/playbook.yaml); a manifest with counts, versions, checksums and
    timings. The month is published whole or not at all; re-running it replaces it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bookpulse.scoring.batch import ScoringError, default_out
    from bookpulse.scoring.champions import NoChampion, load_champions
    from bookpulse.specs import SpecError, load_feature_catalog, load_model_specs, load_playbook

    if engine not in ("local", "spark"):
        raise _fail(f"unknown engine {engine!r}: use local or spark")
    settings = _settings()
    book = book or settings.book_dir
    _quiet_mlflow()
    try:
        month = _month(as_of) or read_meta(book)["months"][-1]
        catalog = load_feature_catalog()
        catalogs = {e: catalog.for_entity(e) for e in ("customer", "card")}
        playbook = load_playbook()
        with console.status("loading the champion models"):
            champions = load_champions(settings.home, list(load_model_specs().values()))
        target = out or default_out(settings.home, month)
        if engine == "spark":
            from bookpulse.scoring.spark import score_month_spark

            with console.status(f"scoring {month} on Spark ({spark_master})"):
                manifest = score_month_spark(
                    book,
                    settings.home,
                    month,
                    champions,
                    catalogs,
                    playbook,
                    target,
                    master=spark_master,
                    online=_online_store_for(month, settings),
                )
        else:
            from bookpulse.scoring.batch import score_month

            for c in champions.values():
                c.model.threads = threads
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
                task = bar.add_task(f"scoring {month}", total=None, rate="-")

                def progress(stage: str, done: int, total: int) -> None:
                    elapsed = bar.tasks[0].elapsed or 1e-9
                    bar.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f}")

                manifest = score_month(
                    book,
                    settings.home,
                    month,
                    champions,
                    catalogs,
                    playbook,
                    target,
                    progress,
                    online=_online_store_for(month, settings),
                )
    except (BookError, ScoringError, NoChampion, SpecError, *_service_errors()) as exc:
        raise _fail(str(exc)) from None
    _print_score_summary(target, manifest)


def _online_store_for(month: str, settings):
    """The online store, unless it already serves a later month: re-scoring a past month
    (for a review, or a correction) must not roll the API back to it."""
    from bookpulse.serving.store import open_store

    store = open_store(settings.home, settings.online_store)
    live = store.as_of()
    if live is not None and live > month:
        console.print(
            f"[dim]online store left on {live} (newer than {month}): the API keeps serving "
            "the latest month[/]"
        )
        return None
    return store


def _print_score_summary(target: Path, manifest: dict) -> None:
    rows, secs = manifest["rows_out"], manifest["timings_seconds"]
    table = Table(title=f"Scored {manifest['as_of']} ({manifest['engine']} engine)")
    for col in ("output", "rows"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    models = ", ".join(
        f"{m['registered_name']} v{m['version']}" for m in manifest["models"].values()
    )
    console.print(f"models: {models}")
    console.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
    console.print(
        f"[green]published[/] {target}: customers.parquet, cards.parquet, lists/*.csv and "
        f"*.parquet, manifest.json"
    )


def _key_file(home: Path, name: str) -> Path:
    """A random key kept under $BOOKPULSE_HOME (mode 600), made once."""
    import secrets

    path = home / name
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path


def _curl_example(home: Path, port: int, customer_id: int | None) -> str:
    key = "$(cat " + str(home / "api_key") + ")"
    ident = customer_id if customer_id is not None else 100001
    return (
        f"curl -s -X POST http://127.0.0.1:{port}/v1/customers/score "
        f'-H "X-API-Key: {key}" -H "Content-Type: application/json" '
        f"-d '{{\"customer_ids\": [{ident}]}}'"
    )


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (use --host to expose).")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Start the real-time scoring API (BentoML) with the champion models and the online
    store the last `bookpulse score` published. Callers send the header X-API-Key: keys come
    from BOOKPULSE_API_KEYS or BOOKPULSE_API_KEYS_FILE; without either, a key is made in
    $BOOKPULSE_HOME/api_key (and an admin key for /v1/admin/reload in admin_key)."""
    import os
    import shutil

    settings = _settings()
    env = dict(os.environ, BOOKPULSE_HOME=str(settings.home.resolve()))
    if not (settings.api_keys or settings.api_keys_file):
        env["BOOKPULSE_API_KEYS_FILE"] = str(_key_file(settings.home, "api_key").resolve())
    if not (settings.admin_keys or settings.admin_keys_file):
        env["BOOKPULSE_ADMIN_KEYS_FILE"] = str(_key_file(settings.home, "admin_key").resolve())
    bentoml = shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))
    console.print(f"serving on http://{host}:{port}; try:")
    console.print("  " + _curl_example(settings.home, port, None), soft_wrap=True, markup=False)
    os.execve(
        bentoml,
        [
            bentoml,
            "serve",
            "bookpulse.serving.service:Scoring",
            "--host",
            host,
            "--port",
            str(port),
        ],
        env,
    )


def _print_monitor(report, drifts) -> None:
    table = Table(title=f"Drift in {report.month} against each model's reference")
    for col in ("model", "rows", "score PSI", "verdict", "why"):
        table.add_column(col, justify="right" if col in ("rows", "score PSI") else "left")
    colour = {"stable": "green", "watch": "yellow", "act": "red"}
    for name, d in drifts.items():
        table.add_row(
            name,
            f"{d.rows:,}",
            f"{d.score_psi:.3f}",
            f"[{colour[d.verdict]}]{d.verdict}[/]",
            "; ".join(d.reasons[:3]) or "-",
        )
    console.print(table)
    console.print(f"report: {report.path} (MLflow run {report.run_id}, experiment "
                  "bookpulse-monitoring)")


@app.command()
def monitor(
    as_of: Annotated[
        str | None, typer.Option(help="Month to check, YYYY-MM (default: the book's latest).")
    ] = None,
    book: Annotated[Path | None, typer.Option(help="Book folder (default: the home's).")] = None,
) -> None:
    """Check every champion for drift in one month: PSI of its score and of its top features
    against its training run's out-of-time test window (stable < 0.10 <= watch < 0.25 <= act,
    noise-aware), missing rates and category mix. Writes an HTML report under
    $BOOKPULSE_HOME/reports and logs the figures to the MLflow experiment
    bookpulse-monitoring. Exit code 0 whatever the verdict."""
    from bookpulse.monitoring.jobs import MonitorError, monitor_report
    from bookpulse.scoring.batch import ScoringError
    from bookpulse.scoring.champions import NoChampion, load_champions
    from bookpulse.specs import SpecError, load_model_specs

    settings = _settings()
    book = book or settings.book_dir
    _quiet_mlflow()
    month = as_of or "the latest month"
    try:
        month = _month(as_of) or read_meta(book)["months"][-1]
        with console.status(f"monitoring {month}"):
            champions = load_champions(settings.home, list(load_model_specs().values()))
            report, drifts = monitor_report(settings.home, book, month, champions)
    except (BookError, ScoringError, NoChampion, SpecError, MonitorError,
            *_service_errors()) as exc:
        raise _fail(str(exc)) from None
    except (OSError, KeyError, ValueError) as exc:  # unreadable files, a damaged reference
        raise _fail(f"monitoring {month} failed: {type(exc).__name__}: {exc}") from None
    _print_monitor(report, drifts)


def _print_review(report, results, skipped) -> None:
    table = Table(title=f"Scored {report.month}: realised against promised")
    for col in ("model", "rows", "AUC (promised)", "obs/exp", "verdict", "why"):
        table.add_column(col, justify="left" if col in ("model", "verdict", "why") else "right")
    for name, r in results.items():
        m, p = r.metrics, r.promised
        colour = "green" if r.verdict == "as promised" else "red"
        table.add_row(
            name,
            f"{r.rows:,}",
            f"{m.get('auc', float('nan')):.3f} ({p.get('auc', float('nan')):.3f})",
            f"{m['observed_over_expected']:.2f}",
            f"[{colour}]{r.verdict}[/]",
            "; ".join(r.reasons) or "-",
        )
    console.print(table)
    for name, why in skipped.items():
        console.print(f"[yellow]{name} not reviewed:[/] {why}")
    console.print(f"report: {report.path} (MLflow run {report.run_id}, experiment "
                  "bookpulse-monitoring)")


@app.command()
def review(
    scored: Annotated[str, typer.Option(help="The scored month to review, YYYY-MM.")],
    book: Annotated[Path | None, typer.Option(help="Book folder (default: the home's).")] = None,
    scores: Annotated[
        Path | None,
        typer.Option(help="The scored month's folder (default: $BOOKPULSE_HOME/scores/MONTH)."),
    ] = None,
) -> None:
    """Review a past scoring month whose outcome window has closed: realised outcome rate by
    decile, realised AUC, lift and calibration against what each model's validation pack
    promised; and for each action list, per branch and RM, how many listed customers churned,
    upgraded or activated against those not listed. Writes an HTML report and logs an MLflow
    run (experiment bookpulse-monitoring)."""
    from bookpulse.monitoring.jobs import MonitorError, review_report
    from bookpulse.specs import SpecError, load_model_specs, load_playbook

    settings = _settings()
    book = book or settings.book_dir
    _quiet_mlflow()
    month = _month(scored)
    try:
        with console.status(f"reviewing {month}"):
            report, results, skipped = review_report(
                settings.home, book, month, load_model_specs(), load_playbook(), scores
            )
    except (BookError, SpecError, MonitorError, *_service_errors()) as exc:
        raise _fail(str(exc)) from None
    except (OSError, KeyError, ValueError) as exc:  # missing or damaged score files
        raise _fail(
            f"reviewing {month} failed: {type(exc).__name__}: {exc} (re-score the month with "
            f"`bookpulse score --as-of {month}`)"
        ) from None
    _print_review(report, results, skipped)


def _demo_review(home: Path, book: Path) -> str:
    """Score the earliest month every champion can be judged on (its test window's first
    month, whose outcomes are in the book), then review it."""
    from bookpulse.monitoring.jobs import earliest_reviewable
    from bookpulse.scoring.champions import load_champions
    from bookpulse.specs import load_model_specs

    champions = load_champions(home, list(load_model_specs().values()))
    month = earliest_reviewable(home, champions)
    console.print(f"\n[bold]Review[/]: {month} is the earliest month every champion can be "
                  "judged on (out of time, outcomes known); scoring it, then reviewing it")
    score(as_of=month, book=book, out=None, engine="local", spark_master="local[*]", threads=0)
    review(scored=month, book=book, scores=None)
    return month


@app.command()
def demo() -> None:
    """Run the whole job on the embedded default: a 20,000-customer, 24-month synthetic book
    under $BOOKPULSE_HOME (default ./data), validated and summarised; the latest month's
    features; each model's training set; the three models trained, tracked in MLflow and
    promoted when their gates pass; then the latest month scored with reasons and lists."""
    from bookpulse.book.validate import format_problems, validate_book

    settings = _settings()
    book = settings.book_dir
    end_month = _last_complete_month()
    wanted = {
        "customers": DEMO_CUSTOMERS,
        "seed": DEMO_SEED,
        "end_month": end_month,
        "month_count": DEMO_MONTHS,
    }
    try:
        meta = read_meta(book) if book.exists() else None
    except BookError:
        meta = None
    if meta is not None:
        meta = {**meta, "month_count": len(meta.get("months", []))}
    if meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
        console.print(f"[green]reusing[/] the demo book at {book} (same size, seed and months)")
    else:
        made_here = meta is not None and meta.get("generator") == "bookpulse.book.simulate"
        if book.exists() and any(book.iterdir()) and not made_here:
            raise _fail(
                f"{book} holds a book the simulator did not make; the demo will not replace it. "
                "Set BOOKPULSE_HOME to another folder for the demo."
            )
        if meta is not None:
            console.print(f"[yellow]replacing[/] the synthetic book at {book} with the demo book")
        try:
            _generate(DEMO_CUSTOMERS, DEMO_MONTHS, DEMO_SEED, end_month, book, force=True)
        except (BookError, ValueError) as exc:
            raise _fail(str(exc)) from None
    with console.status("validating the book"):
        problems = validate_book(book)
    if problems:
        console.print(format_problems(problems))
        raise _fail(f"the demo book has {len(problems)} problem(s)")
    console.print("[green]valid:[/] the book passes every schema and cross-table check")
    _print_summary(book)
    from bookpulse.features.build import build_and_publish, default_paths

    latest = read_meta(book)["months"][-1]
    with console.status(f"building features as of {latest}"):
        files = build_and_publish(book, latest, *default_paths(settings.home, latest))
    console.print(
        f"\n[green]features as of {latest}[/]: {files.customer_rows:,} active customers -> "
        f"{files.customers}; {files.card_rows:,} new unused cards -> {files.cards}"
    )
    sets = _print_training_sets(book)
    from bookpulse.specs import load_model_specs
    from bookpulse.training.registry import promote as promote_model

    specs = list(load_model_specs().values())
    _print_results(_train(book, settings.home, specs, threads=0, sets=sets))
    with console.status("promoting: challenger against champion on the latest closed months"):
        decisions = [promote_model(settings.home, book, spec) for spec in specs]
    _print_decisions(decisions)
    console.print(
        "MLflow runs and the registry: [bold]make ui[/] (tracking store "
        f"{settings.home / 'mlflow.db'})"
    )
    if not all(d.champion_after for d in decisions):
        console.print("[yellow]not every model has a champion: the demo stops before scoring[/]")
        return
    console.print()
    score(as_of=latest, book=book, out=None, engine="local", spark_master="local[*]", threads=0)
    console.print()
    monitor(as_of=latest, book=book)
    reviewed = _demo_review(settings.home, book)
    _key_file(settings.home, "api_key")
    first = pd.read_parquet(
        settings.home / "scores" / latest / "customers.parquet", columns=["customer_id"]
    )["customer_id"].iloc[0]
    console.print(
        "\n[bold]The API[/]: start it with [bold]make serve[/] (or bookpulse serve), then:"
    )
    console.print(
        "  " + _curl_example(settings.home, 3000, int(first)), soft_wrap=True, markup=False
    )
    from bookpulse.monitoring.jobs import reports_dir

    pages = [reports_dir(settings.home) / f"{k}-{m}.html" for k, m in
             (("monitor", latest), ("review", reviewed))]
    console.print(
        f"\n[bold]Reports[/] (open in a browser; also in MLflow, experiment "
        f"bookpulse-monitoring): {pages[0]}, {pages[1]}"
    )


if __name__ == "__main__":
    app()
