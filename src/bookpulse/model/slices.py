"""Weak spots and fairness: how a model does in each group of customers, and which groups stand
out from the book beyond what chance allows.

A book-wide AUC or observed/expected (O/E) hides groups the model serves badly: a deposit-rate
cut that hits the effective and mid tiers twice as hard as the book shows book-wide as a
moderate miss. For each group of each dimension (tier, segment, region, age band; for fairness
gender and age band) the table gives its rows, events, event rate, mean probability, O/E with
its z, AUC with its standard error, and the share of its rows listed (on a list, or at training
in the top tenth of its month's scores, a list's usual depth) with the share of its events
listed.

A group is **flagged** when it departs materially and beyond noise:

- calibration: its O/E is off 1 by more than 20% (`OE_BAND`) and its event count is off the
  count its probabilities expect beyond chance (the normal approximation to the count's
  Poisson-binomial law once its variance passes 10; below that, the exact Poisson tail on the
  expected count, which is conservative: a tier of 10 rows expecting 0.07 events is not
  flagged for the one it had). The note sets it beside the book's own O/E: in a month when
  the whole book is off, the groups well beyond the book's level are where the miss sits;
  In the fairness tables the yardstick is the book's own level instead (its events against
  its probabilities scaled by the book's O/E): fairness asks whether one group is served
  worse than the others, and a month when every group is off alike is no disparity;
- ranking: its AUC trails the AUC its own calibrated scores expect (`early.expected_auc`:
  each row an event with probability p) by more than 0.05 (`AUC_DROP`), beyond chance on its
  Hanley-McNeil standard error (one-sided). Not the book's AUC: within a tier, whose balances
  span a narrow range, any model ranks less well than across the book (a wealth model's
  within-tier AUC is 0.6 against 0.82 book-wide), and that is no weak spot; ranking worse
  than its own scores promise is;
- listing (fairness tables): its listing rate over the rest's is outside 0.8-1.25 (the
  four-fifths rule) beyond chance (two-proportion z). The note gives the group's event rate
  against the rest's: a list that follows the risk lists a riskier group more, which a reviewer
  can accept or not; the flag only says the difference is real.

"Beyond chance" accounts for the number of groups: the p-values of every test in a table go
through Benjamini and Hochberg's step-up rule at 5% (`FAMILY_ALPHA`), which keeps the expected
share of false flags among the flags at 5%, and the chance of any flag at 5% when no group
differs (a calm month); it suits a screen for weak spots, where missing a real one costs more
than a second look at a false one. A small group needs a larger departure: size is in the noise.
Groups with fewer than `MIN_ROWS` rows or `MIN_EVENTS` events (or non-events) are shown but not
judged on ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm, poisson
from sklearn.metrics import roc_auc_score

from bookpulse.model.early import expected_auc
from bookpulse.model.realised import auc_se

FAMILY_ALPHA = 0.05  # Benjamini-Hochberg's level over one table's tests
OE_BAND = 0.20
AUC_DROP = 0.05
LISTING_BAND = (0.8, 1.25)  # the four-fifths rule, both ways
MIN_ROWS, MIN_EVENTS = 30, 5
TOP_SHARE = 0.10  # at training, "listed" = the top tenth of a month's scores
MISSING = "(missing)"

COLUMNS = [
    "dimension",
    "group",
    "rows",
    "events",
    "event_rate",
    "mean_probability",
    "observed_over_expected",
    "oe_z",
    "auc",
    "auc_se",
    "expected_auc",
    "listing_rate",
    "events_listed",
    "flag",
    "note",
]


def top_share_listed(p: np.ndarray, month: np.ndarray, share: float = TOP_SHARE) -> np.ndarray:
    """True for the rows in the top `share` of their month's scores: at training, where no list
    was drawn, a stand-in for being listed."""
    p = np.asarray(p, float)
    month = np.asarray(month)
    out = np.zeros(len(p), bool)
    for m in np.unique(month):
        sel = np.flatnonzero(month == m)
        k = int(np.ceil(share * len(sel)))
        if k:
            out[sel[np.argsort(-p[sel], kind="stable")[:k]]] = True
    return out


def _two_sided(z: float) -> float:
    return float(2 * norm.sf(abs(z))) if np.isfinite(z) else 1.0


def step_up(p_values: list[float], alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Benjamini and Hochberg's rejections: with the p-values sorted, every one up to the
    largest k whose p-value is at most k x alpha / m."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    passing = [k for k in range(1, m + 1) if p_values[order[k - 1]] <= k * alpha / m]
    out = [False] * m
    for i in order[: max(passing, default=0)]:
        out[i] = True
    return out


def count_p_value(observed: int, p: np.ndarray) -> float:
    """Two-sided p-value of `observed` events where probabilities `p` expect sum(p): normal
    (with continuity correction) once the count's variance reaches 10, else the exact Poisson
    tails on the expected count."""
    expected, var = float(p.sum()), float(np.sum(p * (1 - p)))
    if var >= 10:
        z = (abs(observed - expected) - 0.5) / np.sqrt(var)
        return float(min(1.0, 2 * norm.sf(max(z, 0.0))))
    if expected <= 0:
        return 1.0 if observed == 0 else 0.0
    tail = min(poisson.cdf(observed, expected), poisson.sf(observed - 1, expected))
    return float(min(1.0, 2 * tail))


def _group_row(dimension: str, group: str, y, p, listed, scale: float) -> dict:
    n, events = len(y), int(y.sum())
    expected = float(p.sum())
    row = {
        "dimension": dimension,
        "group": group,
        "rows": n,
        "events": events,
        "event_rate": events / n if n else np.nan,
        "mean_probability": float(p.mean()) if n else np.nan,
        "observed_over_expected": events / expected if expected > 0 else np.nan,
        "oe_z": np.nan,
        "auc": np.nan,
        "auc_se": np.nan,
        "expected_auc": np.nan,
        "listing_rate": float(listed.mean()) if listed is not None and n else np.nan,
        "events_listed": (
            float(listed[y == 1].mean()) if listed is not None and events else np.nan
        ),
    }
    q = np.minimum(p * scale, 1.0)  # what the yardstick expects of each row
    sd = float(np.sqrt(np.sum(q * (1 - q))))
    if sd > 0:
        row["oe_z"] = (events - q.sum()) / sd
    if n >= MIN_ROWS and MIN_EVENTS <= events <= n - MIN_EVENTS:
        row["auc"] = float(roc_auc_score(y, p))
        row["auc_se"] = auc_se(row["auc"], events, n - events)
        row["expected_auc"] = expected_auc(p)
    return row


def _tests(
    row: dict, p: np.ndarray, book: dict, y_rest, listed_rest, scale: float, relative: bool
) -> list[tuple[str, float, bool, str]]:
    """(kind, p-value, material, note) of each test the group gets; its events are judged
    against its probabilities times `scale` (1, or the book's O/E when `relative`)."""
    out = []
    oe, book_oe = row["observed_over_expected"], book["oe"]
    if np.isfinite(oe) and np.isfinite(scale) and scale > 0:
        rel = oe / scale
        word = "more" if rel > 1 else "fewer"
        if relative:
            note = (
                f"{word} events than the book against the same probabilities: O/E {oe:.2f} "
                f"against the book's {scale:.2f} ({rel:.2f}x)"
            )
        else:
            note = (
                f"{word} events than predicted: {row['events']:,} against {p.sum():,.1f} "
                f"expected (O/E {oe:.2f}; the book's {book_oe:.2f})"
            )
        out.append(
            (
                "calibration",
                count_p_value(row["events"], np.minimum(p * scale, 1.0)),
                abs(rel - 1) > OE_BAND,
                note,
            )
        )
    if np.isfinite(row["auc"]) and row["auc_se"] > 0 and np.isfinite(row["expected_auc"]):
        gap = row["expected_auc"] - row["auc"]
        out.append(
            (
                "ranking",
                float(norm.sf(gap / row["auc_se"])),  # one-sided: trailing its own scores
                gap > AUC_DROP,
                f"AUC {row['auc']:.3f} where its own scores expect {row['expected_auc']:.3f} "
                f"(the book's {book['auc']:.3f})",
            )
        )
    if np.isfinite(row["listing_rate"]) and listed_rest is not None and len(listed_rest):
        a, b = row["listing_rate"], float(listed_rest.mean())
        n_a, n_b = row["rows"], len(listed_rest)
        pooled = (a * n_a + b * n_b) / (n_a + n_b)
        enough = min(pooled, 1 - pooled) * n_a >= MIN_EVENTS  # the normal law holds
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b)) if enough else 0.0
        ratio = a / b if b > 0 else np.inf
        rate_rest = float(y_rest.mean()) if len(y_rest) else np.nan
        out.append(
            (
                "listing",
                _two_sided((a - b) / se) if se > 0 else 1.0,
                not (LISTING_BAND[0] <= ratio <= LISTING_BAND[1]),
                f"listed {a:.1%} against {b:.1%} of the rest ({ratio:.2f}x); event rate "
                f"{row['event_rate']:.1%} against {rate_rest:.1%}",
            )
        )
    return out


