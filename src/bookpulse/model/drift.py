"""Drift: how far a month's book has moved from what a model learned on.

At training, each model's *reference profile* is taken from its out-of-time test window (the
latest rows the model was judged on, the population its promised figures describe; the
earlier fitting months sit closer to the book's start, where long-window features are still
missing) and logged with its run (`validation/reference.json`): the bins and shares of its
score and of every feature it reads (numbers on the reference deciles plus a missing bin,
categories by level plus a missing bin), and its features ranked by gain. The monitor bins a
month's rows the same way and compares:

- PSI (population stability index) of the score and of each feature's present values, with
  the conventional bands: below 0.10 stable, 0.10 to 0.25 watch, 0.25 and above act;
- the missing rate of each feature (a feed that broke shows here first);
- the share of each category level (the mix of cards by channel, customers by segment);
- the number of rows against the reference's average month (a bulk issuance campaign shows
  as a surge of new cards).

A PSI counts only above a threshold: the larger of its 99.9% sampling bound (a small population
shows some PSI from sampling alone, about (bins - 1) x (1/n + 1/m)) and the largest move of the
reference's own months from the whole (the book's usual month-to-month movement, e.g. lumpy
bulk card enrolments). So a month of 150 new cards, or a month with a usual bulk batch, is not
flagged; a real shift in a month of 15,000 customers is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import chi2, norm

from bookpulse.model.early import expected_auc
from bookpulse.model.evaluate import psi_from_shares
from bookpulse.model.fit import ScoringModel

WATCH, ACT = 0.10, 0.25
MISSING_WATCH, MISSING_ACT = 0.05, 0.15
VOLUME_WATCH, VOLUME_ACT = 1.5, 3.0
LEVEL = 0.999  # a month checks some 30 quantities per model: keep chance alarms rare
TOP_FEATURES = 10
BINS = 10
VERDICTS = ("stable", "watch", "act")


def psi_bound(bins: int, n_expected: int, n_actual: int, level: float = LEVEL) -> float:
    """The PSI two samples of one distribution stay under with probability `level`:
    PSI is about chi-square with bins - 1 degrees of freedom times (1/n + 1/m)."""
    if bins < 2 or n_expected == 0 or n_actual == 0:
        return float("inf")
    return float(chi2.ppf(level, bins - 1) * (1 / n_expected + 1 / n_actual))


def _cuts(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Interior cut points at the deciles of the present values (ties merged)."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return np.array([])
    return np.unique(np.quantile(present, np.linspace(0, 1, bins + 1))[1:-1])


def _numeric_shares(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Shares of rows in each bin (right-closed at the cuts), then the missing share last."""
    values = np.asarray(values, float)
    missing = np.isnan(values)
    idx = np.searchsorted(cuts, values[~missing], side="left")
    counts = np.bincount(idx, minlength=len(cuts) + 1).astype(float)
    return np.append(counts, missing.sum()) / max(len(values), 1)


