"""Small numeric helpers shared by the feature groups."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def ratio(num, den) -> np.ndarray:
    """num / den, NaN where den is 0 or missing."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def nanmean(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=1)


def nanstd(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(a, axis=1)


def nanmax(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(a, axis=1)


def nansum(a: np.ndarray) -> np.ndarray:
    """Sum over months, NaN when no month was observed."""
    seen = (~np.isnan(a)).any(axis=1)
    return np.where(seen, np.nansum(a, axis=1), np.nan)


def categorical(values, categories) -> pd.Categorical:
    """A categorical over a fixed vocabulary, so that codes agree across months and models."""
    return pd.Categorical(np.asarray(values, dtype=object), categories=list(categories))