def slice_table(
    y: np.ndarray,
    p: np.ndarray,
    groups: pd.DataFrame,
    listed: np.ndarray | None = None,
    against_book: bool = False,
) -> pd.DataFrame:
    """One row per group of each column of `groups` (aligned with `y`, `p`), in COLUMNS order,
    with `flag` and `note` (see the module's rules). `listed`: which rows were listed, for the
    listing rate and its test; None leaves them out. `against_book`: judge a group's O/E
    against the book's (a disparity between groups, for fairness) rather than against its own
    probabilities (a weak spot); `oe_z` follows the same yardstick."""
    y = np.asarray(y, int)
    p = np.asarray(p, float)
    listed = None if listed is None else np.asarray(listed, bool)
    both = 0 < y.sum() < len(y)
    book = {
        "oe": float(y.sum() / p.sum()) if p.sum() > 0 else np.nan,
        "auc": float(roc_auc_score(y, p)) if both else np.nan,
    }
    rows, tests = [], []
    for dimension in groups.columns:
        values = groups[dimension].astype("object").where(groups[dimension].notna(), MISSING)
        values = values.astype(str).to_numpy()
        for group in sorted(set(values), key=_group_order(groups[dimension])):
            sel = values == group
            scale = book["oe"] if against_book else 1.0
            row = _group_row(
                dimension, group, y[sel], p[sel], None if listed is None else listed[sel], scale
            )
            rest_listed = None if listed is None else listed[~sel]
            found = _tests(row, p[sel], book, y[~sel], rest_listed, scale, against_book)
            for kind, pv, material, note in found:
                tests.append((len(rows), kind, pv, material, note))
            rows.append(row)
    rejected = step_up([t[2] for t in tests])
    notes: dict[int, list[str]] = {}
    for (i, _kind, _pv, material, note), reject in zip(tests, rejected, strict=True):
        if reject and material:
            notes.setdefault(i, []).append(note)
    for i, row in enumerate(rows):
        row["flag"] = i in notes
        row["note"] = "; ".join(notes.get(i, []))
    return pd.DataFrame(rows, columns=COLUMNS)


