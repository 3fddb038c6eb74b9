"""Care: RM contact, value-added services, complaints, and care against household wealth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.domain import tier_index
from bookpulse.features._util import f32, nansum
from bookpulse.features.history import HISTORY_MONTHS, AsOf


def compute(v: AsOf) -> pd.DataFrame:
    contacts = v.panel["rm_contacts"]
    contacted = contacts > 0
    # month-ends since the last RM contact: 0 = this month; 13 = none in the 13-month window
    since = np.where(contacted.any(axis=1), np.argmax(contacted[:, ::-1], axis=1), HISTORY_MONTHS)
    aum = v.at_t["aum_total"].to_numpy(float)
    household = aum + v.at_t["external_assets_est"].to_numpy(float)
    return pd.DataFrame(
        {
            "rm_contacts_1m": f32(nansum(v.last("rm_contacts", 1))),
            "rm_contacts_3m": f32(nansum(v.last("rm_contacts", 3))),
            "rm_contacts_12m": f32(nansum(v.last("rm_contacts", 12))),
            "months_since_rm_contact": since.astype(np.int8),
            "vas_used_3m": f32(nansum(v.last("vas_used", 3))),
            "vas_months_12m": f32((v.last("vas_used", 12) > 0).sum(axis=1)),
            "complaints_3m": f32(nansum(v.last("complaints", 3))),
            "complaints_12m": f32(nansum(v.last("complaints", 12))),
            "household_tier_gap": (tier_index(household) - tier_index(aum)).astype(np.int8),
        }
    )
