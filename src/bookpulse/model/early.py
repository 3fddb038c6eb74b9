"""Early outcome reads, and a label-free estimate of performance, for the monitor.

**Early read.** A month T scored by a model of horizon N has its outcome window (T, T+N]
open until T+N. At a later month-end M inside it, part of the window has elapsed: the
outcome's events so far are counted by the target's own label function over the shortened
window (T, M] (`partial_target`: the same kind and population rule with the horizon cut to
the time elapsed, labelled by `bookpulse.labels.label_month` on the book's months up to M, so
nothing after M is read):

* attrition: attrited at a month-end in (T, M];
* product_take_up: holding the product at a month-end in (T, M];
* first_use: first used within the days from T's month-end to M's;
* tier_up: active and in a higher tier at M. The target itself is only defined at the
  window's end (a customer can cross a boundary and fall back), so this is a partial read of
  a state, not of an event that stays counted; it is read all the same, because an upgrade
  shortfall (a rate cut draining the balances that would have crossed a boundary) shows in
  it months before the review (on the rate-cut test book: 0.69x two months after the cut).

What the calibrated probabilities expect for the time elapsed is a partial-window hazard.
A constant hazard per row (1 - (1 - p)^f) is the simple answer, but outcomes do not arrive
that way: it front-loads the riskiest rows (it is concave in p), and on the calm synthetic
book churn read 0.83-0.91x under it one month in; a tier read as a state is crossed early
(customers just under a boundary) and partly undone later, so over half of a window's
upgrades show in its first month and the calm book read 1.7-1.9x. So the timing is measured
on the book's own windows that have closed by the month read (`timing`: the last TIMING_WINDOWS
months before it whose whole window is in the book up to that month, so nothing later is
read): the share s of a window's events that the same elapsed part showed, and each row
expects q = s x p. The share is uncertain twice over: its own sampling error, and how much
one window's timing moves from month to month beyond sampling (the reference windows'
spread); both widen the read's noise band. Only when the book has no closed window yet does
the read fall back to a constant hazard inside the window, q = 1 - (1 - p)^f (f = months
elapsed / N; days elapsed / N for a horizon in days), and says so.

The events so far are then a sum of Bernoullis of mean sum(q) and standard deviation
sqrt(sum q (1 - q)), widened by the uncertainty of the measured share s. The read is
flagged "more than expected" (or "fewer") only when both the count is 3 of those standard
deviations off (OE_Z) and observed / expected is outside the band the review uses (20%, or the
largest single-month move the validation pack saw, whichever is wider): a handful of reads a
month, each at |z| >= 3, keeps false alarms rare on a calm book, while a shock that moves the
level by a third or more is seen within a month or two of it.

**Expected performance (CBPE).** Confidence-based performance estimation: if the calibrated
probabilities p of a month still hold, each row is an event with probability p, so the
expected event rate is mean(p) and the expected AUC is the AUC in which each row counts as
an event with weight p and as a non-event with weight 1 - p (`expected_auc`). It needs no
labels, so it is available the day a month is scored, and it does see a shift in *who* is in
the book (covariate drift: a population that the model ranks less well). It is blind to
concept drift: when the world changes how the features map to outcomes (a rate cut that
makes the same customers leave more often), the probabilities are wrong and the estimate,
built from them, still reads as promised. The early read is what sees that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bookpulse.book import io
from bookpulse.labels import Snapshots, label_month, labelled_months
from bookpulse.model.realised import AUC_DROP, OE_BAND, OE_Z
from bookpulse.specs import TargetSpec

AS_EXPECTED, MORE, FEWER = "as expected", "more than expected", "fewer than expected"
EARLY_VERDICTS = (AS_EXPECTED, MORE, FEWER)
AS_PROMISED, BELOW = "as promised", "below promise"
TIMING_WINDOWS = 6  # closed windows of the book the timing of events is measured on
CBPE_NOTE = (
    "blind to concept drift: computed from the calibrated probabilities alone, it assumes "
    "they still hold"
)


@dataclass(frozen=True)
class Elapsed:
    """How much of a scored month's outcome window has passed at a later month-end."""

    done: int  # months (or days) of the window elapsed
    horizon: int  # the window's length, in the same unit
    unit: str  # "months" or "days"

    @property
    def fraction(self) -> float:
        return self.done / self.horizon

    def __str__(self) -> str:
        return f"{self.done} of {self.horizon} {self.unit}"


