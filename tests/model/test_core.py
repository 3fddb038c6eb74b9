"""The scoring core: exact scores, faithful reasons, book-wide ranks."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logit

from bookpulse.features import build_from_book
from bookpulse.model.core import model_matrix, rank_in_book, reason_phrase, score_frame
from bookpulse.model.explain import PathAttribution, agreement, top_k
from bookpulse.model.fit import prepare


@pytest.fixture(scope="module")
def frames(trainable_book: Path, score_month: str):
    return build_from_book(trainable_book, score_month)


def _frame_for(champ, frames):
    return frames[1] if champ.spec.entity == "card" else frames[0]


@pytest.mark.parametrize("name", ["churn", "tier_upgrade", "card_activation", "wealth_take_up"])
def test_the_tree_walk_gives_lightgbms_scores_exactly(name, champions, frames) -> None:
    champ = champions[name]
    frame = _frame_for(champ, frames)
    raw, credit = champ.paths.score(model_matrix(champ.model, frame))
    X = prepare(frame, champ.model.features, champ.model.categories)
    assert np.array_equal(raw, champ.model.booster.predict(X, raw_score=True))
    # the credits add up to the score: bias + contributions = raw log-odds
    assert np.allclose(champ.paths.bias + credit.sum(axis=1), raw, atol=1e-9)


def test_reasons_agree_with_treeshap(champions, frames) -> None:
    champ = champions["churn"]
    frame = frames[0].sample(600, random_state=1)
    _, credit = champ.paths.score(model_matrix(champ.model, frame))
    X = prepare(frame, champ.model.features, champ.model.categories)
    shap = champ.model.booster.predict(X, pred_contrib=True)[:, :-1]
    got = agreement(top_k(credit), top_k(shap))
    assert got["top1_match"] >= 0.6 and got["top3_overlap"] >= 0.7, got
    # and a random ranking would not: the test can fail
    noise = np.random.default_rng(0).normal(size=shap.shape)
    assert agreement(top_k(noise), top_k(shap))["top3_overlap"] < 0.3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), missing=st.sampled_from(["nan", "zero", "none"]))
def test_the_walk_follows_lightgbm_on_missing_values_and_categories(seed, missing) -> None:
    """Random data with NaNs, zeros and a categorical: leaf walk == Booster.predict."""
    rng = np.random.default_rng(seed)
    n = 400
    X = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n)),
            "c": pd.Categorical(rng.choice(["x", "y", "z", "w"], n)),
        }
    )
    X.loc[rng.random(n) < 0.2, "a"] = np.nan
    y = ((X["a"].fillna(0) + (X["c"] == "y") + rng.normal(size=n)) > 0.5).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "verbosity": -1,
        "seed": seed,
        "max_cat_to_onehot": 2,
        "zero_as_missing": missing == "zero",
        "use_missing": missing != "none",
    }
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=15)
    probe = X.copy()
    probe.loc[:5, "c"] = np.nan  # missing category
    paths = PathAttribution.from_booster(booster)
    M = np.column_stack(
        [
            probe["a"].to_numpy(float),
            probe["b"].to_numpy(float),
            probe["c"].cat.codes.to_numpy(float),
        ]
    )
    M[M[:, 2] < 0, 2] = np.nan
    raw, credit = paths.score(M)
    assert np.array_equal(raw, booster.predict(probe, raw_score=True))
    assert np.allclose(paths.bias + credit.sum(axis=1), raw, atol=1e-9)


def test_a_score_record_is_calibrated_explained_and_named(champions, frames, catalogs) -> None:
    champ = champions["churn"]
    frame = frames[0]
    out = score_frame(champ, frame, catalogs["customer"])
    assert list(out["customer_id"]) == list(frame["customer_id"])
    assert np.allclose(out["probability"], champ.model.predict(frame), rtol=0, atol=1e-12)
    c = out[[f"reason{j}_contribution" for j in (1, 2, 3)]].to_numpy()
    assert (np.abs(c[:, 0]) >= np.abs(c[:, 1])).all() and (np.abs(c[:, 1]) >= np.abs(c[:, 2])).all()
    up = out["reason1_direction"] == "raises"
    assert (up == (out["reason1_contribution"] >= 0)).all()
    # the sentence names the customer's own value of the feature
    row = out.iloc[0]
    feature = row["reason1_feature"]
    value = frame.iloc[0][feature]
    phrase = reason_phrase(catalogs["customer"][feature], None if pd.isna(value) else _plain(value))
    assert row["reason1_sentence"].startswith(phrase)
    assert set(out["model"]) == {"bookpulse-churn"} and set(out["model_version"]) == {"7"}
    # contributions are in the calibrated log-odds: the full sum reproduces the probability
    a, b = champ.model.calibration
    raw, credit = champ.paths.score(model_matrix(champ.model, frame))
    assert np.allclose(
        a * champ.paths.bias + b + (a * credit).sum(axis=1), logit(out["probability"])
    )


def _plain(value):
    return value if isinstance(value, str) else float(value)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.3, 0.9]), min_size=1, max_size=200))
def test_percentile_and_decile_follow_the_score(probs) -> None:
    p = pd.Series(probs, dtype=float)
    r = rank_in_book(p)
    order = np.argsort(p.to_numpy(), kind="stable")
    pct = r["percentile"].to_numpy()[order]
    assert (np.diff(pct) >= 0).all() and pct.min() >= 0 and pct.max() <= 100
    # ties share a percentile; the highest score is in decile 1, the lowest in the last
    assert r.groupby(p.to_numpy())["percentile"].nunique().max() == 1
    if (p == p.max()).sum() == 1 and len(p) > 1:  # ties take their lowest place (PERCENT_RANK)
        assert r["decile"].iloc[int(p.idxmax())] == 1
    if p.nunique() > 1:
        assert r["decile"].iloc[int(p.idxmin())] == 10 and r["percentile"].min() == 0
