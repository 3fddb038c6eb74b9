"""Relationship circles: linked customers' tiers, wealth and recent attrition."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.domain import tier_index
from bookpulse.features._util import f32
from bookpulse.features.history import AsOf, linked_facts


def compute(v: AsOf) -> pd.DataFrame:
    rel = v.frames.relationships
    rel = rel.loc[rel["customer_id"].isin(v.ids)]
    facts = v.frames.linked
    if facts is None:
        facts = linked_facts(v.frames.snapshots, v.t)
    linked = facts.reindex(rel["related_customer_id"].to_numpy())
    aum = linked["aum"].to_numpy(float)
    tier = np.where(np.isnan(aum), np.nan, tier_index(np.nan_to_num(aum)))
    gone = linked["attrited_3m"].fillna(False).to_numpy(bool)
    kind = rel["kind"].astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "customer_id": rel["customer_id"].to_numpy(),
            "family": kind == "family",
            "friend": kind == "friend",
            "business": kind == "business",
            "active": ~np.isnan(aum),
            "tier": tier,
            "high_end": tier >= 3,
            "log_aum": np.log1p(aum),
            "gone": gone,
        }
    )
    g = frame.groupby("customer_id")
    agg = pd.DataFrame(
        {
            "links_total": g.size(),
            "links_family": g["family"].sum(),
            "links_friend": g["friend"].sum(),
            "links_business": g["business"].sum(),
            "linked_active": g["active"].sum(),
            "linked_max_tier": g["tier"].max(),
            "linked_high_end": g["high_end"].sum(),
            "linked_aum_log_mean": g["log_aum"].mean(),
            "linked_attrited_3m": g["gone"].sum(),
        }
    ).reindex(v.ids)
    counts = [c for c in agg.columns if c not in ("linked_max_tier", "linked_aum_log_mean")]
    out = {c: agg[c].fillna(0).to_numpy(np.int16) for c in counts}
    out["linked_max_tier"] = f32(agg["linked_max_tier"])
    out["linked_aum_log_mean"] = f32(agg["linked_aum_log_mean"])
    order = [
        "links_total",
        "links_family",
        "links_friend",
        "links_business",
        "linked_active",
        "linked_max_tier",
        "linked_high_end",
        "linked_aum_log_mean",
        "linked_attrited_3m",
    ]
    return pd.DataFrame({k: out[k] for k in order})
