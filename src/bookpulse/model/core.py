"""The scoring core: a feature frame in, score records out. Batch, Spark and the API call it.

A score record (DESIGN.md's contract): the id, as_of, the calibrated probability, the
percentile and decile in the book (added once every row of the month is scored:
`rank_in_book`), the top-3 reasons (feature, direction, contribution, sentence) and the
model's name, version and run id.

Contributions are path attributions (`scoring.explain`) in the calibrated log-odds: Platt
scaling is linear in the booster's log-odds, so each credit is scaled by its slope, and the
bias plus the contributions is exactly the logit of the probability.

Which reasons (`pick_reasons`): greedy by |credit|, each from a feature group (the
features/<group>.yaml file the feature is declared in) the earlier reasons do not come from,
as long as a feature of another group has a non-zero credit; only then the next largest
|credit| whatever its group. Features of one group mostly say one thing in several ways
("assets must grow 14% to reach the next tier" / "12% short of the next tier's threshold"),
so the second and third reasons now add what the first does not. A model whose features all
sit in one group (card activation: features/cards.yaml) keeps the plain top 3.

The lead is always the largest |credit|, with no tie-breaking for variety. A model-risk
reviewer reads reason 1 as "what moved this score most"; any rule that leads with a weaker
credit to vary a list would make that false for the rows it touches, and the measured room
is small: on the demo book the lead is within 10% of the best other group's credit on
0.7-4.5% of a list's rows (benchmarks/reasons.py), while 79% of the retention list leads
with the fall in transactions because the model does weigh it most for those customers. A
list dominated by one lead feature is a fact about the model to report (the benchmark prints
it), not to hide; variety comes from how the lead is worded (graded by what its value means,
below: the retention list's most common lead sentence fell from 79% of its rows to 35%) and
from reasons 2 and 3 (from three groups on every row of the customer models' lists, against
1-13% before). Reasons 2 and 3 keep their own order of selection: the third can have a
larger |credit| than the second only when it falls back to a group already used.

Phrases (`reason_phrase`): a feature's `reason` names its figure ("assets must grow 14% to
reach the next tier"); its `reason_bands` (features/*.yaml) say instead what the figure
means where words read better than the number, so different situations read differently:
"assets within 5% of the next tier (must grow 3.2%)", "assets must more than double to reach
the next tier (grow 350%)", "transactions last month under a quarter of the 12-month average
(-80%)". A band holds the figures from the previous band's bound (inclusive) to its own
(exclusive), as the tiers do (`domain.tier_index`); every figure falls in exactly one band.
The same bands keep absurd figures out ("assets must grow more than tenfold to reach the
next tier", "assets here are close to nothing (under CNY 100)"): the reason is kept, as the
credit is real, and only its number was not believable. The API (`reason_phrase`, one value)
and the batch (`_numbers_phrased`, the band of every distinct value at once by
`np.searchsorted`) phrase alike, word for word.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.special import expit

from bookpulse.model.explain import PathAttribution, top_k_grouped
from bookpulse.model.fit import ScoringModel, level_codes, numeric_matrix, records_matrix
from bookpulse.specs import FeatureSpec, ModelSpec

REASONS = 3


@dataclass(frozen=True)
class Champion:
    """A registered model ready to score: its spec, the fitted model, and where it came from."""

    spec: ModelSpec
    model: ScoringModel
    version: str
    run_id: str
    uplifts: tuple = ()  # UpliftChampions of actions on this model's outcome (model.uplift)
    # id(catalog) -> (the catalog, its group code per model feature): `reason_groups`
    _groups: dict = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def paths(self) -> PathAttribution:
        return PathAttribution.from_booster(self.model.booster)

    @cached_property
    def level_codes(self) -> dict[str, dict[str, int]]:
        """For each categorical feature, level -> its code in the model's input."""
        return level_codes(self.model.categories)

    @property
    def name(self) -> str:
        return self.spec.name

    def reason_groups(self, catalog: dict[str, FeatureSpec]) -> np.ndarray:
        """`feature_groups` of the model's features in `catalog`, worked out once per catalog
        (the API asks on every call; a catalog is not changed once built). The cache keeps
        the catalog itself, so its id cannot be reused by another while cached."""
        hit = self._groups.get(id(catalog))
        if hit is None or hit[0] is not catalog:
            if len(self._groups) >= 8:  # batch jobs may pass a fresh catalog per partition
                self._groups.clear()
            hit = (catalog, feature_groups(self.model.features, catalog))
            self._groups[id(catalog)] = hit
        return hit[1]


