"""The monitoring and review reports: one self-contained HTML page each (plots inline as PNG),
readable in any browser and logged to MLflow beside the figures."""

from __future__ import annotations

import base64
import html
import os
from io import BytesIO
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bookpulse.adapters import tracking
from bookpulse.model import slices as breakdown
from bookpulse.model.drift import ACT, COLUMNS, WATCH, Drift
from bookpulse.model.early import CBPE_NOTE, EarlyRead, Estimate
from bookpulse.model.realised import Realised, by_branch

COLOURS = {"stable": "#2e7d32", "watch": "#ef6c00", "act": "#c62828"}
REVIEW_COLOURS = {"as promised": "#2e7d32", "off promise": "#c62828"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.badge { color: white; padding: .15em .6em; border-radius: .8em; font-weight: 600; }
.note { color: #555; font-size: .9em; } img { max-width: 100%; }
"""


def _png(fig: Figure) -> str:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _badge(verdict: str, colours: dict[str, str]) -> str:
    colour = colours.get(verdict, "#555")
    return f'<span class="badge" style="background:{colour}">{html.escape(verdict)}</span>'


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.1%}"


def _table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    return df.to_html(
        index=False,
        float_format=lambda v: "-" if not np.isfinite(v) else floats.format(v),
        border=0,
        na_rep="-",
    )


def _page(title: str, body: list[str]) -> str:
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>\n"
    )


def drift_plot(d: Drift) -> Figure:
    """Score distribution against the reference, and PSI of the top features by gain."""
    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ref, now = (np.asarray(x) for x in d.score_shares)
    x = np.arange(len(ref))
    ax1.bar(x - 0.2, ref, 0.4, label="reference (test window)", color="#90a4ae")
    ax1.bar(x + 0.2, now, 0.4, label="this month", color="#1565c0")
    ax1.set_xlabel("reference score decile (low to high)")
    ax1.set_ylabel("share of rows")
    ax1.set_title(f"{d.model}: score distribution (PSI {d.score_psi:.3f})")
    ax1.legend()
    top = d.features.loc[d.features["top"]].iloc[::-1]
    colours = [COLOURS[v] for v in top["psi_verdict"]]
    ax2.barh(top["feature"], top["psi"], color=colours)
    for bound, style in ((WATCH, "--"), (ACT, "-")):
        ax2.axvline(bound, color="#555", linestyle=style, linewidth=1)
    ax2.set_xlabel("PSI against the reference (watch 0.10, act 0.25)")
    ax2.set_title("top features by gain")
    fig.tight_layout()
    return fig


EARLY_COLOURS = {"as expected": "#2e7d32", "more than expected": "#c62828"}
EARLY_COLOURS["fewer than expected"] = "#c62828"
CBPE_COLOURS = {"as promised": "#2e7d32", "below promise": "#ef6c00"}


def trend_plot(model: str, trend: pd.DataFrame) -> Figure:
    """A model's last monitored months: score PSI against the bands, and rows scored."""
    fig = Figure(figsize=(11, 3.0))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(trend))
    colours = [COLOURS.get(v, "#555") for v in trend["verdict"]]
    ax1.plot(x, trend["score_psi"], color="#1565c0", linewidth=1)
    ax1.scatter(x, trend["score_psi"], c=colours, zorder=3)
    for bound, style in ((WATCH, "--"), (ACT, "-")):
        ax1.axhline(bound, color="#555", linestyle=style, linewidth=1)
    ax1.set_ylim(0, max(ACT * 1.1, float(np.nanmax(trend["score_psi"], initial=0)) * 1.1))
    ax1.set_title(f"{model}: score PSI by month (dots: the month's verdict)")
    ax2.bar(x, trend["rows"], color="#90a4ae")
    ax2.set_title("rows scored")
    for ax in (ax1, ax2):
        ax.set_xticks(x, trend["month"], rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    return fig


def _early_html(reads: list[EarlyRead], skipped: dict[str, str]) -> list[str]:
    body = [
        "<h2>Early outcome reads</h2>",
        "<p>Each published month whose outcome window is still open: the events so far in the "
        "book (read up to this month only; counted by the target's own label over the elapsed "
        "part of the window) against what that month's calibrated probabilities expect for "
        "the time elapsed. Events do not arrive evenly through a window, so each row expects "
        "the share s of its probability p that the book's own last closed windows showed by "
        "the same point (q = s x p; a constant hazard, 1 - (1 - p)^f for the elapsed "
        "fraction f, only while no window has closed). The noise band is the expected count "
        "+- 3 standard deviations (of the count, sqrt of sum q(1 - q), and of the measured "
        "share); a read is flagged only outside it and with observed/expected outside its "
        "band (the review's 20%, or the widest single-month move of the validation pack). "
        "Tier upgrade is read as a state (in a higher tier now), which can still be undone "
        "before its window ends.</p>",
    ]
    if reads:
        body.append(
            "<table><tr><th>model</th><th>scored</th><th>elapsed</th><th>rows</th>"
            "<th>events so far</th><th>expected (noise band)</th><th>obs/exp (band)</th>"
            "<th>z</th><th>expected over the whole window</th><th>verdict</th>"
            "<th>counted</th><th>expected from</th></tr>"
        )
        for r in reads:
            body.append(
                f"<tr><td>{html.escape(r.model)}</td><td>{r.scored}</td>"
                f"<td>{html.escape(str(r.elapsed))}</td><td>{r.rows:,}</td>"
                f"<td>{r.observed:,}</td><td>{r.expected:,.1f} ({r.expected_low:,.0f}-"
                f"{r.expected_high:,.0f})</td><td>{r.observed_over_expected:.2f} "
                f"(1 &plusmn; {r.band:.2f})</td><td>{r.z:+.1f}</td>"
                f"<td>{r.expected_full:,.0f}</td><td>{_badge(r.verdict, EARLY_COLOURS)}</td>"
                f"<td>{html.escape(r.reading)}</td><td>{html.escape(r.expectation)}</td></tr>"
            )
        body.append("</table>")
    else:
        body.append("<p class='note'>No published month has an outcome window open now.</p>")
    for what, why in skipped.items():
        body.append(f"<p class='note'>{html.escape(what)} not read: {html.escape(why)}</p>")
    return body


def _estimates_html(estimates: dict[str, Estimate]) -> list[str]:
    body = [
        "<h2>Expected performance this month, without labels (CBPE)</h2>",
        "<p>Confidence-based performance estimation: if this month's calibrated probabilities "
        "hold, the event rate is their mean and the AUC is the one where each row counts as "
        "an event with weight p and as a non-event with weight 1 - p. It sees a population "
        f"the model ranks less well (covariate drift). <b>It is {html.escape(CBPE_NOTE)}</b>: "
        "when the world changes how the features lead to outcomes (concept drift: a rate cut "
        "making the same customers leave), the probabilities are wrong and this estimate, "
        "built from them, reads as promised. The early reads above are what see that. The "
        "estimate is judged against the same estimate on the test window (a model's scores "
        "may expect a little more or less of themselves than the labels showed): 0.05 under "
        "it is shown as below promise.</p>",
        "<table><tr><th>model</th><th>rows</th><th>expected AUC</th>"
        "<th>expected AUC on the test window</th><th>realised AUC promised</th>"
        "<th>expected event rate (promised)</th><th>verdict</th></tr>",
    ]
    for name, e in estimates.items():
        body.append(
            f"<tr><td>{html.escape(name)}</td><td>{e.rows:,}</td>"
            f"<td>{e.expected_auc:.3f}</td><td>{e.reference_expected_auc:.3f}</td>"
            f"<td>{e.promised_auc:.3f}</td>"
            f"<td>{_pct(e.expected_event_rate)} ({_pct(e.promised_event_rate)})</td>"
            f"<td>{_badge(e.verdict, CBPE_COLOURS)}</td></tr>"
        )
    body.append("</table>")
    return body


def monitor_html(
    as_of: str,
    drifts: dict[str, Drift],
    versions: dict[str, str],
    early: list[EarlyRead] | None = None,
    early_skipped: dict[str, str] | None = None,
    estimates: dict[str, Estimate] | None = None,
    trend: dict[str, pd.DataFrame] | None = None,
    descriptions: dict[str, str] | None = None,
) -> str:
    """The month's page: drift per model, the early reads of open windows, the label-free
    expected performance, and per model its trend over the last monitored months and its
    features (code and plain description)."""
    body = [
        f"<p>Month {html.escape(as_of)}: each champion's score and features against the "
        "profile of its training run's out-of-time test window. PSI below 0.10 is stable, "
        "0.10-0.25 watch, 0.25 and above act; a PSI counts only above its threshold: the "
        "larger of its 99.9% sampling bound (small populations) and the largest move of the "
        "reference's own months from the whole (the book's usual month-to-month movement). "
        "Missing-rate changes of 5 points are watched, 15 acted on; a month with 1.5x (3x) "
        "the reference's average rows, outside the reference months' range, is watched "
        "(acted on).</p>",
        "<table><tr><th>model</th><th>version</th><th>rows (x usual month)</th><th>score PSI</th>"
        "<th>mean score (reference)</th><th>verdict</th><th>why</th></tr>",
    ]
    for name, d in drifts.items():
        why = "; ".join(d.reasons) or "nothing moved beyond the bands"
        body.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(versions.get(name, ''))}</td>"
            f"<td>{d.rows:,} ({d.volume_ratio:.1f}x)</td><td>{d.score_psi:.3f}</td>"
            f"<td>{d.mean_score:.4f} ({d.reference_mean_score:.4f})</td>"
            f"<td>{_badge(d.verdict, COLOURS)}</td><td>{html.escape(why)}</td></tr>"
        )
    body.append("</table>")
    body += _early_html(list(early or []), early_skipped or {})
    if estimates:
        body += _estimates_html(estimates)
    descriptions = descriptions or {}
    for name, d in drifts.items():
        body.append(f"<h2>{html.escape(name)} {_badge(d.verdict, COLOURS)}</h2>")
        body.append(_png(drift_plot(d)))
        cols = [c for c in COLUMNS if c != "top"]
        shown = d.features.loc[
            d.features["top"]
            | (d.features["psi_verdict"] != "stable")
            | (d.features["missing_verdict"] != "stable"),
            cols,
        ]
        shown.insert(1, "description", [descriptions.get(f, "") for f in shown["feature"]])
        body.append(_table(shown))
        history = (trend or {}).get(name)
        if history is not None and len(history):
            body.append(f"<h3>{html.escape(name)}: the last {len(history)} monitored months</h3>")
            body.append(_png(trend_plot(name, history)))
            shown = history.assign(rows=history["rows"].round().astype("Int64"))
            body.append(_table(shown.iloc[::-1], "{:.3f}"))
    return _page(f"bookpulse monitor: {as_of}", body)


