"""Uplift: what an action on a list changes, learnt from past contacts against their hold-outs.

The rows are the customers (or cards) a list put in front of an RM at month-end T, treated or
held out at random (the `contacts` table), with their features at T and the outcome in the
window after T. The effect learnt is that of being put in the treated arm (intention to treat:
some treated customers are not reached), the quantity a list can act on.

The learner is EconML's X-learner (Kuenzel et al. 2019) over LightGBM: an outcome model per arm,
each arm's imputed effects (treated: outcome minus the control model's prediction; control: the
treated model's prediction minus the outcome) modelled in turn, blended by the share treated g:
effect(x) = g * effect_control(x) + (1 - g) * effect_treated(x). It suits lists whose hold-out
is small (10%): the effect the control rows carry is imputed with the outcome model of the large
treated arm. The fitted effect models are kept as plain LightGBM boosters (`UpliftModel`), so
scoring needs LightGBM only.

The measures follow the uplift literature: the Qini curve (Radcliffe 2007) counts, down a
ranking, the treated events minus the control events scaled to the treated count; its
coefficient is the area between the curve and the random ranking's straight line, as a share of
all rows. AUUC is the area under the uplift curve (the treated minus control rate among the top
k, times k). On a synthetic book the true effects give the same measures without noise
(`expected_gain`) and the oracle ranking's, the ceiling.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cached_property

import lightgbm as lgb
import numpy as np
import pandas as pd

from bookpulse.model.fit import category_levels, level_codes, numeric_matrix, records_matrix

TREATED, CONTROL = "treated", "control"
QINI_OF = {"model": "qini", "truth-ranked": "qini_truth_ranked"}  # the curves' metrics
NOISE_DRAWS = 100  # random orderings whose Qini spread is the measure's noise


@dataclass
class UpliftModel:
    """Two LightGBM effect models and the share treated that blends them (module doc)."""

    effect_treated: lgb.Booster
    effect_control: lgb.Booster
    treated_share: float
    features: list[str]
    categories: dict[str, list[str]]
    threads: int = 0

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return feature_matrix(frame, self.features, self.categories)

    @cached_property
    def level_codes(self) -> dict[str, dict[str, int]]:
        return level_codes(self.categories)

    def effect(self, frame: pd.DataFrame) -> np.ndarray:
        """The change in the outcome's probability from putting each row in the treated arm."""
        return self.effect_of(self.matrix(frame))

    def effect_of_records(self, records: list[dict]) -> np.ndarray:
        """`effect` for a few rows given as dicts (the API), without pandas, and the trees
        walked by the compiled walk (LightGBM's raw score, bit for bit, without the cost of a
        `Booster.predict` call per row)."""
        X = records_matrix(records, self.features, self.level_codes)
        control, treated = self._paths
        g = self.treated_share
        return g * control.score(X)[0] + (1 - g) * treated.score(X)[0]

    @cached_property
    def _paths(self):
        from bookpulse.model.explain import PathAttribution

        return (
            PathAttribution.from_booster(self.effect_control),
            PathAttribution.from_booster(self.effect_treated),
        )

    def effect_of(self, X: np.ndarray) -> np.ndarray:
        g = self.treated_share
        return g * self.effect_control.predict(X, num_threads=self.threads) + (
            1 - g
        ) * self.effect_treated.predict(X, num_threads=self.threads)

    def to_json(self) -> str:
        return json.dumps(
            {
                "effect_treated": self.effect_treated.model_to_string(),
                "effect_control": self.effect_control.model_to_string(),
                "treated_share": self.treated_share,
                "features": self.features,
                "categories": self.categories,
            }
        )

    @classmethod
    def from_json(cls, text: str, threads: int = 0) -> UpliftModel:
        d = json.loads(text)
        return cls(
            effect_treated=lgb.Booster(model_str=d["effect_treated"]),
            effect_control=lgb.Booster(model_str=d["effect_control"]),
            treated_share=float(d["treated_share"]),
            features=list(d["features"]),
            categories={k: list(v) for k, v in d["categories"].items()},
            threads=threads,
        )