def model_versions(champions: dict[str, Champion]) -> dict[str, str]:
    """Registered model -> version of the champions and their uplift models: what scored a
    month (kept with it in the online store, so the API answers with the same)."""
    out = {c.spec.registered_name: c.version for c in champions.values()}
    for c in champions.values():
        out.update({u.spec.registered_name: u.version for u in c.uplifts})
    return out


def model_matrix(model: ScoringModel, frame: pd.DataFrame) -> np.ndarray:
    """The booster's input as float64 (`numeric_matrix` on the model's features and levels)."""
    return numeric_matrix(frame, model.features, model.categories)


def score_frame(
    champion: Champion, frame: pd.DataFrame, catalog: dict[str, FeatureSpec]
) -> pd.DataFrame:
    """Probability, top reasons and model identity for every row of `frame` (a feature frame
    keyed by id and as_of). Percentile and decile come later, from the whole book."""
    key = champion.spec.id_column
    model = champion.model
    probability, credit, top = explain(champion, model_matrix(model, frame), catalog)
    out = pd.DataFrame(
        {
            key: frame[key].to_numpy(),
            "as_of": frame["as_of"].to_numpy(),
            "probability": probability,
        }
    )
    reasons = reason_columns(champion.spec, catalog, frame, credit, top, model.features)
    for name in reasons:
        out[name] = reasons[name]
    out["model"] = champion.spec.registered_name
    out["model_version"] = champion.version
    out["run_id"] = champion.run_id
    return out


def reason_columns(
    spec: ModelSpec,
    catalog: dict[str, FeatureSpec],
    frame: pd.DataFrame,
    credit: np.ndarray,
    top: np.ndarray,
    features: list[str],
) -> dict[str, np.ndarray]:
    """reason{j}_{feature, direction, contribution, sentence} of each row of `frame`, for
    the reasons `top` picks among the columns of `credit` (`features`, the model's)."""
    out: dict[str, np.ndarray] = {}
    names = np.asarray(features, dtype=object)
    rows = np.arange(len(frame))
    for j in range(top.shape[1]):
        idx = top[:, j]
        contribution = credit[rows, idx]
        feature = names[idx]
        direction = np.where(contribution >= 0, "raises", "lowers")
        out[f"reason{j + 1}_feature"] = feature
        out[f"reason{j + 1}_direction"] = direction
        out[f"reason{j + 1}_contribution"] = contribution
        out[f"reason{j + 1}_sentence"] = sentences(spec, catalog, feature, direction, frame, idx)
    return out


def feature_groups(features: list[str], catalog: dict[str, FeatureSpec]) -> np.ndarray:
    """An integer code per feature: its group in the catalog (a feature the catalog gives no
    group is a group of its own)."""
    codes: dict[str, int] = {}
    out = np.empty(len(features), dtype=np.int32)
    for i, name in enumerate(features):
        spec = catalog.get(name)
        group = spec.group if spec is not None and spec.group else f"feature:{name}"
        out[i] = codes.setdefault(group, len(codes))
    return out


def pick_reasons(
    credit: np.ndarray, features: list[str], catalog: dict[str, FeatureSpec]
) -> np.ndarray:
    """The columns of each row's reasons (module docstring): the largest |credit| first, then
    the largest of another group, and so on; one group again only when no other has credit."""
    return top_k_grouped(credit, feature_groups(features, catalog), REASONS)


_LOGIT_CAP = float(-np.log(1e-7 / (1 - 1e-7)))  # logit(1 - 1e-7)


def explain(
    champion: Champion, X: np.ndarray, catalog: dict[str, FeatureSpec]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibrated probability, credits in calibrated log-odds, reason columns) for the model
    matrix `X`: the one numeric path every scorer takes."""
    return attribute(champion.model, champion.paths, X, champion.reason_groups(catalog))


def attribute(
    model: ScoringModel, paths: PathAttribution, X: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`explain` for any fitted model (a book model's or a flat table's): the path
    attributions of `paths` (the model's booster), scaled into calibrated log-odds, and the
    top reasons by `groups` (a code per feature; all different: the plain top 3)."""
    raw, credit = paths.score(X)
    a, b = model.calibration
    margin = np.clip(raw, -_LOGIT_CAP, _LOGIT_CAP)  # as ScoringModel.calibrate clips
    credit *= a
    top = top_k_grouped(credit, groups, REASONS)  # `pick_reasons`
    return expit(a * margin + b), credit, top