def review_plot(r: Realised) -> Figure:
    """Realised rate and mean probability by decile; calibration by decile."""
    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    t = r.by_decile
    x = t["decile"].to_numpy()
    ax1.bar(x - 0.2, t["predicted"], 0.4, label="predicted (mean probability)", color="#90a4ae")
    ax1.bar(x + 0.2, t["realised_rate"], 0.4, label="realised rate", color="#1565c0")
    ax1.set_xlabel("decile of the month's score (1 = highest)")
    ax1.set_ylabel("rate")
    ax1.set_title(f"{r.model}: realised against predicted")
    ax1.legend()
    top = float(max(t["predicted"].max(), t["realised_rate"].max(), 1e-3)) * 1.05
    ax2.plot([0, top], [0, top], color="#555", linewidth=1, linestyle="--")
    ax2.scatter(t["predicted"], t["realised_rate"], color="#1565c0")
    ax2.set_xlabel("predicted")
    ax2.set_ylabel("realised")
    oe = r.metrics.get("observed_over_expected", float("nan"))
    ax2.set_title(f"calibration by decile (observed / expected {oe:.2f})")
    fig.tight_layout()
    return fig


def _metric_rows(r: Realised) -> pd.DataFrame:
    names = ["auc", "lift_top10", "ece", "ece_noise", "event_rate", "mean_probability"]
    names += ["observed_over_expected", "observed_expected_z", "oe_month_max_dev"]
    promised = {**r.promised, "observed_over_expected": 1.0, "observed_expected_z": 0.0}
    return pd.DataFrame(
        {
            "figure": names,
            "realised": [r.metrics.get(n, np.nan) for n in names],
            "promised (test window)": [promised.get(n, np.nan) for n in names],
        }
    )


