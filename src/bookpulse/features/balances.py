"""Balances: AUM level, tier and distance to the next tier, trends, flows, share of wallet."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.domain import TIER_LOWER_BOUNDS, TIERS, TOP_TIER, tier_index
from bookpulse.features._util import categorical, f32, nanmax, nanmean, nanstd, nansum, ratio
from bookpulse.features.history import AsOf


def compute(v: AsOf) -> pd.DataFrame:
    t = v.at_t
    aum = t["aum_total"].to_numpy(float)
    log_aum = np.log1p(aum)
    tier = tier_index(aum)
    bound = TIER_LOWER_BOUNDS[np.minimum(tier, TOP_TIER - 1)]
    top = tier == TOP_TIER
    hist = np.log1p(v.panel["aum_total"])
    ext = t["external_assets_est"].to_numpy(float)
    flows = v.last("transfer_in", 3) + v.last("payroll_inflow", 3) - v.last("transfer_out", 3)
    recent_aum = nanmean(v.last("aum_total", 4))
    monthly_change = np.diff(hist[:, -7:], axis=1)
    wealth = t[["aum_wealth", "aum_funds", "aum_insurance"]].sum(axis=1).to_numpy(float)
    loans = t[["loan_mortgage", "loan_consumer", "loan_business"]].sum(axis=1).to_numpy(float)
    return pd.DataFrame(
        {
            "aum_total": aum,
            "aum_log": f32(log_aum),
            "tier": categorical(np.asarray(TIERS, dtype=object)[tier], TIERS),
            "dist_next_tier_log": f32(np.where(top, np.nan, np.log(bound) - log_aum)),
            "dist_next_tier_pct": f32(np.where(top, np.nan, (bound - aum) / bound)),
            "aum_chg_3m": f32(log_aum - hist[:, -4]),
            "aum_chg_6m": f32(log_aum - hist[:, -7]),
            "aum_chg_12m": f32(log_aum - hist[:, -13]),
            "aum_vol_6m": f32(nanstd(monthly_change)),
            "aum_drawdown_12m": f32(ratio(aum, nanmax(v.panel["aum_total"])) - 1),
            "net_flow_3m_ratio": f32(ratio(nansum(flows), recent_aum + 1000)),
            "outflow_max_3m_ratio": f32(
                ratio(nanmax(v.last("transfer_out", 3)), nanmax(v.last("aum_total", 4)) + 1000)
            ),
            "wealth_products_share": f32(ratio(wealth, aum)),
            "time_deposit_share": f32(ratio(t["aum_time_deposit"].to_numpy(float), aum)),
            "loans_total": loans,
            "external_assets_est": ext,
            "share_of_wallet": f32(ratio(aum, aum + ext)),
            "external_gap_log": f32(np.log1p(ext) - log_aum),
        }
    )