@dataclass(frozen=True)
class UpliftChampion:
    """A registered uplift model ready to score: its spec, the fitted model, its version."""

    spec: object  # UpliftSpec (specs imports nothing from here; kept loose to avoid a cycle)
    model: UpliftModel
    version: str
    run_id: str

    @property
    def prefix(self) -> str:
        return self.spec.prefix


ASSET_FEATURE = {"customer": "aum_log", "card": "holder_aum_log"}  # log1p of assets here
LOG_ASSETS_CAP = 40.0


def effect_columns(uc: UpliftChampion, frame: pd.DataFrame, entity: str) -> pd.DataFrame:
    """`<prefix>_effect` (the change in the outcome's probability from putting the row in the
    list's treated arm), `<prefix>_benefit` (the same in the direction the action aims at) and
    `<prefix>_value` (benefit times what is at stake, CNY) for the rows of `frame`."""
    log_assets = None
    if uc.spec.uplift.at_stake == "assets":
        log_assets = frame[ASSET_FEATURE[entity]].to_numpy(np.float64, na_value=np.nan)
    return pd.DataFrame(effect_arrays(uc, uc.model.effect(frame), log_assets), index=frame.index)


def effect_arrays(
    uc: UpliftChampion, effect: np.ndarray, log_assets: np.ndarray | None
) -> dict[str, np.ndarray]:
    """`effect_columns` from the effects and (when assets are at stake) log1p of the assets."""
    sign = -1.0 if uc.spec.uplift.aim == "lower" else 1.0
    stake = uc.spec.uplift.at_stake
    if stake == "assets":
        # log1p(assets) beyond 40 (CNY 2e17) is no customer's: capped, so the product stays
        # finite whatever an API caller sends
        worth = np.expm1(np.clip(np.nan_to_num(log_assets, nan=0.0), 0.0, LOG_ASSETS_CAP))
    else:
        worth = np.full(len(effect), float(stake))
    p = uc.prefix
    return {
        f"{p}_effect": effect,
        f"{p}_benefit": sign * effect,
        f"{p}_at_stake": worth,
        f"{p}_value": sign * effect * worth,
    }


def feature_matrix(
    frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]]
) -> np.ndarray:
    """Features in order as float64, categoricals as codes on the training levels."""
    return numeric_matrix(frame, features, categories)


def x_learner(outcome_params: dict, effect_params: dict, threads: int = 0):
    """EconML's X-learner with LightGBM outcome models (probabilities: the cross-entropy
    objective) and effect models (regressions of the imputed effects)."""
    from econml.metalearners import XLearner  # a heavy import, only where a model is fitted
    from sklearn.dummy import DummyClassifier

    common = {"verbose": -1, "n_jobs": threads or None}
    return XLearner(
        models=lgb.LGBMRegressor(**{"objective": "cross_entropy", **outcome_params, **common}),
        cate_models=lgb.LGBMRegressor(**{**effect_params, **common}),
        # the assignment is random: the propensity is the share treated, whatever the features
        propensity_model=DummyClassifier(strategy="prior"),
        allow_missing=True,
    )


def fit_uplift(
    features: list[str],
    rows: pd.DataFrame,
    outcome: str,
    outcome_params: dict,
    effect_params: dict,
    threads: int = 0,
) -> UpliftModel:
    """Fit the X-learner on `rows` (features, `outcome` 0/1 and `assignment`). Outcome models
    predict probabilities (LightGBM's cross-entropy objective); effect models regress the
    imputed effects."""
    assignment = rows["assignment"].astype(str)
    if not assignment.eq(CONTROL).any():
        raise ValueError("no held-out (control) rows: uplift needs a randomised hold-out")
    if not assignment.eq(TREATED).any():
        raise ValueError("no treated rows: nothing was done on this list")
    categories = category_levels(rows, features)
    X = feature_matrix(rows, features, categories)
    T = assignment.eq(TREATED).to_numpy(int)
    Y = rows[outcome].to_numpy(float)
    learner = x_learner(outcome_params, effect_params, threads)
    with warnings.catch_warnings():  # missing values are LightGBM's to handle, by design
        warnings.filterwarnings("ignore", message=".*contains NaN", category=UserWarning)
        learner.fit(Y, T, X=X)
    return UpliftModel(
        effect_treated=learner.cate_treated_models[0].booster_,
        effect_control=learner.cate_controls_models[0].booster_,
        treated_share=float(T.mean()),
        features=list(features),
        categories=categories,
        threads=threads,
    )