def review_html(
    scored: str,
    results: dict[str, Realised],
    lists: dict[str, tuple[str, pd.DataFrame, dict]],
    skipped: dict[str, str],
    by_cause: dict | None = None,
    against: dict | None = None,
) -> str:
    body = [
        f"<p>Scored month {html.escape(scored)}: what happened in each model's outcome window, "
        "against what its validation pack promised on its test window. A model is off "
        "promise when its realised AUC is 0.05 under the promise, or when the events it saw "
        "are 3 standard errors and more than 20% (and more than any single test month "
        "strayed, oe_month_max_dev) off the count its probabilities expected. ECE is shown "
        "beside its sampling noise, for reading.</p>"
    ]
    for name, why in skipped.items():
        body.append(f"<p class='note'>{html.escape(name)}: not reviewed: {html.escape(why)}</p>")
    for name, r in results.items():
        body.append(f"<h2>{html.escape(name)} {_badge(r.verdict, REVIEW_COLOURS)}</h2>")
        why = "; ".join(r.reasons) or "ranking and calibration as promised"
        body.append(f"<p>{r.rows:,} scored, {r.events:,} with the outcome. {html.escape(why)}.</p>")
        body.append(_png(review_plot(r)))
        body.append(_table(_metric_rows(r)))
        body.append(_table(r.by_decile, "{:.4f}"))
        body += _breakdown_html(r)
    for list_name, (outcome, table, totals) in lists.items():
        body.append(f"<h2>list: {html.escape(list_name)}</h2>")
        body.append(
            f"<p>{totals['listed']:,} listed, {totals[f'listed_{outcome}']:,} {outcome} "
            f"({_pct(totals['listed_rate'])}); of the same RMs' {totals['not_listed']:,} "
            f"others, {totals[f'not_listed_{outcome}']:,} {outcome} "
            f"({_pct(totals['not_listed_rate'])}).</p>"
        )
        branches = by_branch(table, outcome)
        body.append(
            f"<p class='note'>By branch ({len(branches)} branches, {int(branches['rms'].sum())} "
            "RMs), the branches where the listed most often had the outcome against the same "
            "RMs' others first.</p>"
        )
        body.append(_rates(branches, ("listed_rate", "not_listed_rate", "difference")))
    for list_name, c in (by_cause or {}).items():
        body += _caused_html(list_name, c)
    if against:
        body.append("<h2>lists ranked by risk against lists ranked by expected value</h2>")
        body.append(
            "<p>The same month's lists at the same RM capacity, one ranked by the score, one by "
            "the uplift model's expected value, counted with the simulator's true effects over "
            "their treated rows: what each would have kept (or won), and the assets at stake "
            "with it.</p>"
        )
        rows = pd.DataFrame(
            [
                {
                    "list": name,
                    "rows": c["value_rows"],
                    "kept by risk": c["risk_kept"],
                    "kept by value": c["value_kept"],
                    "ratio": c["value_kept"] / c["risk_kept"] if c["risk_kept"] else np.nan,
                    "assets by risk (CNY M)": c["risk_assets"] / 1e6,
                    "assets by value (CNY M)": c["value_assets"] / 1e6,
                    "assets ratio": c["value_assets"] / c["risk_assets"]
                    if c["risk_assets"]
                    else np.nan,
                }
                for name, c in against.items()
            ]
        )
        body.append(_table(rows, "{:.2f}"))
    return _page(f"bookpulse review: scored {scored}", body)


