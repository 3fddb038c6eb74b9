"""The validation pack: metrics a model owner reads, the plots behind them, a model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

TOP_SHARES = (0.05, 0.10, 0.20)


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Largest gap between the score distributions of events and non-events."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |observed rate - mean probability| over equal-count bins."""
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, bins)
    n = len(p)
    return float(sum(len(g) / n * abs(y[g].mean() - p[g].mean()) for g in groups if len(g)))


def calibration_noise(p: np.ndarray, bins: int = 10, draws: int = 200, seed: int = 0) -> float:
    """The calibration error a perfectly calibrated model with these scores would show on
    this many rows, from sampling alone: the mean ECE over outcomes drawn from `p` itself.

    On 500 rows it is near 0.05, so an ECE there says little below that; on 50,000 rows it
    is near 0.005. Deterministic (fixed seed)."""
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    return float(
        np.mean([expected_calibration_error(rng.random(p.size) < p, p, bins) for _ in range(draws)])
    )


def calibration_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """`ece`, its sampling floor `ece_noise` and `ece_excess` = max(0, ece - ece_noise): the
    calibration error beyond what the number of rows alone explains. The promotion gate reads
    `ece_excess`, so a small population (a month of new cards) is not refused for noise."""
    ece = expected_calibration_error(y, p)
    noise = calibration_noise(p)
    return {"ece": ece, "ece_noise": noise, "ece_excess": max(0.0, ece - noise)}


def calibration_error_to_truth(truth: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE measured against the true probabilities instead of the outcomes (synthetic books
    only): the same bins, with no sampling noise from the 0/1 outcomes."""
    return expected_calibration_error(np.asarray(truth, dtype=float), p, bins)


def lift_and_capture(y: np.ndarray, p: np.ndarray, share: float) -> tuple[float, float]:
    """Event rate in the top `share` of scores over the overall rate, and the share of all
    events found there."""
    k = max(1, int(round(share * len(p))))
    top = np.argsort(-p, kind="stable")[:k]
    rate = y.mean()
    return float(y[top].mean() / rate), float(y[top].sum() / y.sum())


def gains_table(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """By decile of score (1 = highest): rows, events, event rate, mean probability, lift,
    cumulative capture."""
    order = np.argsort(-p, kind="stable")
    decile = np.empty(len(p), dtype=int)
    for i, idx in enumerate(np.array_split(order, 10)):
        decile[idx] = i + 1
    df = pd.DataFrame({"decile": decile, "y": y, "p": p})
    g = df.groupby("decile").agg(rows=("y", "size"), events=("y", "sum"), mean_p=("p", "mean"))
    g["event_rate"] = g["events"] / g["rows"]
    g["lift"] = g["event_rate"] / y.mean()
    g["cum_capture"] = g["events"].cumsum() / y.sum()
    return g.reset_index()


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `actual` against `expected`, on expected's deciles."""
    cuts = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1))[1:-1])
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])  # constant scores still get 2 bins
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    return psi_from_shares(e, a)


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI = sum (a - e) ln(a / e) over bins; an empty bin counts as a share of 1e-6."""
    e = np.clip(np.asarray(expected, float), 1e-6, None)
    a = np.clip(np.asarray(actual, float), 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class PairedAUC:
    """Two models' AUCs on the same rows, and DeLong's test of their difference (b - a)."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float  # two-sided
    low: float  # 95% interval of the difference
    high: float

    def verdict(self, margin: float) -> str:
        """better (significantly), equivalent (the interval within +-margin), not worse (the
        interval's low end above -margin: non-inferior), worse (significantly, beyond the
        margin), or inconclusive (too few rows to rule out worse by more than the margin)."""
        if self.low > 0:
            return "better"
        if self.low >= -margin:
            return "equivalent" if self.high <= margin else "not worse"
        return "worse" if self.high < 0 else "inconclusive"


