"""Fit a spec's model: LightGBM with early stopping, then calibration on a later window.

The result, `ScoringModel`, is what every scorer uses: it takes a feature frame and returns
calibrated probabilities (a banker reads 0.12 as 12%). Calibration is Platt scaling on the
booster's log-odds, fitted on the calibration months that come after the early-stopping
months: a monotone map, so it fixes the level without reordering anyone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from bookpulse.specs import LightGBMSpec, ModelSpec


def prepare(frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]]):
    """The model's input matrix: the features in order, categoricals on their fixed levels
    (strings from an API payload become the same codes as in training; unknown levels are
    missing)."""
    missing = [f for f in features if f not in frame]
    if missing:
        raise KeyError(f"features missing from the input: {', '.join(missing)}")
    X = frame[features].copy()
    for name, levels in categories.items():
        col = X[name]
        if isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == levels:
            continue
        text = col.astype("string")
        X[name] = pd.Categorical(text.where(text.isin(levels)), categories=levels)
    return X


def numeric_matrix(
    frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]]
) -> np.ndarray:
    """`prepare`'s input as float64, as LightGBM itself converts a DataFrame: features in
    order, categoricals as codes on the fixed levels (unknown or missing: NaN)."""
    X = prepare(frame, features, categories)
    cols = []
    for name in features:
        col = X[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy(np.float64)
            codes[codes < 0] = np.nan
            cols.append(codes)
        else:
            cols.append(col.to_numpy(np.float64, na_value=np.nan))
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))


def level_codes(categories: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """For each categorical feature, level -> its code in the model's input."""
    return {f: {lv: i for i, lv in enumerate(ls)} for f, ls in categories.items()}


def records_matrix(
    records: list[dict], features: list[str], codes: dict[str, dict[str, int]]
) -> np.ndarray:
    """`numeric_matrix` for a few rows given as dicts (the API), without pandas: numbers as
    float, categories as their codes (`level_codes`; unknown or missing: NaN)."""
    X = np.full((len(records), len(features)), np.nan)
    for j, name in enumerate(features):
        levels = codes.get(name)
        for i, r in enumerate(records):
            v = r.get(name)
            if v is None:
                continue
            if levels is not None:
                X[i, j] = levels.get(str(v), np.nan)
            else:
                X[i, j] = float(v)
    return X


@dataclass
class ScoringModel:
    """A fitted booster, its calibration and the schema of its input."""

    booster: lgb.Booster
    features: list[str]
    categories: dict[str, list[str]]
    calibration: tuple[float, float] = (1.0, 0.0)  # p = expit(a * logit(raw) + b)
    best_iteration: int = 0
    threads: int = field(default=0, repr=False)

    def predict_raw(self, frame: pd.DataFrame) -> np.ndarray:
        X = prepare(frame, self.features, self.categories)
        return self.booster.predict(
            X, num_iteration=self.best_iteration or None, num_threads=self.threads
        )

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return expit(a * logit(np.clip(raw, 1e-7, 1 - 1e-7)) + b)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the event for each row."""
        return self.calibrate(self.predict_raw(frame))

    def gain_importance(self) -> pd.Series:
        """Total gain of each feature over the trees used."""
        gain = self.booster.feature_importance("gain", iteration=self.best_iteration or None)
        return pd.Series(gain, index=self.features)

    def shap_sample(
        self, frame: pd.DataFrame, rows: int = 2_000
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """TreeSHAP contributions (log-odds) on a fixed random sample of `frame`, and the sample."""
        sample = frame.sample(min(rows, len(frame)), random_state=0)
        contrib = self.booster.predict(
            prepare(sample, self.features, self.categories),
            pred_contrib=True,
            num_iteration=self.best_iteration or None,
        )
        return pd.DataFrame(contrib[:, :-1], columns=self.features, index=sample.index), sample

    def to_json(self) -> str:
        return json.dumps(
            {
                "booster": self.booster.model_to_string(num_iteration=self.best_iteration or None),
                "features": self.features,
                "categories": self.categories,
                "calibration": list(self.calibration),
            }
        )

    @classmethod
    def from_json(cls, text: str, threads: int = 0) -> ScoringModel:
        d = json.loads(text)
        return cls(
            booster=lgb.Booster(model_str=d["booster"]),
            features=d["features"],
            categories={k: list(v) for k, v in d["categories"].items()},
            calibration=(float(d["calibration"][0]), float(d["calibration"][1])),
            threads=threads,
        )


def category_levels(frame: pd.DataFrame, features: list[str]) -> dict[str, list[str]]:
    return {
        f: [str(c) for c in frame[f].cat.categories]
        for f in features
        if isinstance(frame[f].dtype, pd.CategoricalDtype)
    }


def downsample(
    frame: pd.DataFrame, label: str, max_rows: int | None, seed: int = 42
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Keep every event and a random share of non-events so that at most `max_rows` remain;
    non-events are weighted by the inverse share, so the loss is the full data's."""
    if max_rows is None or len(frame) <= max_rows:
        return frame, None
    y = frame[label].to_numpy()
    events = int(y.sum())
    share = max(min((max_rows - events) / max(len(y) - events, 1), 1.0), 0.01)
    keep = (y == 1) | (np.random.default_rng(seed).random(len(y)) < share)
    weight = np.where(y[keep] == 1, 1.0, 1.0 / share)
    return frame.loc[keep], weight


def fit_model(
    spec: ModelSpec,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    calibration: pd.DataFrame,
    threads: int = 0,
) -> ScoringModel:
    """Train on `train`, stop early on `valid`, calibrate on `calibration` (all out of time)."""
    return fit_frames(
        spec.name,
        list(spec.features),
        spec.target.label,
        spec.lightgbm,
        train,
        valid,
        calibration,
        threads,
    )


def fit_frames(
    name: str,
    features: list[str],
    label: str,
    lgb_spec: LightGBMSpec,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    calibration: pd.DataFrame,
    threads: int = 0,
) -> ScoringModel:
    """The recipe on any frames: LightGBM with early stopping on `valid`, Platt calibration
    on `calibration`. Categorical features must have the `category` dtype."""
    for part_name, part in (("train", train), ("valid", valid), ("calibration", calibration)):
        if part[label].nunique() < 2:
            raise ValueError(
                f"{name}: the {part_name} window has only one class of {label!r} "
                f"({len(part)} rows); the data is too small or too short for this split"
            )
    categories = category_levels(train, features)
    params = {**lgb_spec.params, "num_threads": threads}
    train, weight = downsample(train, label, lgb_spec.max_train_rows)
    dtrain = lgb.Dataset(
        prepare(train, features, categories), train[label].to_numpy(), weight=weight
    )
    dvalid = lgb.Dataset(
        prepare(valid, features, categories), valid[label].to_numpy(), reference=dtrain
    )
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=lgb_spec.num_boost_round,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(lgb_spec.early_stopping_rounds, verbose=False)],
    )
    model = ScoringModel(
        booster=booster,
        features=list(features),
        categories=categories,
        best_iteration=booster.best_iteration,
        threads=threads,
    )
    raw = model.predict_raw(calibration)
    platt = LogisticRegression(C=1e6)
    platt.fit(logit(np.clip(raw, 1e-7, 1 - 1e-7)).reshape(-1, 1), calibration[label].to_numpy())
    model.calibration = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
    return model
