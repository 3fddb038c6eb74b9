"""Engagement: transactions, digital activity and their trends, payroll continuity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.features._util import f32, nanmean, nansum
from bookpulse.features.history import HISTORY_MONTHS, AsOf


def _trend(v: AsOf, name: str) -> np.ndarray:
    """log of (mean of the last 3 months + 1) over (mean of the 3 before + 1)."""
    recent = nanmean(v.last(name, 3))
    before = nanmean(v.panel[name][:, HISTORY_MONTHS - 6 : HISTORY_MONTHS - 3])
    return f32(np.log1p(recent) - np.log1p(before))


def _vs_year(v: AsOf, name: str) -> np.ndarray:
    """log(1 + this month) - log(1 + average of the 12 months before): a drop below habit."""
    before = nanmean(v.panel[name][:, : HISTORY_MONTHS - 1])
    return f32(np.log1p(v.col(name)) - np.log1p(before))


def compute(v: AsOf) -> pd.DataFrame:
    observed = ~np.isnan(v.panel["txn_count"])
    quiet = (v.panel["digital_logins"] == 0) & (v.panel["txn_count"] <= 1)
    payroll = v.last("payroll_inflow", 6) > 0
    paid_before = (v.panel["payroll_inflow"][:, HISTORY_MONTHS - 6 : HISTORY_MONTHS - 3] > 0).any(
        axis=1
    )
    return pd.DataFrame(
        {
            "txn_count_1m": f32(v.col("txn_count")),
            "txn_count_3m": f32(nanmean(v.last("txn_count", 3))),
            "txn_trend_3m": _trend(v, "txn_count"),
            "txn_amount_3m": f32(nanmean(v.last("txn_amount", 3))),
            "logins_1m": f32(v.col("digital_logins")),
            "logins_3m": f32(nanmean(v.last("digital_logins", 3))),
            "logins_trend_3m": _trend(v, "digital_logins"),
            "txn_vs_12m": _vs_year(v, "txn_count"),
            "logins_vs_12m": _vs_year(v, "digital_logins"),
            "inactive_months_12m": f32(nansum(np.where(observed, quiet, np.nan)[:, 1:])),
            "branch_visits_3m": f32(nansum(v.last("branch_visits", 3))),
            "payroll_months_6m": f32(payroll.sum(axis=1)),
            "payroll_stopped": (paid_before & (v.col("payroll_inflow") <= 0)).astype(np.int8),
            "months_observed": observed.sum(axis=1).astype(np.int8),
        }
    )
