"""Review: what actually happened to a scored month once its outcome window has closed.

For each model: the realised outcome rate by decile of the month's score, realised AUC, lift
of the top decile and calibration, set against what the model's validation pack promised on
its test window. A model is *off promise* when its AUC is 0.05 (and 3 standard errors) under
the promise, when the
events it saw are off the count its probabilities expected by 3 standard errors and by more
than 20% and than any single test month strayed (calibration in the large: a shock moves the
level first; seasonality moves it a little every month). ECE is shown beside its sampling
floor for reading, not judged: on one month of new cards (a few hundred) it swings by more than
any gate from chance alone. For each
action list: of the customers (cards) listed per branch and RM, how many churned, upgraded or
activated, against those of the same RM who were not listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bookpulse.model.evaluate import calibration_metrics, lift_and_capture

AUC_DROP = 0.05  # realised AUC this far under the promise: the ranking has weakened
OE_BAND = 0.20  # observed / expected events outside 1 +- this ...
OE_Z = 3.0  # ... and this many standard errors from the expected count: the level is off


@dataclass
class Realised:
    """One model's realised performance on one scored month."""

    model: str
    rows: int
    events: int
    metrics: dict[str, float]  # realised
    promised: dict[str, float]  # the validation pack's, on the test window
    by_decile: pd.DataFrame
    verdict: str = "as promised"
    reasons: list[str] = field(default_factory=list)
    slices: pd.DataFrame | None = None  # weak spots (`bookpulse.model.slices`)
    fairness: pd.DataFrame | None = None  # by gender and age band, with the list's rate
    listed_on: list[str] = field(default_factory=list)  # the lists the fairness table reads


def auc_se(auc: float, positives: int, negatives: int) -> float:
    """Standard error of an AUC on this many events and non-events (Hanley and McNeil)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / max(positives * negatives, 1)
    return float(np.sqrt(max(var, 0.0)))


def realised(
    model: str,
    y: np.ndarray,
    p: np.ndarray,
    decile: np.ndarray,
    promised: dict[str, float],
) -> Realised:
    """Judge outcomes `y` against the month's probabilities `p` (book deciles `decile`,
    1 = highest) and the promise of the validation pack."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    frame = pd.DataFrame({"decile": np.asarray(decile, dtype=int), "y": y, "p": p})
    table = (
        frame.groupby("decile")
        .agg(rows=("y", "size"), events=("y", "sum"), predicted=("p", "mean"))
        .reset_index()
    )
    table["realised_rate"] = table["events"] / table["rows"]
    base = y.mean() if len(y) else float("nan")
    table["lift"] = table["realised_rate"] / base if base else np.nan
    metrics = {
        "event_rate": float(base),
        "mean_probability": float(p.mean()) if len(p) else float("nan"),
        "observed_over_expected": float(y.sum() / p.sum()) if p.sum() else float("nan"),
    }
    both = 0 < y.sum() < len(y)
    if both:
        metrics["auc"] = float(roc_auc_score(y, p))
        metrics["lift_top10"] = lift_and_capture(y, p, 0.10)[0]
    if len(y):
        metrics.update(calibration_metrics(y, p))
    reasons = []
    if both and "auc" in promised:
        # the drop must pass the band and 3 standard errors of this month's AUC (Hanley and
        # McNeil): on a month of 150 new cards the AUC alone moves by 0.04 from chance
        metrics["auc_se"] = auc_se(metrics["auc"], int(y.sum()), int(len(y) - y.sum()))
        if promised["auc"] - metrics["auc"] > max(AUC_DROP, 3 * metrics["auc_se"]):
            reasons.append(f"AUC {metrics['auc']:.3f} vs {promised['auc']:.3f} promised")
    oe = metrics["observed_over_expected"]
    expected = p.sum()
    sd = float(np.sqrt(np.sum(p * (1 - p)))) or float("inf")
    metrics["observed_expected_z"] = float((y.sum() - expected) / sd)
    band = max(OE_BAND, promised.get("oe_month_max_dev", 0.0))
    if abs(metrics["observed_expected_z"]) >= OE_Z and abs(oe - 1) > band:
        word = "more" if oe > 1 else "fewer"
        reasons.append(
            f"miscalibrated: {y.sum():,} events against {expected:,.0f} expected ({oe:.2f}x, "
            f"{word} than predicted)"
        )
    return Realised(
        model=model,
        rows=int(len(y)),
        events=int(y.sum()),
        metrics=metrics,
        promised=promised,
        by_decile=table,
        verdict="off promise" if reasons else "as promised",
        reasons=reasons,
    )


