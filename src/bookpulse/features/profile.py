"""Profile: who the customer is: age, segment, region, channel, tenure, calendar month."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.domain import AREA_TYPES, ONBOARD_CHANNELS, REGIONS, SEGMENTS
from bookpulse.features._util import categorical
from bookpulse.features.history import AsOf

AGE_BANDS = ("under_30", "30_44", "45_59", "60_74", "75_plus")


def age_band(age: np.ndarray) -> pd.Categorical:
    idx = np.searchsorted([30, 45, 60, 75], age, side="right")
    return categorical(np.asarray(AGE_BANDS, dtype=object)[idx], AGE_BANDS)


def compute(v: AsOf) -> pd.DataFrame:
    c = v.frames.customers.set_index("customer_id").reindex(v.ids)
    area = v.frames.branches.set_index("branch_id")["area_type"].astype(str)
    age = (v.t.year - c["birth_year"].to_numpy(int)).astype(np.int16)
    onboard = c["onboard_date"]
    tenure = (v.t.year - onboard.dt.year) * 12 + (v.t.month - onboard.dt.month)
    return pd.DataFrame(
        {
            "age": age,
            "age_band": age_band(age),
            "gender": categorical(c["gender"].astype(str), ("F", "M")),
            "segment": categorical(c["segment"].astype(str), SEGMENTS),
            "region": categorical(c["region"].astype(str), REGIONS),
            "area_type": categorical(area.reindex(c["branch_id"]).to_numpy(), AREA_TYPES),
            "onboard_channel": categorical(c["onboard_channel"].astype(str), ONBOARD_CHANNELS),
            "tenure_months": tenure.to_numpy(np.int16),
            "payroll_enrolled": c["payroll_enrolled"].to_numpy(np.int8),
            "calendar_month": np.full(v.ids.size, v.t.month, dtype=np.int8),
        }
    )