# --- measures ----------------------------------------------------------------------------


def _ranked(score: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(-np.asarray(score, float), kind="stable")
    return [np.asarray(a)[order] for a in arrays]


def qini_curve(score: np.ndarray, outcome: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """Q(k) for k = 1..n down the ranking by `score` (highest first): treated events among the
    top k minus control events scaled by treated/control counts among them (0 while no control
    row is in). `outcome` is the one the action aims at (for a call meant to lower churn:
    1 - churned), so Q counts what the action adds."""
    y, t = _ranked(score, outcome, treated)
    t = t.astype(bool)
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    y_t, y_c = np.cumsum(y * t), np.cumsum(y * ~t)
    return y_t - np.where(n_c > 0, y_c * n_t / np.maximum(n_c, 1), 0.0)


def qini_coefficient(score: np.ndarray, outcome: np.ndarray, treated: np.ndarray) -> float:
    """Area between the Qini curve and the random ranking's line, per row: the outcomes the
    ranking gains over a random order, averaged over every cut-off, per row of the list."""
    q = qini_curve(score, outcome, treated)
    n = q.size
    line = np.arange(1, n + 1) / n * q[-1]
    return float(np.mean(q - line) / n)


def auuc(score: np.ndarray, outcome: np.ndarray, treated: np.ndarray) -> float:
    """Area under the uplift curve, per row: mean over k of (treated rate - control rate among
    the top k) x k / n."""
    y, t = _ranked(score, outcome, treated)
    t = t.astype(bool)
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    rate_t = np.cumsum(y * t) / np.maximum(n_t, 1)
    rate_c = np.cumsum(y * ~t) / np.maximum(n_c, 1)
    k = np.arange(1, y.size + 1)
    gain = np.where((n_t > 0) & (n_c > 0), (rate_t - rate_c) * k, 0.0)
    return float(np.mean(gain) / y.size)


def expected_gain(score: np.ndarray, effect: np.ndarray) -> float:
    """The Qini coefficient's noise-free counterpart where every row's true effect is known:
    area between the cumulative true effect down the ranking and the random line, per row."""
    (e,) = _ranked(score, effect)
    g = np.cumsum(e)
    line = np.arange(1, g.size + 1) / g.size * g[-1]
    return float(np.mean(g - line) / g.size)


def uplift_by_decile(
    score: np.ndarray,
    outcome: np.ndarray,
    treated: np.ndarray,
    effect: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per decile of the ranking (1: highest score): rows, treated and control outcome rates,
    their difference with a 95% interval, the mean score and, when known, the true effect."""
    y, t, s = _ranked(score, outcome, treated, score)
    t = t.astype(bool)
    n = y.size
    decile = np.minimum(np.arange(n) * 10 // max(n, 1), 9) + 1
    rows = []
    e = _ranked(score, effect)[0] if effect is not None else None
    for d in range(1, 11):
        m = decile == d
        yt, yc = y[m & t], y[m & ~t]
        rt = yt.mean() if yt.size else np.nan
        rc = yc.mean() if yc.size else np.nan
        se = np.sqrt((rt * (1 - rt) / max(yt.size, 1)) + (rc * (1 - rc) / max(yc.size, 1)))
        row = {
            "decile": d,
            "rows": int(m.sum()),
            "treated": int(yt.size),
            "control": int(yc.size),
            "treated_rate": rt,
            "control_rate": rc,
            "uplift": rt - rc,
            "uplift_low": rt - rc - 1.96 * se,
            "uplift_high": rt - rc + 1.96 * se,
            "predicted": float(s[m].mean()),
        }
        if e is not None:
            row["true_effect"] = float(e[m].mean())
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class UpliftEvaluation:
    metrics: dict[str, float]
    deciles: pd.DataFrame
    curves: dict[str, np.ndarray]  # Qini curves: model (and truth-ranked when known)


def evaluate(
    benefit: np.ndarray,
    good: np.ndarray,
    treated: np.ndarray,
    true_benefit: np.ndarray | None = None,
) -> UpliftEvaluation:
    """The validation pack's measures on test rows. `benefit`: the predicted effect in the
    direction the action aims at (a fall in churn counts positive); `good`: the outcome in that
    direction (1 - churned); `true_benefit`: the simulator's reach x effect, when known."""
    treated = np.asarray(treated, bool)
    good = np.asarray(good, float)
    rt, rc = good[treated].mean(), good[~treated].mean()
    se = np.sqrt(rt * (1 - rt) / treated.sum() + rc * (1 - rc) / (~treated).sum())
    rng = np.random.default_rng(0)
    noise = float(
        np.std([qini_coefficient(rng.random(good.size), good, treated) for _ in range(NOISE_DRAWS)])
    )
    qini = qini_coefficient(benefit, good, treated)
    m = {
        "rows_test": float(good.size),
        "control_rows_test": float((~treated).sum()),
        "qini": qini,
        "qini_noise": noise,
        "qini_z": qini / noise if noise > 0 else 0.0,
        "auuc": auuc(benefit, good, treated),
        "ate_realised": float(rt - rc),
        "ate_realised_low": float(rt - rc - 1.96 * se),
        "ate_realised_high": float(rt - rc + 1.96 * se),
        "ate_predicted": float(np.mean(benefit)),
    }
    curves = {"model": qini_curve(benefit, good, treated)}
    if true_benefit is not None:
        gain, oracle = (
            expected_gain(benefit, true_benefit),
            expected_gain(true_benefit, true_benefit),
        )
        m |= {
            "qini_truth_ranked": qini_coefficient(true_benefit, good, treated),
            "expected_gain": gain,
            "expected_gain_oracle": oracle,
            "expected_gain_ratio": gain / oracle if oracle > 0 else float("nan"),
            "ate_true": float(np.mean(true_benefit)),
        }
        curves["truth-ranked"] = qini_curve(true_benefit, good, treated)
    return UpliftEvaluation(m, uplift_by_decile(benefit, good, treated, true_benefit), curves)


def plot_uplift(out, title: str, ev: UpliftEvaluation, effect_word: str) -> list:
    """The Qini curves (model, truth-ranked when known, random) and uplift by decile with its
    95% interval (and the true effect when known), as PNGs in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, q in ev.curves.items():
        share = np.arange(1, q.size + 1) / q.size
        ax.plot(
            share,
            q,
            label=f"{name} (Qini {ev.metrics[QINI_OF[name]]:.2f})",
        )
    q = ev.curves["model"]
    ax.plot([0, 1], [0, q[-1]], "--", color="grey", label="random order")
    ax.set_xlabel("share of the list, best predicted first")
    ax.set_ylabel(f"{effect_word} gained over the hold-out")
    ax.set_title(f"{title}: Qini curve (test months)")
    ax.legend(loc="best", fontsize=8)
    paths.append(_save(plt, fig, out / "qini.png"))

    d = ev.deciles
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    err = np.vstack([d["uplift"] - d["uplift_low"], d["uplift_high"] - d["uplift"]])
    ax.bar(d["decile"], d["uplift"], yerr=err, color="#7aa6c2", capsize=3, label="realised")
    ax.plot(d["decile"], d["predicted"], "o-", color="#c2410c", label="predicted")
    if "true_effect" in d:
        ax.plot(d["decile"], d["true_effect"], "s--", color="#15803d", label="true (simulator)")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("decile of predicted effect (1: largest)")
    ax.set_ylabel("treated minus hold-out rate")
    ax.set_title(f"{title}: uplift by decile (95% intervals)")
    ax.legend(loc="best", fontsize=8)
    paths.append(_save(plt, fig, out / "uplift_by_decile.png"))
    return paths


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
