"""Banking vocabulary shared by the simulator, features, labels and scoring (see DOMAIN.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Vertical tiers by assets held at this bank (AUM, CNY). A customer is in the highest tier whose
# lower bound their AUM reaches: 10,000 exactly is "effective".
TIERS: tuple[str, ...] = ("potential", "effective", "mid", "high_end", "private")
TIER_LOWER_BOUNDS = np.array([10_000.0, 50_000.0, 500_000.0, 6_000_000.0])
TOP_TIER = len(TIERS) - 1

SEGMENTS: tuple[str, ...] = ("business_owner", "elderly", "merchant", "women", "grower", "mass")
CARD_CHANNELS: tuple[str, ...] = ("branch", "online", "telemarketing", "bulk_corporate")
CARD_PRODUCTS: tuple[str, ...] = ("standard", "gold", "platinum", "youth", "senior")
ONBOARD_CHANNELS: tuple[str, ...] = (
    "branch",
    "payroll_deal",
    "referral",
    "online",
    "community_event",
    "market_cluster",
    "agri_program",
    "club",
)
RELATIONSHIP_KINDS: tuple[str, ...] = ("family", "friend", "business")
# Past actions on the lists (the `contacts` table): what was done, how, and whether the
# customer was in the worked part of the list or in its randomised hold-out
CONTACT_ACTIONS: tuple[str, ...] = ("call", "offer", "follow_up")
CONTACT_CHANNELS: tuple[str, ...] = ("rm_call", "branch", "phone", "message")
ASSIGNMENTS: tuple[str, ...] = ("treated", "control")
REGIONS: tuple[str, ...] = ("north", "northeast", "east", "south", "central", "west")
AREA_TYPES: tuple[str, ...] = ("urban", "county", "rural")

# Product lines a customer can hold; the current account is always held while open.
PRODUCT_FLAGS: tuple[str, ...] = (
    "has_time_deposit",
    "has_wealth",
    "has_funds",
    "has_insurance",
    "has_credit_card",
    "has_mobile_banking",
    "has_payroll",
    "has_loan",
)
AUM_PARTS: tuple[str, ...] = (
    "aum_current",
    "aum_time_deposit",
    "aum_wealth",
    "aum_funds",
    "aum_insurance",
)
LOAN_PARTS: tuple[str, ...] = ("loan_mortgage", "loan_consumer", "loan_business")

# Attrition: all accounts closed, or assets collapsed into dormancy: the account is open but
# holds under DORMANT_AUM CNY and shows no transaction and no digital login in the month.
# A customer who attrites stays attrited (closed rows stop; dormant rows stay dormant).
DORMANT_AUM = 100.0

# Outcome windows of the three targets.
CHURN_HORIZON_MONTHS = 3
UPGRADE_HORIZON_MONTHS = 3
ACTIVATION_WINDOW_DAYS = 30


def tier_index(aum_total: np.ndarray | pd.Series) -> np.ndarray:
    """Tier number 0 (potential) .. 4 (private) for each AUM value."""
    return np.searchsorted(TIER_LOWER_BOUNDS, np.asarray(aum_total, dtype=float), side="right")


def tier_name(aum_total: np.ndarray | pd.Series) -> np.ndarray:
    return np.asarray(TIERS, dtype=object)[tier_index(aum_total)]


def is_attrited(
    status: np.ndarray | pd.Series,
    aum_total: np.ndarray | pd.Series,
    txn_count: np.ndarray | pd.Series,
    digital_logins: np.ndarray | pd.Series,
) -> np.ndarray:
    """True where a month-end snapshot shows an attrited customer (closed or dormant)."""
    closed = np.asarray(status == "closed", dtype=bool)
    dormant = (
        (np.asarray(aum_total, dtype=float) < DORMANT_AUM)
        & (np.asarray(txn_count) == 0)
        & (np.asarray(digital_logins) == 0)
    )
    return closed | dormant


# The two entities a model scores: each one's id column, the score table it lands in, and the
# feature columns that give a row's tier and segment (a card's: its holder's).
ENTITY_KEYS = {"customer": "customer_id", "card": "card_id"}
ENTITY_TABLES = {"customer": "customers", "card": "cards"}
ENTITY_CONTEXT = {"customer": ("tier", "segment"), "card": ("holder_tier", "holder_segment")}
