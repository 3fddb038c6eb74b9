"""Card features, keyed (card_id, as_of), for cards issued in the month ending T and unused
at T (the activation population): the card itself and its holder's relationship with the bank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.domain import CARD_CHANNELS, CARD_PRODUCTS
from bookpulse.features._util import categorical, f32
from bookpulse.features.history import AsOf

# Holder features taken from the customer frame, renamed holder_<name>.
HOLDER_FEATURES = (
    "products_held",
    "tier",
    "aum_log",
    "has_payroll",
    "has_mobile_banking",
    "logins_3m",
    "txn_count_3m",
    "tenure_months",
    "age",
    "segment",
)


def eligible_cards(cards: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    """Cards issued in the month ending `t` and not used by `t`."""
    start = t.to_period("M").start_time
    issued = cards["issue_date"].between(start, t)
    unused = ~(cards["first_use_date"] <= t)
    return cards.loc[issued & unused].sort_values("card_id").reset_index(drop=True)


def compute(v: AsOf, customer_features: pd.DataFrame) -> pd.DataFrame:
    """One row per eligible card; `customer_features` is the customer frame as of the same T."""
    cards = v.frames.cards
    elig = eligible_cards(cards, v.t)
    earlier = cards.loc[cards["issue_date"] < v.t.to_period("M").start_time]
    other = earlier.groupby("customer_id").size()
    used = earlier.loc[earlier["first_use_date"].notna()].groupby("customer_id").size()
    holder_ids = elig["customer_id"].to_numpy()
    holder = customer_features.set_index("customer_id").reindex(holder_ids)
    out = {
        "card_id": elig["card_id"].to_numpy(np.int64),
        "customer_id": holder_ids.astype(np.int64),
        "days_since_issue": (v.t - elig["issue_date"]).dt.days.to_numpy(np.int16),
        "issue_channel": categorical(elig["channel"].astype(str), CARD_CHANNELS),
        "card_product": categorical(elig["product"].astype(str), CARD_PRODUCTS),
        "credit_limit": f32(elig["credit_limit"]),
        "holder_other_cards": other.reindex(holder_ids).fillna(0).to_numpy(np.int16),
        "holder_cards_used": used.reindex(holder_ids).fillna(0).to_numpy(np.int16),
        "holder_active": np.isin(holder_ids, v.ids).astype(np.int8),
    }
    for name in HOLDER_FEATURES:
        col = holder[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            out[f"holder_{name}"] = pd.Categorical(col, categories=col.cat.categories)
        else:
            out[f"holder_{name}"] = f32(col)
    return pd.DataFrame(out)