def _category_shares(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Shares of each known level, then unknown levels, then missing."""
    text = values.astype(object)
    missing = text.isna().to_numpy()
    known = pd.Series(text[~missing].astype(str)).value_counts()
    counts = [float(known.get(lv, 0)) for lv in levels]
    other = float(len(text) - missing.sum() - sum(counts))
    return np.array([*counts, other, float(missing.sum())]) / max(len(text), 1)


def _shares(entry: dict, values) -> np.ndarray:
    """Bin `values` as the reference entry was binned."""
    if entry["kind"] == "category":
        return _category_shares(pd.Series(values), entry["levels"])
    return _numeric_shares(np.asarray(values, float), np.asarray(entry["cuts"]))


def _psi(expected: np.ndarray, actual: np.ndarray, n_ref: int) -> float:
    """PSI of the present values (the missing bin is judged by the missing-rate rule), each
    side renormalised; a bin empty in the reference counts as half a row of it, not as 1e-6
    (an unseen level at 2% would otherwise read as a large shift)."""
    e, a = np.asarray(expected[:-1], float), np.asarray(actual[:-1], float)
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    floor = 0.5 / max(n_ref * e.sum(), 1)
    return psi_from_shares(np.clip(e / e.sum(), floor, None), np.clip(a / a.sum(), floor, None))


def _entry(values, levels: list[str] | None, month: np.ndarray) -> dict:
    """One quantity's reference: its bins and shares, and how far the reference's own months
    moved from the whole (the book's usual month-to-month movement: lumpy bulk issuance,
    seasonality), which a month must exceed to count as drift."""
    if levels is not None:
        entry = {"kind": "category", "levels": list(levels)}
    else:
        entry = {"kind": "number", "cuts": _cuts(np.asarray(values, float)).tolist()}
    overall = _shares(entry, values)
    usual_psi, usual_missing = 0.0, 0.0
    for m in np.unique(month):
        part = _shares(entry, values[month == m])
        usual_psi = max(usual_psi, _psi(overall, part, len(values)))
        usual_missing = max(usual_missing, abs(float(part[-1] - overall[-1])))
    return {
        **entry,
        "shares": overall.tolist(),
        "usual_psi": usual_psi,
        "usual_missing_change": usual_missing,
    }


def reference_profile(
    model: ScoringModel, frame: pd.DataFrame, scores: np.ndarray, month: np.ndarray
) -> dict:
    """What the model was validated on, for the monitor: bins and shares of the score and of
        every feature of `frame` (the test window's rows; `month` names each row's month), their
        usual month-to-month movement, the rows per month, the features ranked by gain, and the AUC
    the scores expect of themselves (CBPE: `bookpulse.model.early.expected_auc`)."""
    scores = np.asarray(scores, float)
    month = np.asarray(month)
    features = {}
    for f in model.features:
        levels = model.categories.get(f)
        values = frame[f].to_numpy(object if levels is not None else float)
        features[f] = _entry(values, levels, month)
    gain = model.gain_importance().sort_values(ascending=False)
    months, counts = np.unique(month, return_counts=True)
    return {
        "rows": int(len(frame)),
        "months": [str(m) for m in months],
        "rows_by_month": [int(c) for c in counts],
        "score": _entry(scores, None, month),
        "mean_score": float(scores.mean()) if scores.size else float("nan"),
        "expected_auc": expected_auc(scores),  # CBPE's AUC on the test window, for the monitor
        "features": features,
        "by_gain": [str(f) for f in gain.index],
    }


def _verdict(psi: float, threshold: float) -> str:
    if psi >= ACT and psi > threshold:
        return "act"
    if psi >= WATCH and psi > threshold:
        return "watch"
    return "stable"


def _missing_verdict(change: float, rate: float, n: int, usual: float) -> str:
    """A change in the missing rate beyond its sampling bound (at LEVEL), the usual movement
    and the bands."""
    se = np.sqrt(max(rate * (1 - rate), 1e-12) / max(n, 1))
    if abs(change) <= max(norm.ppf(0.5 + LEVEL / 2) * se, usual):
        return "stable"
    if abs(change) >= MISSING_ACT:
        return "act"
    return "watch" if abs(change) >= MISSING_WATCH else "stable"


def _volume_verdict(ratio: float, usual: tuple[float, float]) -> str:
    """This month's rows against the reference's average month: unusual when outside the
    reference months' own range; 1.5x (or 2/3) watch, 3x (or 1/3) act."""
    low, high = usual
    if low <= ratio <= high:
        return "stable"
    if ratio >= VOLUME_ACT or ratio <= 1 / VOLUME_ACT:
        return "act"
    if ratio >= VOLUME_WATCH or ratio <= 1 / VOLUME_WATCH:
        return "watch"
    return "stable"


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="stable")


TOP_DRIFTING = 3  # features named per model and month in the monitor's trend


def top_drifting(features: pd.DataFrame, n: int = TOP_DRIFTING) -> str:
    """The `n` features that moved most (by PSI) in a month's feature table, as
    "feature PSI (verdict)" joined by "; " (what the trend view keeps per month)."""
    moved = features.loc[features["psi"] > 0].sort_values("psi", ascending=False).head(n)
    return "; ".join(f"{r.feature} {r.psi:.3f} ({r.psi_verdict})" for r in moved.itertuples())


@dataclass
class Drift:
    """One model's drift in one month."""

    model: str
    rows: int
    reference_rows: int
    volume_ratio: float  # rows this month over the reference's average month
    volume_verdict: str
    score_psi: float
    score_threshold: float  # the larger of the sampling bound and the usual movement
    mean_score: float
    reference_mean_score: float
    features: pd.DataFrame  # one row per feature, by gain rank
    reference_expected_auc: float = float("nan")  # CBPE's AUC on the test window (if logged)
    score_shares: tuple[list[float], list[float]] = field(default=([], []))  # reference, now
    verdict: str = "stable"
    reasons: list[str] = field(default_factory=list)