def matrix_from_records(champion: Champion, records: list[dict]) -> np.ndarray:
    """`model_matrix` for a few rows given as dicts (the API), without pandas."""
    return records_matrix(records, champion.model.features, champion.level_codes)


def score_records(
    champion: Champion, records: list[dict], catalog: dict[str, FeatureSpec]
) -> list[dict]:
    """`score_frame` for a few rows given as dicts: the same numbers and sentences, as
    {probability, reasons: [{feature, direction, contribution, sentence}], model...}."""
    X = matrix_from_records(champion, records)
    probability, credit, top = explain(champion, X, catalog)
    features = champion.model.features
    out = []
    for i, r in enumerate(records):
        reasons = []
        for c in top[i]:
            name = features[c]
            contribution = float(credit[i, c])
            direction = "raises" if contribution >= 0 else "lowers"
            v = r.get(name)
            value = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
            if value is not None and not isinstance(value, str):
                value = float(value)
            phrase = reason_phrase(catalog[name], value)
            reasons.append(
                {
                    "feature": name,
                    "direction": direction,
                    "contribution": contribution,
                    "sentence": phrase + _suffix(champion.spec, name, direction),
                }
            )
        out.append(
            {
                "probability": float(probability[i]),
                "reasons": reasons,
                "model": champion.spec.registered_name,
                "model_version": champion.version,
                "run_id": champion.run_id,
            }
        )
    return out


def _suffix(spec: ModelSpec, name: str, direction: str) -> str:
    hint = spec.reason_hints.get(name)
    tail = getattr(hint, direction) if hint else None
    return f"; {tail}" if tail else f", which {direction} the {spec.score_noun}"


REASON_FIELDS = ("feature", "direction", "contribution", "sentence")


def score_columns() -> list[str]:
    """The columns `score_frame` returns after the id and as_of, in order."""
    reasons = [f"reason{j}_{f}" for j in range(1, REASONS + 1) for f in REASON_FIELDS]
    return ["probability", *reasons, "model", "model_version", "run_id"]


def sentences(
    spec: ModelSpec,
    catalog: dict[str, FeatureSpec],
    feature: np.ndarray,
    direction: np.ndarray,
    frame: pd.DataFrame,
    idx: np.ndarray,
) -> np.ndarray:
    """One readable sentence per row: the feature's phrase with the customer's value, then
    the spec's hint for that direction, or which way it moves the score."""
    out = np.empty(len(feature), dtype=object)
    model_features = list(spec.features)
    for f_index in np.unique(idx):
        name = model_features[f_index]
        rows = np.flatnonzero(idx == f_index)
        values = frame[name].to_numpy()[rows]
        phrases = _phrases(catalog[name], values)
        for d in ("raises", "lowers"):
            sel = direction[rows] == d
            if not sel.any():
                continue
            suffix = _suffix(spec, name, d)
            out[rows[sel]] = [p + suffix for p in phrases[sel]]
    return out


def _phrases(spec: FeatureSpec, values: np.ndarray) -> np.ndarray:
    """The feature's phrase for each value, formatting each distinct value once."""
    if spec.dtype == "category":
        text = pd.Series(values, dtype="object").astype("string").fillna("")
        labels, inverse = np.unique(text.to_numpy(object), return_inverse=True)
        formatted = [reason_phrase(spec, None if v == "" else v) for v in labels]
    else:
        labels, inverse = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True)
        formatted = _numbers_phrased(spec, labels.tolist())
    return np.asarray(formatted, dtype=object)[inverse.ravel()]