def delong_paired(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> PairedAUC:
    """DeLong, DeLong and Clarke-Pearson (1988) for two correlated ROC curves, by the midrank
    algorithm of Sun and Xu (2014): O(n log n), exact AUCs (ties count a half)."""
    from scipy.stats import norm, rankdata

    y = np.asarray(y).astype(bool)
    scores = np.vstack([np.asarray(p_a, float), np.asarray(p_b, float)])
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two events and two non-events")
    tx = np.vstack([rankdata(r) for r in pos])
    ty = np.vstack([rankdata(r) for r in neg])
    tz = np.vstack([rankdata(r) for r in np.hstack([pos, neg])])
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n  # each event: the share of non-events it outranks
    v10 = 1 - (tz[:, m:] - ty) / m  # each non-event: the share of events above it
    s = np.cov(v01) / m + np.cov(v10) / n
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    diff = float(aucs[1] - aucs[0])
    se = float(np.sqrt(max(var, 0.0)))
    z = diff / se if se > 0 else 0.0
    p = float(2 * norm.sf(abs(z))) if se > 0 else 1.0
    return PairedAUC(
        float(aucs[0]), float(aucs[1]), diff, se, z, p, diff - 1.96 * se, diff + 1.96 * se
    )


@dataclass
class Evaluation:
    metrics: dict[str, float]
    gains: pd.DataFrame
    auc_by_month: dict[str, float]


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    months: pd.Series | None,
    train_scores: np.ndarray,
    truth: np.ndarray | None = None,
) -> Evaluation:
    """Every figure of the pack on the test rows. `truth`: the simulator's true probabilities
    for the same rows (synthetic books only), for the ceiling."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    metrics = {
        "auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "ks": ks_statistic(y, p),
        "brier": float(brier_score_loss(y, p)),
        **calibration_metrics(y, p),
        "event_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "psi_train_test": psi(train_scores, p),
    }
    for share in TOP_SHARES:
        lift, capture = lift_and_capture(y, p, share)
        metrics[f"lift_top{int(share * 100)}"] = lift
        metrics[f"capture_top{int(share * 100)}"] = capture
    by_month = {}
    keys = (
        pd.to_datetime(pd.Series(months)).dt.strftime("%Y-%m").to_numpy()
        if months is not None
        else np.array([], dtype=object)
    )
    oe_moves = []
    for m in sorted(set(keys)):
        sel = keys == m
        if 0 < y[sel].sum() < sel.sum():
            by_month[m] = float(roc_auc_score(y[sel], p[sel]))
        if p[sel].sum() > 0:
            oe_moves.append(abs(y[sel].sum() / p[sel].sum() - 1))
    if by_month:
        metrics["auc_month_min"] = min(by_month.values())
        metrics["auc_month_max"] = max(by_month.values())
    if oe_moves:
        # how far a single test month's events strayed from the count its probabilities
        # expected: the usual month-to-month swing the review allows before calling it off
        metrics["oe_month_max_dev"] = float(max(oe_moves))
    if truth is not None:
        ok = ~np.isnan(truth)
        metrics["ceiling_auc"] = float(roc_auc_score(y[ok], truth[ok]))
        metrics["gap_to_ceiling"] = metrics["ceiling_auc"] - float(roc_auc_score(y[ok], p[ok]))
        metrics["ece_truth"] = calibration_error_to_truth(truth[ok], p[ok])
    return Evaluation(metrics=metrics, gains=gains_table(y, p), auc_by_month=by_month)


# --- plots -----------------------------------------------------------------------------


def _figure(*grid: int, size: tuple[float, float] = (5, 5)):
    """A figure of its own (no pyplot state), and its axes."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(*grid) if grid else fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_pack(
    out: Path,
    title: str,
    y: np.ndarray,
    p: np.ndarray,
    ev: Evaluation,
    importance: pd.Series,
    contributions: pd.DataFrame,
    values: pd.DataFrame,
) -> list[Path]:
    """ROC, PR, calibration, gains/lift, feature importance and SHAP summary as PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = _figure()
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"model AUC {ev.metrics['auc']:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    if "ceiling_auc" in ev.metrics:
        ax.set_title(f"{title}: ROC (ceiling {ev.metrics['ceiling_auc']:.3f})")
    else:
        ax.set_title(f"{title}: ROC")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    paths.append(_save(fig, out / "roc.png"))

    fig, ax = _figure()
    prec, rec, _ = precision_recall_curve(y, p)
    ax.plot(rec, prec, label=f"PR-AUC {ev.metrics['pr_auc']:.3f}")
    ax.axhline(y.mean(), linestyle="--", color="grey", label=f"base rate {y.mean():.1%}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{title}: precision-recall")
    ax.legend()
    paths.append(_save(fig, out / "pr.png"))

    fig, ax = _figure()
    g = ev.gains.sort_values("mean_p")
    ax.plot(g["mean_p"], g["event_rate"], "o-", label=f"ECE {ev.metrics['ece']:.3f}")
    hi = max(g["mean_p"].max(), g["event_rate"].max()) * 1.05
    ax.plot([0, hi], [0, hi], "--", color="grey")
    ax.set_xlabel("mean predicted probability (decile)")
    ax.set_ylabel("observed event rate")
    ax.set_title(f"{title}: calibration")
    ax.legend()
    paths.append(_save(fig, out / "calibration.png"))

    fig, ax = _figure(1, 2, size=(10, 4))
    ax[0].bar(ev.gains["decile"], ev.gains["lift"])
    ax[0].set_xlabel("score decile (1 = highest)")
    ax[0].set_ylabel("lift")
    ax[0].set_title("lift by decile")
    ax[1].plot(np.arange(0, 11) * 10, [0, *ev.gains["cum_capture"]], "o-")
    ax[1].plot([0, 100], [0, 1], "--", color="grey")
    ax[1].set_xlabel("% of customers contacted (highest scores first)")
    ax[1].set_ylabel("share of events captured")
    ax[1].set_title("gains")
    paths.append(_save(fig, out / "gains_lift.png"))

    top = importance.sort_values().tail(20)
    fig, ax = _figure(size=(6, 6))
    ax.barh(top.index, top.to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title(f"{title}: feature importance")
    paths.append(_save(fig, out / "feature_importance.png"))

    order = contributions.abs().mean().sort_values().tail(15).index
    fig, ax = _figure(size=(7, 6))
    rng = np.random.default_rng(0)
    for i, name in enumerate(order):
        v = pd.to_numeric(values[name], errors="coerce") if name in values else None
        if v is None or v.isna().all():
            colour = np.full(len(contributions), 0.5)
        else:
            r = v.rank(pct=True)
            colour = r.fillna(0.5).to_numpy()
        ax.scatter(
            contributions[name],
            i + rng.uniform(-0.3, 0.3, len(contributions)),
            c=colour,
            cmap="coolwarm",
            s=4,
            alpha=0.6,
        )
    ax.set_yticks(range(len(order)), order)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("SHAP value (contribution to log-odds); colour: feature value, low to high")
    ax.set_title(f"{title}: SHAP summary (sample)")
    paths.append(_save(fig, out / "shap_summary.png"))
    return paths


def model_card(
    spec_name: str,
    description: str,
    target: dict,
    windows: dict[str, list[str]],
    rows: dict[str, int],
    rates: dict[str, float],
    metrics: dict[str, float],
    gates: dict,
    book: str,
    slices: dict[str, pd.DataFrame] | None = None,
) -> str:
    """A markdown model card: what it predicts, for whom, on what data, how well, limits."""

    def month_range(ms: list[str]) -> str:
        return f"{ms[0]} .. {ms[-1]} ({len(ms)} months)"

    lines = [
        f"# Model card: {spec_name}",
        "",
        description.strip(),
        "",
        "## Target",
        f"- event: {target['event']}",
        f"- population: {target['population']}",
        f"- early leavers: {target['leavers']}",
        "",
        "## Data",
        f"- book: {book}",
    ]
    for part in ("train", "valid", "calibration", "test"):
        lines.append(
            f"- {part}: {month_range(windows[part])}, {rows[part]:,} rows, "
            f"event rate {rates[part]:.2%}"
        )
    gap = pd.period_range(windows["calibration"][-1], windows["test"][0], freq="M")[1:-1]
    if len(gap):
        lines.append(
            f"- embargo: {month_range([str(m) for m in gap])} left out, so no calibration "
            "outcome falls inside the test's outcome period"
        )
    lines += ["", "## Out-of-time test metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += _breakdown_sections(slices or {})
    lines += [
        "",
        "## Gates",
        f"- minimum AUC {gates['min_auc']}, calibration error at most "
        f"{gates['max_calibration_error']} above its sampling noise (ece_noise); against "
        "the champion, on the same rows, DeLong's paired test: promoted when the 95% interval "
        f"of the AUC difference rules out trailing by more than {gates['max_auc_drop']} "
        "(better, equivalent or not worse), refused when it cannot (worse, inconclusive)",
        "",
        "## Limits",
        "- Trained out of time on the months above; performance drifts as the book changes "
        "(watch PSI and the monthly AUCs).",
        "- Probabilities are calibrated on the calibration window; campaigns that change "
        "behaviour (the lists themselves) change the base rate.",
        "- Scores rank customers within a month-end snapshot; they are not causal effects of "
        "any action.",
    ]
    return "\n".join(lines) + "\n"


def _breakdown_sections(slices: dict[str, pd.DataFrame]) -> list[str]:
    """The card's weak-spot and fairness sections, from `bookpulse.model.slices` tables."""
    from bookpulse.model import slices as breakdown

    titles = {
        "slices": ("Weak spots (test window, by group)", breakdown.rule("slices")),
        "fairness": (
            "Fairness (test window, by gender and age band)",
            breakdown.rule(
                "fairness", "the share of the group in the top tenth of its month's scores"
            ),
        ),
    }
    lines = []
    for name, (title, rule) in titles.items():
        if name not in slices:
            continue
        table = slices[name]
        flagged = breakdown.flagged(table)
        lines += ["", f"## {title}", "", rule, "", breakdown.markdown(table), ""]
        lines += [f"- flagged: {f}" for f in flagged] or ["- no group flagged"]
    return lines
