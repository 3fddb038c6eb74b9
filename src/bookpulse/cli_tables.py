"""What the `bookpulse` command prints: one function per kind of result, rich tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the demo's step types, for annotations: importing the demo costs every
    # other command (train-table above all) a third of a second
    from bookpulse.jobs import demo as steps

console = Console()
err = Console(stderr=True)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def generated(made, seconds: float) -> None:
    meta = made.meta
    console.print(
        f"[green]book written[/] to {made.out}: {meta['customers']:,} customers x "
        f"{len(meta['months'])} months ({meta['start_month']} .. {meta['end_month']}), "
        f"{meta['snapshot_rows']:,} snapshot rows, {meta['cards']:,} cards, in {seconds:.1f} s"
    )
    if made.shocks:
        console.print("[yellow]shocked:[/] " + ", ".join(str(s) for s in made.shocks))


def summary(book: Path, s) -> None:
    meta = s.meta
    console.print(
        f"\n[bold]Book[/] {book}: {meta['customers']:,} customers, {meta['start_month']} .. "
        f"{meta['end_month']}, seed {meta['seed']}; {s.active_customers:,} active at "
        f"{meta['end_month']}"
    )
    mixes = Table(title=f"Mix of active customers at {meta['end_month']}", show_lines=False)
    for col, right in (
        ("tier", False),
        ("share", True),
        ("segment", False),
        ("share", True),
        ("product lines", False),
        ("share", True),
        ("3m churn", True),
    ):
        mixes.add_column(col, justify="right" if right else "left")
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
            pct(t[1]) if t[1] is not None else "",
            g[0],
            pct(g[1]) if g[1] is not None else "",
            p[0],
            pct(p[1]) if p[1] is not None else "",
            pct(churn) if churn is not None else "",
        )
    console.print(mixes)
    events = Table(title="Events over the labelled months (realised) and the ceiling")
    for col in ("target", "labelled rows", "months", "event rate", "ceiling AUC", "by group"):
        events.add_column(col, justify="left" if col in ("target", "by group") else "right")
    for t in s.targets.values():
        groups = ", ".join(f"{k} {pct(v)}" for k, v in t.by_group.items())
        events.add_row(
            t.title, f"{t.rows:,}", str(t.months), pct(t.rate), f"{t.ceiling_auc:.3f}", groups
        )
    console.print(events)


def features(month: str, files) -> None:
    console.print(
        f"[green]features as of {month}[/]: {files.customer_rows:,} customers -> "
        f"{files.customers}; {files.card_rows:,} new cards -> {files.cards}"
    )


def training_sets(specs, sets, splits) -> None:
    table = Table(title="Training sets (out-of-time split from each model spec)")
    for col in ("model", "rows", "as_of months", "positive rate", "train / valid / calib / test"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, spec in specs.items():
        df, split = sets[name], splits[name]
        table.add_row(
            name,
            f"{len(df):,}",
            f"{split['train'][0]} .. {split['test'][-1]}",
            pct(df[spec.target.label].mean()),
            " / ".join(str(len(v)) for v in split.values()),
        )
    console.print(table)


def trained(results) -> None:
    scoring = [r for r in results if r.kind == "score"]
    if scoring:
        _trained_scoring(scoring)
    uplifts = [r for r in results if r.kind == "uplift" and r.note is None]
    if uplifts:
        _trained_uplift(uplifts)
    for r in results:
        if r.note:
            console.print(f"[yellow]{r.model}[/] {r.note}")


def _trained_uplift(results) -> None:
    table = Table(title="Uplift models: out-of-time test on the latest lists with closed outcomes")
    cols = (
        "model",
        "version",
        "Qini",
        "AUUC",
        "effect realised (95%)",
        "predicted",
        "true",
        "ranking vs truth",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        m = r.metrics

        def pts(x: float) -> str:
            return f"{100 * x:+.2f}"

        table.add_row(
            r.model,
            r.version,
            f"{m['qini']:.4f} ({m.get('qini_z', float('nan')):+.1f})",
            f"{m['auuc']:.4f}",
            f"{pts(m['ate_realised'])} "
            f"({pts(m['ate_realised_low'])}..{pts(m['ate_realised_high'])})",
            pts(m["ate_predicted"]),
            pts(m["ate_true"]) if "ate_true" in m else "-",
            f"{m['expected_gain_ratio']:.0%}" if "expected_gain_ratio" in m else "-",
        )
    console.print(table)
    console.print(
        "[dim]Qini per row (in brackets: in units of its noise, the spread of random orderings' "
        "Qini). Effects in percentage points of the outcome, in the direction the action aims at "
        "(a fall in churn counts positive), from being put in the treated arm. Ranking vs truth: "
        "the true effects gained down the model's ranking, as a share of what ranking by the "
        "true effects gains (simulator only).[/]"
    )


def _trained_scoring(results) -> None:
    table = Table(title="Trained: out-of-time test on the latest closed months")
    cols = ("model", "version", "AUC", "ceiling", "gap", "ECE", "noise", "ECE truth", "lift@10%")
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        m = r.metrics

        def opt(key: str, m=m) -> str:
            return f"{m[key]:.3f}" if key in m else "-"

        table.add_row(
            r.model,
            r.version,
            f"{m['auc']:.3f}",
            opt("ceiling_auc"),
            opt("gap_to_ceiling"),
            f"{m['ece']:.3f}",
            f"{m['ece_noise']:.3f}",
            opt("ece_truth"),
            f"{m['lift_top10']:.1f}x",
        )
    console.print(table)
    console.print(
        "[dim]New versions carry the alias 'challenger'. ECE: calibration error, 10 equal-count "
        "bins; noise: the ECE a perfectly calibrated model shows on as many rows; ECE truth: "
        "against the simulator's true probabilities.[/]"
    )


def decisions(found) -> None:
    table = Table(title="Promotion decisions")
    for col in ("model", "outcome", "champion", "AUC new / old", "ECE (noise)", "reason"):
        table.add_column(col)
    for d in found:
        m = d.metrics
        auc = f"{m['challenger_auc']:.3f}" if "challenger_auc" in m else "-"
        if "champion_auc" in m:
            auc += f" / {m['champion_auc']:.3f}"
        if "auc_diff" in m:  # DeLong's paired test on the same rows
            auc += (
                f"\n{d.verdict}: {m['auc_diff']:+.4f} "
                f"[{m['auc_diff_low']:+.4f}, {m['auc_diff_high']:+.4f}], p {m['auc_diff_p']:.2g}"
            )
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
    for d in found:
        if d.rows_from:  # a flat-table model: which rows both versions were scored on
            console.print(f"{d.model}: judged on {d.rows_from}", soft_wrap=True)


def history(model: str, found) -> None:
    table = Table(title=f"Decisions for {model}")
    for col in (
        "time",
        "action",
        "outcome",
        "challenger",
        "champion before -> after",
        "challenger AUC",
        "against the champion",
        "reason",
    ):
        table.add_column(col)
    for d in found:
        auc = d.metrics.get("challenger_auc")
        m = d.metrics
        paired = (
            f"{d.verdict}: {m['auc_diff']:+.4f} [{m['auc_diff_low']:+.4f}, "
            f"{m['auc_diff_high']:+.4f}], p {m['auc_diff_p']:.2g}"
            if "auc_diff" in m
            else "-"
        )
        table.add_row(
            d.time,
            d.action,
            d.outcome,
            d.challenger or "-",
            f"{d.champion_before or '-'} -> {d.champion_after or '-'}",
            f"{auc:.3f}" if auc is not None else "-",
            paired,
            d.reason,
        )
    console.print(table)


def runs(model: str, metrics, diff) -> None:
    for title, frame in (("metrics", metrics), ("parameters that differ", diff)):
        table = Table(title=f"{model}: {title} (newest run first)")
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
            console.print(f"{model}: no parameter differs between these runs")


def table_result(r) -> None:
    for col, why in r.excluded.items():
        console.print(f"[yellow]left out[/] {col}: {why}", soft_wrap=True)
    if r.embargo:
        console.print(f"embargo: {r.embargo}", soft_wrap=True)
    m = r.metrics
    suspect = "leakage" in r.warnings or "dominant_feature" in r.warnings
    colour = "yellow" if suspect else "green"
    console.print(
        f"[{colour}]{r.name}[/]: {len(r.features)} features; rows "
        + ", ".join(f"{k} {v:,}" for k, v in r.rows.items())
        + f" ({r.threads} LightGBM thread{'s' if r.threads != 1 else ''})"
        + f"\n  test AUC [{colour}]{m['auc']:.3f}[/], PR-AUC {m['pr_auc']:.3f}, KS {m['ks']:.3f}, "
        f"calibration error {m['ece']:.3f}, lift top 10% {m['lift_top10']:.1f}x; "
        f"MLflow run {r.run_id}",
        soft_wrap=True,
    )
    for kind, message in r.warnings.items():
        console.print(
            f"[bold yellow]warning ({kind.replace('_', ' ')}):[/] {message}", soft_wrap=True
        )


def table_registered(r) -> None:
    if r.version:
        console.print(
            f"registered [green]{r.registered_name}[/] version {r.version} (challenger): "
            f"`bookpulse promote {r.name}` to judge it against the gates and the champion"
        )


def table_scored(r) -> None:
    for note in r.notes:
        console.print(f"[yellow]note[/] {note}", soft_wrap=True)
    kept = f"; copied {', '.join(r.kept)}" if r.kept else ""
    console.print(
        f"[green]scored[/] {r.rows:,} rows with {r.registered_name} version {r.version} "
        f"(champion): mean probability {r.mean_probability:.3f}, top decile "
        f"{r.top_decile_probability:.3f}{kept}\n  wrote {r.out} in {r.seconds:.1f} s",
        soft_wrap=True,
    )


def scored(result) -> None:
    manifest = result.manifest
    rows, secs = manifest.rows_out, manifest.timings_seconds
    table = Table(title=f"Scored {manifest.as_of} ({manifest.engine})")
    for col in ("output", "rows"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    models = ", ".join(
        f"{m.registered_name} v{m.version}"
        for m in [*manifest.models.values(), *manifest.uplifts.values()]
    )
    console.print(f"models: {models}")
    console.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
    console.print(
        f"[green]published[/] {result.out}: customers.parquet, cards.parquet, lists/*.csv and "
        f"*.parquet, manifest.json; [dim]{result.online}[/]"
    )
    for name, why in result.not_scored.items():
        verb = "" if name.startswith("list ") else " not scored"
        console.print(f"[yellow]{name}{verb}:[/] {why}")


def monthly(result) -> None:
    done = "already done" if result.already_done else "done"
    console.print(f"[bold]{result.month}[/] {done}: scored, monitored")
    for name, verdict in result.monitor.items():
        colour = {"stable": "green", "watch": "yellow"}.get(verdict, "red")
        console.print(f"  drift {name}: [{colour}]{verdict}[/]")
    for read, verdict in result.early.items():
        colour = "green" if verdict == "as expected" else "red"
        console.print(f"  early read {read}: [{colour}]{verdict}[/]")
    for month, verdicts in result.reviews.items():
        for name, verdict in verdicts.items():
            colour = "green" if verdict == "as promised" else "red"
            console.print(f"  review {month} {name}: [{colour}]{verdict}[/]")
    for note in result.notes:
        console.print(f"  [dim]{note}[/]")
    if result.needs_action:
        console.print("[bold red]needs a look[/] (exit 3): " + "; ".join(result.needs_action))
    else:
        console.print("[green]calm[/] (exit 0)")


def status(st) -> None:
    console.print(f"the API serves: [bold]{st.serving or 'nothing yet'}[/]")
    table = Table(title="Published months (newest first)")
    for col in ("month", "written", "engine", "models", "online store"):
        table.add_column(col)
    for p in st.published:
        m = p.manifest
        models = ", ".join(f"{n} v{x.version}" for n, x in m.models.items())
        table.add_row(p.month, m.written_at, m.engine, models, m.online_store)
    console.print(table)
    champs = ", ".join(f"{n} v{v}" if v else f"{n} (none)" for n, v in st.champions.items())
    console.print(f"champions: {champs}")
    for w in st.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def monitored(result) -> None:
    report, drifts = result.report, result.drifts
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
    for name, why in result.not_monitored.items():
        console.print(f"[yellow]{name} not monitored:[/] {why}")
    _early(report.month, result.early, result.early_skipped)
    if result.estimates:
        est = Table(
            title=f"Expected performance in {report.month} without labels (CBPE; blind to "
            "concept drift: it assumes the calibration still holds)"
        )
        cols = ("model", "rows", "expected AUC (test window; realised)", "expected rate")
        for col in (*cols, "verdict"):
            est.add_column(col, justify="left" if col in ("model", "verdict") else "right")
        for name, e in result.estimates.items():
            est.add_row(
                name,
                f"{e.rows:,}",
                f"{e.expected_auc:.3f} ({e.reference_expected_auc:.3f}; {e.promised_auc:.3f})",
                f"{e.expected_event_rate:.2%} (promised {e.promised_event_rate:.2%})",
                e.verdict,
            )
        console.print(est)
    console.print(
        f"report: {report.path} (MLflow run {report.run_id}, experiment bookpulse-monitoring)"
    )


def _early(month: str, reads, skipped: dict[str, str]) -> None:
    """The early outcome reads of the windows open at `month`."""
    if not reads:
        console.print(f"early reads: no published month has an outcome window open at {month}")
    else:
        table = Table(title=f"Early outcome reads at {month}: events so far against expected")
        for col in ("model", "scored", "elapsed", "events", "expected", "obs/exp", "z", "verdict"):
            table.add_column(col, justify="left" if col in ("model", "verdict") else "right")
        for r in reads:
            colour = "red" if r.flagged else "green"
            table.add_row(
                r.model,
                r.scored,
                str(r.elapsed),
                f"{r.observed:,}",
                f"{r.expected:,.0f} ({r.expected_low:,.0f}-{r.expected_high:,.0f})",
                f"{r.observed_over_expected:.2f}",
                f"{r.z:+.1f}",
                f"[{colour}]{r.verdict}[/]",
            )
        console.print(table)
    for what, why in skipped.items():
        console.print(f"[yellow]{what} not read early:[/] {why}")


def reviewed(result) -> None:
    report = result.report
    table = Table(title=f"Scored {report.month}: realised against promised")
    for col in ("model", "rows", "AUC (promised)", "obs/exp", "verdict", "why"):
        table.add_column(col, justify="left" if col in ("model", "verdict", "why") else "right")
    for name, r in result.results.items():
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
    for name, r in result.results.items():
        for kind, found in (("weak spot", r.slices), ("fairness", r.fairness)):
            for line in [] if found is None else _flagged_groups(found):
                console.print(f"[yellow]{name} {kind}:[/] {line}")
    if result.caused:
        _caused(report.month, result.caused)
    if result.against:
        _against(report.month, result.against)
    for name, why in result.skipped.items():
        console.print(f"[yellow]{name} not reviewed:[/] {why}")
    console.print(
        f"report: {report.path} (MLflow run {report.run_id}, experiment bookpulse-monitoring)"
    )


def _flagged_groups(found) -> list[str]:
    from bookpulse.model.slices import flagged

    return flagged(found)


def _against(month: str, against: dict) -> None:
    from bookpulse.model import lists

    table = Table(title=f"Lists of {month} ranked by risk against by expected value (truth)")
    for col in ("list", "rows", "kept: risk", "value", "ratio", "assets: risk", "value", "ratio"):
        table.add_column(col, justify="left" if col == "list" else "right")

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a else "-"

    for name, c in against.items():
        table.add_row(
            name,
            f"{c['value_rows']:,.0f}",
            f"{c['risk_kept']:.1f}",
            f"{c['value_kept']:.1f}",
            ratio(c["risk_kept"], c["value_kept"]),
            lists.money(c["risk_assets"]),
            lists.money(c["value_assets"]),
            ratio(c["risk_assets"], c["value_assets"]),
        )
    console.print(table)
    console.print(
        "[dim]The same month's lists at the same RM capacity, counted with the simulator's true "
        "effects over their treated rows: customers (cards) kept or won, and the assets at "
        "stake with them.[/]"
    )


def _caused(month: str, caused) -> None:
    table = Table(title=f"Lists drawn up at {month}, by cause: treated against the hold-out")
    cols = ("list", "treated", "held out", "effect (95%)", "kept or won", "assets", "true effect")
    for col in cols:
        table.add_column(col, justify="left" if col == "list" else "right")

    def pts(x: float) -> str:
        return f"{100 * x:+.1f}"

    for name, c in caused.items():
        t = c.totals
        true = "-"
        if c.true_effect is not None:
            inside = t["effect_low"] <= c.true_effect <= t["effect_high"]
            true = f"{pts(c.true_effect)} ({'inside' if inside else 'outside'})"
        table.add_row(
            name,
            f"{int(t['treated']):,} ({t['treated_rate']:.1%})",
            f"{int(t['control']):,} ({t['control_rate']:.1%})",
            f"{pts(t['effect'])} ({pts(t['effect_low'])}..{pts(t['effect_high'])})",
            f"{t['rows_gained']:,.0f} ({t['rows_gained_low']:,.0f}..{t['rows_gained_high']:,.0f})",
            "-" if c.outcome == "activated" else f"CNY {t['assets_gained'] / 1e6:,.1f}M",
            true,
        )
    console.print(table)
    console.print(
        "[dim]Effect: the treated arm's outcome rate minus the randomised hold-out's, in points "
        "(intention to treat). Kept or won: the effect in the aimed direction times the treated "
        "rows; assets: with asset-weighted rates. True effect: the simulator's, over the listed "
        "rows.[/]"
    )


# --- the demo's steps ------------------------------------------------------------------


_STEP_PRINTERS: dict[str, Callable] = {}


def _prints(func: Callable) -> Callable:
    """Register a printer for the demo step its annotation names (`s: steps.Name`), by name:
    the demo module is imported only by the demo."""
    _STEP_PRINTERS[func.__annotations__["s"].rsplit(".", 1)[-1]] = func
    return func


def step(s) -> None:
    printer = _STEP_PRINTERS.get(type(s).__name__)
    if printer is None:
        raise TypeError(f"no printer for {type(s).__name__}")
    printer(s)


@_prints
def _(s: steps.Working) -> None:
    pass  # the CLI's spinner shows it


@_prints
def _(s: steps.BookReady) -> None:
    if s.reused:
        console.print(f"[green]reusing[/] the demo book at {s.book} (same size, seed and months)")
        return
    if s.replaced:
        console.print(f"[yellow]replaced[/] the synthetic book at {s.book} with the demo book")
    meta = s.meta
    console.print(
        f"[green]book written[/] to {s.book}: {meta['customers']:,} customers x "
        f"{len(meta['months'])} months ({meta['start_month']} .. {meta['end_month']})"
    )


@_prints
def _(s: steps.Validated) -> None:
    if s.problems:
        from bookpulse.book.validate import format_problems

        console.print(format_problems(s.problems))
    else:
        console.print("[green]valid:[/] the book passes every schema and cross-table check")


@_prints
def _(s: steps.Summarised) -> None:
    summary(s.book, s.summary)


@_prints
def _(s: steps.FeaturesBuilt) -> None:
    console.print()
    features(s.month, s.files)


@_prints
def _(s: steps.TrainingSets) -> None:
    training_sets(s.specs, s.sets, s.splits)


@_prints
def _(s: steps.Trained) -> None:
    trained(s.results)


@_prints
def _(s: steps.Promoted) -> None:
    decisions(s.decisions)
    console.print("MLflow runs and the registry: [bold]make ui[/]")


@_prints
def _(s: steps.Stopped) -> None:
    console.print(f"[yellow]{s.why}[/]")


@_prints
def _(s: steps.Scored) -> None:
    console.print()
    scored(s.result)


@_prints
def _(s: steps.Monitored) -> None:
    console.print()
    monitored(s.result)


@_prints
def _(s: steps.Reviewing) -> None:
    console.print(
        f"\n[bold]Review[/]: {s.month} is the earliest month every champion can be judged on "
        "(out of time, outcomes known); scoring it, then reviewing it"
    )


@_prints
def _(s: steps.Reviewed) -> None:
    reviewed(s.result)


@_prints
def _(s: steps.Finished) -> None:
    console.print(
        "\n[bold]The API[/]: start it with [bold]make serve[/] (or bookpulse serve), then:"
    )
    console.print("  " + s.curl, soft_wrap=True, markup=False)
    console.print(
        "\n[bold]Reports[/] (open in a browser; also in MLflow, experiment "
        "bookpulse-monitoring): " + ", ".join(str(p) for p in s.reports)
    )
