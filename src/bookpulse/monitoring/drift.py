"""Drift: how far a month's book has moved from what a model learned on.

At training, each model's *reference profile* is taken from its training window and logged
with its run (`validation/reference.json`): the bins and shares of its score and of every
feature it reads (numbers on the reference deciles plus a missing bin, categories by level
plus a missing bin), and its features ranked by gain. The monitor bins a month's rows the same
way and compares:

- PSI (population stability index) of the score and of each feature, with the conventional
  bands: below 0.10 stable, 0.10 to 0.25 watch, 0.25 and above act;
- the missing rate of each feature (a feed that broke shows here first);
- the share of each category level (the mix of cards by channel, customers by segment).

A small population shows some PSI from sampling alone (about (bins - 1) x (1/n + 1/m)), so a
PSI counts only when it is also above its 99% sampling bound: a month of 150 new cards is not
flagged for noise, a month of 15,000 customers is flagged for a real shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import chi2

from bookpulse.training.evaluate import psi_from_shares
from bookpulse.training.fit import ScoringModel

WATCH, ACT = 0.10, 0.25
MISSING_WATCH, MISSING_ACT = 0.05, 0.15
TOP_FEATURES = 10
BINS = 10
VERDICTS = ("stable", "watch", "act")


def psi_bound(bins: int, n_expected: int, n_actual: int, level: float = 0.99) -> float:
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


def reference_profile(
    model: ScoringModel, frame: pd.DataFrame, scores: np.ndarray, months: list[str]
) -> dict:
    """What the model learned on, for the monitor: bins and shares of the score and of every
    feature of `frame` (the training window's rows), and the features ranked by gain."""
    scores = np.asarray(scores, float)
    score_cuts = _cuts(scores)
    features = {}
    for f in model.features:
        if f in model.categories:
            levels = list(model.categories[f])
            features[f] = {
                "kind": "category",
                "levels": levels,
                "shares": _category_shares(frame[f], levels).tolist(),
            }
        else:
            values = frame[f].to_numpy(float)
            cuts = _cuts(values)
            features[f] = {
                "kind": "number",
                "cuts": cuts.tolist(),
                "shares": _numeric_shares(values, cuts).tolist(),
            }
    gain = model.gain_importance().sort_values(ascending=False)
    return {
        "rows": int(len(frame)),
        "months": list(months),
        "score": {
            "cuts": score_cuts.tolist(),
            "shares": _numeric_shares(scores, score_cuts)[:-1].tolist(),
        },
        "mean_score": float(scores.mean()) if scores.size else float("nan"),
        "features": features,
        "by_gain": [str(f) for f in gain.index],
    }


def _verdict(psi: float, bound: float) -> str:
    if psi >= ACT and psi > bound:
        return "act"
    if psi >= WATCH and psi > bound:
        return "watch"
    return "stable"


def _missing_verdict(change: float, rate: float, n: int) -> str:
    """A change in the missing rate beyond 3 standard errors and the bands."""
    se = np.sqrt(max(rate * (1 - rate), 1e-12) / max(n, 1))
    if abs(change) <= 3 * se:
        return "stable"
    if abs(change) >= MISSING_ACT:
        return "act"
    return "watch" if abs(change) >= MISSING_WATCH else "stable"


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="stable")


@dataclass
class Drift:
    """One model's drift in one month."""

    model: str
    rows: int
    reference_rows: int
    score_psi: float
    score_bound: float
    mean_score: float
    reference_mean_score: float
    features: pd.DataFrame  # one row per feature, top features first
    score_shares: tuple[list[float], list[float]] = field(default=([], []))  # reference, now
    verdict: str = "stable"
    reasons: list[str] = field(default_factory=list)


def compare(
    name: str, profile: dict, frame: pd.DataFrame, scores: np.ndarray, top: int = TOP_FEATURES
) -> Drift:
    """Bin `frame` (a month's rows) and `scores` (the model's probabilities for them) as the
    reference was, and judge each difference."""
    n, n_ref = len(frame), int(profile["rows"])
    scores = np.asarray(scores, float)
    ref_score = np.asarray(profile["score"]["shares"], float)
    now_score = _numeric_shares(scores, np.asarray(profile["score"]["cuts"]))[:-1]
    score_psi = psi_from_shares(ref_score, now_score)
    score_bound = psi_bound(len(ref_score), n_ref, n)
    ranked = profile["by_gain"]
    rows = []
    for rank, f in enumerate(ranked, 1):
        ref = profile["features"][f]
        expected = np.asarray(ref["shares"], float)
        if ref["kind"] == "category":
            actual = _category_shares(frame[f], ref["levels"])
            labels = [*ref["levels"], "(other)", "(missing)"]
            moves = actual - expected
            i = int(np.argmax(np.abs(moves[:-1]))) if len(moves) > 1 else 0
            mix = f"{labels[i]} {expected[i]:.0%} -> {actual[i]:.0%}"
        else:
            actual = _numeric_shares(frame[f].to_numpy(float), np.asarray(ref["cuts"]))
            mix = ""
        used = int(np.count_nonzero((expected > 0) | (actual > 0)))
        value = psi_from_shares(expected, actual)
        bound = psi_bound(used, n_ref, n)
        miss_ref, miss_now = float(expected[-1]), float(actual[-1])
        rows.append(
            {
                "feature": f,
                "gain_rank": rank,
                "top": rank <= top,
                "psi": value,
                "psi_bound": bound,
                "psi_verdict": _verdict(value, bound),
                "missing_reference": miss_ref,
                "missing_now": miss_now,
                "missing_verdict": _missing_verdict(miss_now - miss_ref, miss_ref, n),
                "largest_mix_change": mix,
            }
        )
    table = pd.DataFrame(rows)
    reasons = []
    score_verdict = _verdict(score_psi, score_bound)
    if score_verdict != "stable":
        reasons.append(f"score PSI {score_psi:.2f} ({score_verdict})")
    for r in table.itertuples():
        if r.top and r.psi_verdict != "stable":
            reasons.append(f"{r.feature} PSI {r.psi:.2f} ({r.psi_verdict})")
        if r.missing_verdict != "stable":
            reasons.append(
                f"{r.feature} missing {r.missing_reference:.1%} -> {r.missing_now:.1%} "
                f"({r.missing_verdict})"
            )
    verdict = worst(
        [
            score_verdict,
            *table.loc[table["top"], "psi_verdict"],
            *table["missing_verdict"],
        ]
    )
    return Drift(
        model=name,
        rows=n,
        reference_rows=n_ref,
        score_psi=score_psi,
        score_bound=score_bound,
        mean_score=float(scores.mean()) if n else float("nan"),
        reference_mean_score=float(profile["mean_score"]),
        features=table,
        score_shares=(ref_score.tolist(), now_score.tolist()),
        verdict=verdict,
        reasons=reasons,
    )