def _rates(df: pd.DataFrame, rates: tuple[str, ...]) -> str:
    """A table whose `rates` columns read as percentages (a difference of rates as points)."""
    shown = df.copy()
    for c in rates:
        points = c == "difference"
        shown[c] = [
            "-" if not np.isfinite(v) else (f"{100 * v:+.1f} pts" if points else f"{v:.1%}")
            for v in shown[c].to_numpy(float)
        ]
    return _table(shown)


def _breakdown_html(r: Realised) -> list[str]:
    """A reviewed model's weak spots and fairness tables, flagged groups named first."""
    out = []
    on = ", ".join(r.listed_on)
    titles = {
        "slices": ("weak spots by group", breakdown.rule("slices")),
        "fairness": (
            "fairness by gender and age band",
            breakdown.rule("fairness", f"the share of the group on {on or 'no list'}"),
        ),
    }
    for attr, (title, rule) in titles.items():
        table = getattr(r, attr)
        if table is None:
            continue
        named = breakdown.flagged(table)
        out.append(f"<h3>{html.escape(r.model)}: {html.escape(title)}</h3>")
        out.append(f"<p class='note'>{html.escape(rule)}</p>")
        if named:
            items = "".join(f"<li>{html.escape(x)}</li>" for x in named)
            out.append(f"<p><b>Flagged:</b></p><ul>{items}</ul>")
        else:
            out.append("<p>No group flagged.</p>")
        out.append(_table(breakdown.readable(table)))
    return out