def _group_order(column: pd.Series):
    """Categories in their declared order (tiers low to high, age bands young to old), other
    text alphabetically, the missing last."""
    cats = list(column.cat.categories) if isinstance(column.dtype, pd.CategoricalDtype) else []
    rank = {str(c): i for i, c in enumerate(cats)}

    def key(group: str):
        return (group == MISSING, rank.get(group, len(rank)), group)

    return key


def flagged(table: pd.DataFrame) -> list[str]:
    """Readable lines naming each flagged group: 'tier effective: O/E ...'."""
    return [
        f"{r.dimension.replace('_', ' ')} {r.group}: {r.note}" for r in table.itertuples() if r.flag
    ]


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a reader wants it: rates as percentages, O/E and AUC to 2-3 places, the
    flag as a word, columns with no figure in any row left out."""
    out = pd.DataFrame(
        {
            "dimension": table["dimension"].str.replace("_", " "),
            "group": table["group"],
            "rows": table["rows"].map("{:,}".format),
            "events": table["events"].map("{:,}".format),
            "event rate": table["event_rate"].map(_pct),
            "mean probability": table["mean_probability"].map(_pct),
            "O/E": table["observed_over_expected"].map(lambda v: _num(v, "{:.2f}")),
            "O/E z": table["oe_z"].map(lambda v: _num(v, "{:+.1f}")),
            "AUC": table["auc"].map(lambda v: _num(v, "{:.3f}")),
            "AUC se": table["auc_se"].map(lambda v: _num(v, "{:.3f}")),
            "AUC expected": table["expected_auc"].map(lambda v: _num(v, "{:.3f}")),
            "listed": table["listing_rate"].map(_pct),
            "events listed": table["events_listed"].map(_pct),
            "flag": table["flag"].map(lambda f: "FLAG" if f else ""),
            "why": table["note"].fillna(""),
        }
    )
    empty = [c for c in ("listed", "events listed") if out[c].eq("-").all()]
    return out.drop(columns=empty)


def rule(kind: str, listed: str = "") -> str:
    """How a weak-spot (`slices`) or fairness table flags a group, for its readers; `listed`
    says what the listing rate counts (a list, or the top tenth at training)."""
    chance = (
        f"beyond chance (the count's own noise, and Benjamini-Hochberg at {FAMILY_ALPHA:.0%} "
        "over the table's tests for the number of groups)"
    )
    if kind == "slices":
        return (
            "AUC and observed/expected (O/E) by tier, age band, segment and region. A group is "
            f"flagged when its O/E is off 1 by more than {OE_BAND:.0%}, or its AUC is "
            f"{AUC_DROP} under what its own calibrated scores expect (not the book's: within "
            f"a narrow group any model ranks less well), {chance}."
        )
    low, high = LISTING_BAND
    return (
        f"Listed: {listed or 'the share of the group on the list'}; events listed: the share "
        f"of its events listed. A group is flagged when its O/E is off the book's O/E by more "
        f"than {OE_BAND:.0%} (a month when every group is off alike is no disparity), or its "
        f"listing rate is outside {low}-{high}x the rest's (the four-fifths rule), {chance}. "
        "A flagged listing rate is a fact for the reviewer: the note sets the group's event "
        "rate beside the rest's."
    )


def _pct(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{100 * v:.1f}%"


def _num(v: float, fmt: str) -> str:
    return "-" if not np.isfinite(v) else fmt.format(v)


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table of `readable(table)`."""
    shown = readable(table)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.to_numpy()]
    return "\n".join(lines)