def _numbers_phrased(spec: FeatureSpec, values: list[float]) -> list[str]:
    """`reason_phrase` of each number (NaN: none on record), word for word: a month's reasons
    format hundreds of thousands of distinct values, so each value's band is found at once
    (`np.searchsorted` on the bounds) and each band's template read once."""
    template = spec.reason
    if not template or "|" in template or not values:
        return [reason_phrase(spec, None if math.isnan(v) else v) for v in values]
    bounds, texts, key = _bands(spec)
    v = np.asarray(values, dtype=np.float64)
    missing = np.isnan(v)
    if key == "exp" or any("{exp" in t for t in texts):
        exps = np.asarray([math.expm1(min(x, 50.0)) for x in values], dtype=np.float64)
    else:
        exps = v  # neither a band's bound nor a template reads {exp}: any number will do
    pct = 100.0 * v
    out = np.empty(len(v), dtype=object)
    out[missing] = reason_phrase(spec, None)
    if len(texts) == 1:
        band = np.zeros(len(v), dtype=np.intp)
    else:
        figure = exps if key == "exp" else pct if key == "pct" else v
        band = np.searchsorted(np.asarray(bounds, dtype=np.float64), figure, side="right")
    band[missing] = -1
    for b in np.unique(band[~missing]):
        rows = np.flatnonzero(band == b)
        fmt = texts[b].format
        vs, es, ps = v[rows].tolist(), exps[rows].tolist(), pct[rows].tolist()
        try:
            out[rows] = [fmt(value=x, exp=e, pct=p) for x, e, p in zip(vs, es, ps, strict=True)]
        except (ValueError, KeyError, IndexError):  # one value does not fit: each on its own
            out[rows] = [reason_phrase(spec, x) for x in vs]
    return out.tolist()


_BANDS: dict[int, tuple[FeatureSpec, tuple[list[float], list[str], str | None]]] = {}


def _bands(spec: FeatureSpec) -> tuple[list[float], list[str], str | None]:
    """(bounds, templates, the figure's key) of a numeric feature (`reason_band_table`; with
    no bands, no bounds and the one template `reason`), worked out once per spec: the API
    phrases three reasons per call. Keyed by id with the spec kept, so an id is not reused."""
    hit = _BANDS.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_BANDS) >= 4096:  # specs built on the fly (tests): start over
            _BANDS.clear()
        if spec.reason_bands:
            bounds, texts = spec.reason_band_table()
        else:
            bounds, texts = [], [spec.reason or ""]
        hit = (spec, (bounds, texts, spec.reason_figure))
        _BANDS[id(spec)] = hit
    return hit[1]


def _figure(key: str | None, value: float) -> float:
    """The number a phrase's key prints for the feature's value (as `_numbers_phrased`)."""
    if key == "exp":
        return math.expm1(min(value, 50.0))
    return 100.0 * value if key == "pct" else value


def reason_phrase(spec: FeatureSpec, value: float | str | None) -> str:
    """How a reason names this feature's value: the catalog's `reason` format string over
    {value}, {exp} (e^value - 1) and {pct} (100 x value), or the text of the `reason_bands`
    band its figure falls in; a flag's phrase is "when 1|when 0"."""
    label = spec.name.replace("_", " ")
    template = spec.reason
    if value is None:
        return f"no {label} on record"
    if isinstance(value, str):
        return (template or f"{label}: {{value}}").format(value=value.replace("_", " "))
    if template and "|" in template:
        when_set, when_not = template.split("|", 1)
        return when_set if value else when_not
    if not template:
        return f"{label} {value:g}"
    bounds, texts, key = _bands(spec)
    if bounds:
        template = texts[bisect_right(bounds, _figure(key, value))]
    try:
        return template.format(value=value, exp=math.expm1(min(value, 50.0)), pct=100.0 * value)
    except (ValueError, KeyError, IndexError):  # a phrase that does not fit the value
        return f"{label} {value:g}"


def rank_in_book(probability: pd.Series) -> pd.DataFrame:
    """Percentile (0-100: the share of the book's rows scored strictly lower, over n - 1,
    as SQL's PERCENT_RANK) and decile (1 = the top 10%) of each probability."""
    p = probability.to_numpy(np.float64)
    n = len(p)
    below = probability.rank(method="min").to_numpy(np.float64) - 1 if n else np.empty(0)
    return percentile_and_decile(below, n, index=probability.index)


def percentile_and_decile(below: np.ndarray, n: int, index=None) -> pd.DataFrame:
    """From each row's count of strictly lower scores among `n` (shared with Spark, which
    counts them itself, and the API, which counts them in the month's distribution)."""
    pct, dec = percentile_arrays(below, n)
    return pd.DataFrame({"percentile": pct, "decile": dec}, index=index)


def percentile_arrays(below: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    below = np.asarray(below, dtype=np.float64)
    share = below / (n - 1) if n > 1 else np.zeros(len(below))
    decile = 10 - np.minimum(np.floor(share * 10), 9)
    return np.round(100 * share, 4), decile.astype(np.int8)
