"""Products: product lines held, which ones, and how the count moved."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.domain import PRODUCT_FLAGS
from bookpulse.features._util import f32
from bookpulse.features.history import AsOf


def compute(v: AsOf) -> pd.DataFrame:
    t = v.at_t
    held = v.panel["products_held"]
    out = {"products_held": t["products_held"].to_numpy(np.int8)}
    for flag in PRODUCT_FLAGS:
        out[flag] = t[flag].to_numpy(np.int8)
    out["products_chg_3m"] = f32(held[:, -1] - held[:, -4])
    out["products_chg_12m"] = f32(held[:, -1] - held[:, -13])
    out["four_plus_products"] = (t["products_held"].to_numpy() >= 4).astype(np.int8)
    return pd.DataFrame(out)