def _judge(entry: dict, values, n: int, n_ref: int) -> dict:
    """PSI, its threshold and verdict, and the missing rate's move, for one quantity."""
    expected = np.asarray(entry["shares"], float)
    actual = _shares(entry, values)
    present = (expected[:-1] > 0) | (actual[:-1] > 0)
    n_present = round(n * (1 - actual[-1]))
    n_ref_present = round(n_ref * (1 - expected[-1]))
    value = _psi(expected, actual, n_ref)
    bound = psi_bound(int(present.sum()), n_ref_present, n_present)
    threshold = max(bound, float(entry["usual_psi"]))
    miss_ref, miss_now = float(expected[-1]), float(actual[-1])
    mix = ""
    if entry["kind"] == "category":
        labels = [*entry["levels"], "(other)", "(missing)"]
        i = int(np.argmax(np.abs(actual - expected)[:-1]))
        mix = f"{labels[i]} {expected[i]:.0%} -> {actual[i]:.0%}"
    return {
        "psi": value,
        "psi_threshold": threshold,
        "psi_verdict": _verdict(value, threshold),
        "missing_reference": miss_ref,
        "missing_now": miss_now,
        "missing_verdict": _missing_verdict(
            miss_now - miss_ref, miss_ref, n, float(entry["usual_missing_change"])
        ),
        "largest_mix_change": mix,
        "shares": (expected.tolist(), actual.tolist()),
    }


COLUMNS = [
    "feature",
    "gain_rank",
    "top",
    "psi",
    "psi_threshold",
    "psi_verdict",
    "missing_reference",
    "missing_now",
    "missing_verdict",
    "largest_mix_change",
]


def compare(
    name: str,
    profile: dict,
    frame: pd.DataFrame,
    scores: np.ndarray,
    top: int = TOP_FEATURES,
    skip: frozenset[str] = frozenset(),
) -> Drift:
    """Bin `frame` (a month's rows) and `scores` (the model's probabilities for them) as the
    reference was, and judge each difference: a PSI counts when it passes its band and both
    its sampling bound and the reference months' usual movement. Features in `skip` (those
    that change by design each month, like the calendar month) are left out; `top` counts
    the others."""
    n, n_ref = len(frame), int(profile["rows"])
    per_month = np.asarray(profile["rows_by_month"], float)
    ratio = n / per_month.mean()
    usual = (float(per_month.min() / per_month.mean()), float(per_month.max() / per_month.mean()))
    volume = _volume_verdict(ratio, usual)
    score = _judge(profile["score"], np.asarray(scores, float), n, n_ref)
    ranked = [f for f in profile["by_gain"] if f not in skip]
    rows = []
    for rank, f in enumerate(ranked, 1):
        entry = profile["features"][f]
        values = frame[f].to_numpy(object if entry["kind"] == "category" else float)
        judged = _judge(entry, values, n, n_ref)
        del judged["shares"]
        rows.append({"feature": f, "gain_rank": rank, "top": rank <= top, **judged})
    table = pd.DataFrame(rows, columns=COLUMNS)
    reasons = []
    if volume != "stable":
        reasons.append(
            f"{n:,} rows, {ratio:.1f}x the reference's average month (usual "
            f"{usual[0]:.1f}x-{usual[1]:.1f}x) ({volume})"
        )
    if score["psi_verdict"] != "stable":
        reasons.append(f"score PSI {score['psi']:.2f} ({score['psi_verdict']})")
    for r in table.itertuples():
        if r.top and r.psi_verdict != "stable":
            mix = f", {r.largest_mix_change}" if r.largest_mix_change else ""
            reasons.append(f"{r.feature} PSI {r.psi:.2f}{mix} ({r.psi_verdict})")
        if r.missing_verdict != "stable":
            reasons.append(
                f"{r.feature} missing {r.missing_reference:.1%} -> {r.missing_now:.1%} "
                f"({r.missing_verdict})"
            )
    verdict = worst(
        [
            volume,
            score["psi_verdict"],
            *table.loc[table["top"], "psi_verdict"],
            *table["missing_verdict"],
        ]
    )
    return Drift(
        model=name,
        rows=n,
        reference_rows=n_ref,
        volume_ratio=ratio,
        volume_verdict=volume,
        score_psi=score["psi"],
        score_threshold=score["psi_threshold"],
        mean_score=float(np.mean(scores)) if n else float("nan"),
        reference_mean_score=float(profile["mean_score"]),
        features=table,
        reference_expected_auc=float(profile.get("expected_auc", float("nan"))),
        score_shares=(score["shares"][0][:-1], score["shares"][1][:-1]),
        verdict=verdict,
        reasons=reasons,
    )