def list_outcomes(population: pd.DataFrame, listed: pd.Series, outcome: str) -> pd.DataFrame:
    """Per branch and RM: the listed rows and how many had the outcome, against the RM's rows
    that were not listed. `population`: id, branch_id, rm_id, y (every scored row with a
    label); `listed`: the ids on the list."""
    df = population.assign(listed=population["id"].isin(set(listed)))
    g = df.groupby(["branch_id", "rm_id", "listed"])["y"].agg(["size", "sum"]).unstack("listed")
    g = g.reindex(columns=pd.MultiIndex.from_product([["size", "sum"], [True, False]]))
    g = g.fillna(0).astype(int)
    out = pd.DataFrame(
        {
            "listed": g[("size", True)],
            f"listed_{outcome}": g[("sum", True)],
            "not_listed": g[("size", False)],
            f"not_listed_{outcome}": g[("sum", False)],
        }
    ).reset_index()
    out = out.loc[out["listed"] > 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["listed_rate"] = out[f"listed_{outcome}"] / out["listed"]
        out["not_listed_rate"] = out[f"not_listed_{outcome}"] / out["not_listed"]
    return out.sort_values(["branch_id", "rm_id"]).reset_index(drop=True)


def by_branch(table: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """`list_outcomes`' rows added up per branch, with the RMs counted, sorted by how much
    more often the listed had the outcome than the same RMs' others (where the list told the
    most first; ties by branch)."""
    sums = (
        table.groupby("branch_id")
        .agg(
            rms=("rm_id", "nunique"),
            listed=("listed", "sum"),
            hit=(f"listed_{outcome}", "sum"),
            not_listed=("not_listed", "sum"),
            miss=(f"not_listed_{outcome}", "sum"),
        )
        .reset_index()
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        sums["listed_rate"] = sums["hit"] / sums["listed"]
        sums["not_listed_rate"] = sums["miss"] / sums["not_listed"]
    sums["difference"] = sums["listed_rate"] - sums["not_listed_rate"]
    sums = sums.rename(columns={"hit": f"listed_{outcome}", "miss": f"not_listed_{outcome}"})
    order = sums.sort_values(
        ["difference", "branch_id"], ascending=[False, True], na_position="last"
    )
    return order.reset_index(drop=True)


def list_totals(table: pd.DataFrame, outcome: str) -> dict[str, float]:
    """The whole list against every unlisted row of the same RMs."""
    listed, not_listed = int(table["listed"].sum()), int(table["not_listed"].sum())
    hit, miss = int(table[f"listed_{outcome}"].sum()), int(table[f"not_listed_{outcome}"].sum())
    return {
        "listed": listed,
        f"listed_{outcome}": hit,
        "listed_rate": hit / listed if listed else float("nan"),
        "not_listed": not_listed,
        f"not_listed_{outcome}": miss,
        "not_listed_rate": miss / not_listed if not_listed else float("nan"),
    }


# --- review by cause: the treated arm of a worked list against its randomised hold-out ------

Z95 = 1.959963984540054


@dataclass
class Caused:
    """What one list's action caused in a scored month, measured against its hold-out."""

    list: str
    outcome: str  # the outcome word (churned, upgraded, activated)
    aim: str  # "lower" or "raise"
    totals: dict[str, float]
    by_group: pd.DataFrame  # per branch and per RM
    true_effect: float | None = None  # the simulator's average reach x effect over the listed


def _arms(df: pd.DataFrame) -> dict[str, float]:
    """Treated and control counts and rates of `y`, their difference (treated - control) with
    its 95% interval (normal approximation: Wald, the two arms independent)."""
    t, c = df.loc[df["treated"], "y"], df.loc[~df["treated"], "y"]
    nt, nc = len(t), len(c)
    rt = t.mean() if nt else np.nan
    rc = c.mean() if nc else np.nan
    se = np.sqrt(rt * (1 - rt) / max(nt, 1) + rc * (1 - rc) / max(nc, 1))
    diff = rt - rc
    return {
        "treated": nt,
        "treated_rate": rt,
        "control": nc,
        "control_rate": rc,
        "effect": diff,
        "effect_low": diff - Z95 * se,
        "effect_high": diff + Z95 * se,
    }


def caused(
    list_name: str, outcome: str, aim: str, rows: pd.DataFrame, true_effect: float | None = None
) -> Caused:
    """The review by cause of one list. `rows`: one per listed customer (card) with `treated`
    (bool), `y` (the outcome, 0/1), `branch_id`, `rm_id` and `assets` (assets here at the
    list's month-end). The effect is the treated arm's rate minus the hold-out's (intention to
    treat); what it kept or won is the effect in the aimed direction times the treated rows (and
    times their assets for an asset-weighted rate)."""
    sign = -1.0 if aim == "lower" else 1.0
    totals = _arms(rows)
    treated = rows.loc[rows["treated"]]
    control = rows.loc[~rows["treated"]]
    weighted = np.nan
    if len(treated) and len(control) and control["assets"].sum() > 0:
        wt = (treated["y"] * treated["assets"]).sum() / max(treated["assets"].sum(), 1e-9)
        wc = (control["y"] * control["assets"]).sum() / control["assets"].sum()
        weighted = wt - wc
    totals |= {
        "listed": float(len(rows)),
        "rows_gained": sign * totals["effect"] * totals["treated"],
        "rows_gained_low": sign
        * (totals["effect_low" if sign > 0 else "effect_high"])
        * totals["treated"],
        "rows_gained_high": sign
        * (totals["effect_high" if sign > 0 else "effect_low"])
        * totals["treated"],
        "assets_gained": sign * weighted * float(treated["assets"].sum()),
    }
    groups = []
    for level in ("branch_id", "rm_id"):
        for key, part in rows.groupby(level, sort=True):
            groups.append({"level": level.removesuffix("_id"), "id": int(key), **_arms(part)})
    return Caused(list_name, outcome, aim, totals, pd.DataFrame(groups), true_effect)