def elapsed(target: TargetSpec, scored: str, at: str, months: Sequence[str]) -> Elapsed | None:
    """The part of `scored`'s window for `target` elapsed at month-end `at` (`months`: the
    book's months), or None when the window is not open at `at`: not started (at <= scored)
    or closed (the review's turn)."""
    scored, at = io.month_key(scored), io.month_key(at)
    if at <= scored:
        return None
    if target.horizon_days is not None:
        days = int((io.month_end(at) - io.month_end(scored)).days)
        horizon = int(target.horizon_days)
        return Elapsed(days, horizon, "days") if days < horizon else None
    months = list(months)
    done, horizon = months.index(at) - months.index(scored), int(target.horizon_months)
    return Elapsed(done, horizon, "months") if 0 < done < horizon else None


def partial_target(target: TargetSpec, part: Elapsed) -> TargetSpec:
    """The target over the window's elapsed part: the same kind, population and outcome,
    with the horizon cut to what has elapsed."""
    field = "horizon_days" if part.unit == "days" else "horizon_months"
    return target.model_copy(update={field: part.done})


def partial_labels(
    target: TargetSpec,
    scored: str,
    at: str,
    months: Sequence[str],
    snapshots: Snapshots,
    cards: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The id column and `target.label` over the elapsed part of `scored`'s window at `at`
    (open: see `elapsed`), by the target's own label function. Only the book's months up to
    `at` are passed on, so no snapshot after `at` is read; `cards` (first_use) should hold no
    first use after `at`'s month-end (the shortened horizon ends there anyway)."""
    part = elapsed(target, scored, at, months)
    if part is None:
        raise ValueError(f"the window of {scored} is not open at {at}")
    upto = list(months)[: list(months).index(io.month_key(at)) + 1]
    return label_month(partial_target(target, part), scored, upto, snapshots, cards)


@dataclass(frozen=True)
class Timing:
    """The share of a window's events that its first part showed, on the book's own closed
    windows."""

    share: float
    partial_events: int  # events by the elapsed part, over the reference windows
    events: int  # events over the whole windows
    windows: tuple[str, ...]  # the reference months
    nested: bool  # the partial events are a subset of the whole window's (not for a state)
    by_window: tuple[tuple[int, int], ...] = ()  # (partial, whole) events of each window

    def _sampling(self, a: int, b: int) -> float:
        """A share's sampling variance from a and b events: binomial when nested, else that of
        a ratio of two counts."""
        s, a, b = a / max(b, 1), max(a, 1), max(b, 1)
        return s * (1 - s) / b if self.nested else s * s * (1 / a + 1 / b)

    @property
    def usual_variance(self) -> float:
        """How much a single window's share moves beyond its own sampling noise: the variance
        of the reference windows' shares less their average sampling variance (the timing's
        month-to-month movement, e.g. seasonal upgrades), never below 0."""
        usable = [(a, b) for a, b in self.by_window if b > 0]
        if len(usable) < 2:
            return 0.0
        shares = np.array([a / b for a, b in usable])
        noise = float(np.mean([self._sampling(a, b) for a, b in usable]))
        return max(float(shares.var(ddof=1)) - noise, 0.0)

    @property
    def variance(self) -> float:
        """The uncertainty of the share for the window read: the pooled share's sampling
        variance plus the usual movement of one window's share."""
        return self._sampling(self.partial_events, self.events) + self.usual_variance


def timing(
    target: TargetSpec,
    part: Elapsed,
    at: str,
    months: Sequence[str],
    snapshots: Snapshots,
    cards: pd.DataFrame | None = None,
    windows: int = TIMING_WINDOWS,
) -> Timing | None:
    """The share of a window's events seen by `part` of it, measured on the last `windows`
    months whose whole window has closed by month-end `at` (only the book's months up to
    `at` are read), each labelled by the target's own function over the whole window and over
    its first part. None when no window has closed yet, or none had an event."""
    at = io.month_key(at)
    upto = list(months)[: list(months).index(at) + 1]
    reference = labelled_months(upto, target)[-windows:]
    short = partial_target(target, part)
    counts = []
    for month in reference:
        whole = int(label_month(target, month, upto, snapshots, cards)[target.label].sum())
        part_ = int(label_month(short, month, upto, snapshots, cards)[target.label].sum())
        counts.append((part_, whole))
    a, b = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if not reference or b == 0:
        return None
    nested = target.kind != "tier_up"
    return Timing(a / b, a, b, tuple(reference), nested, tuple(counts))


def partial_hazard(p: np.ndarray, fraction: float) -> np.ndarray:
    """The chance of the event within `fraction` of the window for a row whose chance over the
    whole window is `p`, with a constant hazard inside the window: 1 - (1 - p)^fraction."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return 1.0 - np.power(1.0 - p, float(fraction))


@dataclass
class EarlyRead:
    """One model's events so far, for one scored month, against the expected for the time
    elapsed."""

    model: str
    scored: str  # month-end T the probabilities were made at
    at: str  # month-end M read
    elapsed: Elapsed
    rows: int
    observed: int  # events in (T, M]
    expected: float  # sum of the partial hazards
    expected_full: float  # sum of p: events expected over the whole window
    sd: float  # the count's standard deviation, sqrt(sum q (1 - q))
    z: float
    observed_over_expected: float
    band: float  # O/E must leave 1 +- band (and |z| reach OE_Z) to be flagged
    verdict: str = AS_EXPECTED
    reading: str = ""  # what was counted, in words
    timing: Timing | None = None  # the measured timing (None: a constant hazard)

    @property
    def expectation(self) -> str:
        """How the expected count was made, in words."""
        if self.timing is None:
            return (
                "constant hazard within the window (the book has no closed window yet to "
                "measure when events arrive)"
            )
        t = self.timing
        return (
            f"{t.share:.0%} of a window's events by {self.elapsed}, as in the book's windows "
            f"of {t.windows[0]}..{t.windows[-1]} ({t.partial_events:,} of {t.events:,})"
        )

    @property
    def flagged(self) -> bool:
        return self.verdict != AS_EXPECTED

    @property
    def expected_low(self) -> float:
        """The lower end of the count's noise band (OE_Z standard deviations)."""
        return max(self.expected - OE_Z * self.sd, 0.0)

    @property
    def expected_high(self) -> float:
        return self.expected + OE_Z * self.sd

    @property
    def why(self) -> str:
        word = {MORE: "more", FEWER: "fewer"}.get(self.verdict, "")
        head = (
            f"{self.observed:,} events in {self.elapsed} against {self.expected:,.0f} expected "
            f"(noise band {self.expected_low:,.0f}-{self.expected_high:,.0f}; "
            f"{self.observed_over_expected:.2f}x, z {self.z:+.1f})"
        )
        return f"{head}: {word} than the scores of {self.scored} expect" if word else head


def early_read(
    model: str,
    scored: str,
    at: str,
    part: Elapsed,
    y: np.ndarray,
    p: np.ndarray,
    band: float = OE_BAND,
    reading: str = "",
    measured: Timing | None = None,
) -> EarlyRead:
    """Judge events so far `y` (0/1) against probabilities `p` over the whole window, with
    `part` of the window elapsed: each row expects its share of p by the `measured` timing
    (see `timing`), or by a constant hazard without one; `band` is the O/E band (at least the
    review's 20%)."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if measured is None:
        q = partial_hazard(p, part.fraction)
        extra = 0.0
    else:
        q = np.clip(measured.share * p, 0.0, 1.0)
        extra = float(p.sum()) ** 2 * measured.variance  # the share is measured, not known
    expected = float(q.sum())
    sd = float(np.sqrt(np.sum(q * (1.0 - q)) + extra))
    observed = int(y.sum())
    z = (observed - expected) / sd if sd > 0 else 0.0
    oe = observed / expected if expected > 0 else float("nan")
    band = max(float(band), OE_BAND)
    verdict = AS_EXPECTED
    if abs(z) >= OE_Z and np.isfinite(oe) and abs(oe - 1.0) > band:
        verdict = MORE if oe > 1 else FEWER
    return EarlyRead(
        model=model,
        scored=io.month_key(scored),
        at=io.month_key(at),
        elapsed=part,
        rows=int(len(y)),
        observed=observed,
        expected=expected,
        expected_full=float(p.sum()),
        sd=sd,
        z=float(z),
        observed_over_expected=float(oe),
        band=band,
        verdict=verdict,
        reading=reading,
        timing=measured,
    )


def reading_of(target: TargetSpec, scored: str, at: str) -> str:
    """What an early read of `target` counts, in words."""
    window = f"({io.month_key(scored)}, {io.month_key(at)}]"
    return {
        "attrition": f"attrited at a month-end in {window}",
        "tier_up": f"active and in a higher tier at {io.month_key(at)} (a state read early: "
        "a crossing can still be undone before the window ends)",
        "product_take_up": f"holding {target.product} at a month-end in {window}",
        "first_use": f"first used by the month-end of {io.month_key(at)}",
    }[target.kind]


# --- confidence-based performance estimation (CBPE) -----------------------------------------


def expected_auc(p: np.ndarray) -> float:
    """The AUC expected if each row is an event with probability `p` (its own score): every
    ordered pair of distinct rows (i, j) counts p_i (1 - p_j) towards i ranked above j, ties
    half; a row is never paired with itself. NaN when there are fewer than two rows."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    p = p[np.isfinite(p)]
    if p.size < 2:
        return float("nan")
    values, group = np.unique(p, return_inverse=True)
    pos = np.bincount(group, weights=p, minlength=len(values))
    neg = np.bincount(group, weights=1.0 - p, minlength=len(values))
    self_pairs = np.bincount(group, weights=p * (1.0 - p), minlength=len(values))
    below = np.cumsum(neg) - neg  # non-event weight of strictly lower scores
    wins = np.sum(pos * below) + 0.5 * np.sum(pos * neg - self_pairs)
    pairs = pos.sum() * neg.sum() - self_pairs.sum()
    return float(wins / pairs) if pairs > 0 else float("nan")


@dataclass
class Estimate:
    """A month's performance as its calibrated scores expect it (CBPE), beside the promise."""

    model: str
    month: str
    rows: int
    expected_auc: float
    expected_event_rate: float  # mean probability
    promised_auc: float = float("nan")  # realised on the test window (validation pack)
    promised_event_rate: float = float("nan")
    reference_expected_auc: float = float("nan")  # CBPE's AUC on the test window
    verdict: str = AS_PROMISED

    @property
    def why(self) -> str:
        return (
            f"expected AUC {self.expected_auc:.3f} (on the test window "
            f"{self.reference_expected_auc:.3f}, realised there {self.promised_auc:.3f}), "
            "expected event rate "
            f"{self.expected_event_rate:.2%} (promised {self.promised_event_rate:.2%}); {CBPE_NOTE}"
        )


def estimate(
    model: str,
    month: str,
    p: np.ndarray,
    promised: dict[str, float],
    reference_auc: float = float("nan"),
) -> Estimate:
    """CBPE of one month's probabilities `p`, beside the validation pack's `promised` figures
    ("auc", "event_rate") and the AUC the test window's own scores expected (`reference_auc`).
    The estimate is judged against the latter, like against like (a model's scores can expect
    a little less or more of themselves than the labels then showed): "below promise" when it
    is AUC_DROP under it, the population having moved towards rows the model ranks less well.
    Without a reference, against the realised promise."""
    p = np.asarray(p, dtype=float)
    auc = expected_auc(p)
    promised_auc = float(promised.get("auc", float("nan")))
    against = reference_auc if np.isfinite(reference_auc) else promised_auc
    below = bool(np.isfinite(auc) and np.isfinite(against) and against - auc > AUC_DROP)
    return Estimate(
        model=model,
        month=io.month_key(month),
        rows=int(p.size),
        expected_auc=auc,
        expected_event_rate=float(p.mean()) if p.size else float("nan"),
        promised_auc=promised_auc,
        promised_event_rate=float(promised.get("event_rate", float("nan"))),
        reference_expected_auc=float(reference_auc),
        verdict=BELOW if below else AS_PROMISED,
    )