def _caused_html(list_name: str, c) -> list[str]:
    """One list's review by cause: the treated arm against the randomised hold-out."""
    t = c.totals
    verb = "kept" if c.aim == "lower" else "won"
    rows = "customers" if c.outcome != "activated" else "cards"

    def pts(x: float) -> str:
        return "-" if not np.isfinite(x) else f"{100 * x:+.1f} points"

    text = (
        f"<p>Of {int(t['listed']):,} listed and worked, {int(t['treated']):,} were in the treated "
        f"arm ({_pct(t['treated_rate'])} {html.escape(c.outcome)}) and {int(t['control']):,} "
        f"held out at random ({_pct(t['control_rate'])}). The action changed the rate by "
        f"<b>{pts(t['effect'])}</b> (95% interval {pts(t['effect_low'])} to "
        f"{pts(t['effect_high'])}): about <b>{t['rows_gained']:,.0f} {rows} {verb}</b> "
        f"({t['rows_gained_low']:,.0f} to {t['rows_gained_high']:,.0f})"
    )
    if np.isfinite(t["assets_gained"]) and c.outcome != "activated":
        text += f", CNY {t['assets_gained'] / 1e6:,.1f}M of assets {verb} (asset-weighted)"
    text += ".</p>"
    out = [f"<h2>list: {html.escape(list_name)}, by cause</h2>", text]
    if c.true_effect is not None:
        inside = t["effect_low"] <= c.true_effect <= t["effect_high"]
        out.append(
            f"<p class='note'>Simulator: the true average effect of being put in the treated "
            f"arm over these rows is {pts(c.true_effect)}, "
            f"{'inside' if inside else 'outside'} the interval.</p>"
        )
    out.append(_table(c.by_group, "{:.3f}"))
    return out


EXPERIMENT = "bookpulse-monitoring"


def reports_dir(home: Path) -> Path:
    return Path(home) / "reports"


def write_page(path: Path, text: str) -> None:
    """Replace the report whole (a reader never sees half a page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def log_report_run(home: Path, kind: str, month: str, metrics: dict, tags: dict, page: Path) -> str:
    """One MLflow run in the monitoring experiment: the figures, the verdicts, the page."""
    exp = tracking.experiment_id(
        home,
        EXPERIMENT,
        description="Every month's monitor (drift of features and scores) and review (realised "
        "outcomes of the months whose windows have closed): one run each, with its verdicts "
        "as tags and its report page as an artifact.",
    )
    with mlflow.start_run(experiment_id=exp, run_name=f"{kind} {month}") as run:
        mlflow.set_tags({"kind": kind, "month": month, **tags, **tracking.who()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifact(str(page))
    return run.info.run_id
