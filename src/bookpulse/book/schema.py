"""pandera schemas for the tables of a book: what every column must hold.

One `DataFrameSchema` per table, for the tables as the readers in `bookpulse.book.io` return
them (monthly tables carry the `month` column the readers add). The schemas hold the rules that
can be judged from one table alone: types, allowed values, ranges, uniqueness and rules across
the columns of one row. Rules that need another table or book.json (unknown customers, dates
after the book's last month) live in `bookpulse.book.validate`.

Text columns may come back from Parquet as `str`, `object` or `category`; all three are
accepted. Dates may be stored at any resolution (ns, us, ms).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pandera.pandas as pa
from pandas.api.types import is_string_dtype

from bookpulse.domain import (
    AREA_TYPES,
    ASSIGNMENTS,
    AUM_PARTS,
    CARD_CHANNELS,
    CARD_PRODUCTS,
    CONTACT_ACTIONS,
    CONTACT_CHANNELS,
    LOAN_PARTS,
    ONBOARD_CHANNELS,
    PRODUCT_FLAGS,
    RELATIONSHIP_KINDS,
    SEGMENTS,
)

# --- allowed values (the vocabulary lives in bookpulse.domain) -----------------------------

GENDERS = ("F", "M")
ACCOUNT_STATUSES = ("open", "closed")

BIRTH_YEARS = (1920, 2010)

# --- snapshot column groups -----------------------------------------------------------------

MONEY_COLUMNS = (
    *AUM_PARTS,
    "aum_total",
    *LOAN_PARTS,
    "payroll_inflow",
    "txn_amount",
    "transfer_in",
    "transfer_out",
    "external_assets_est",
)
ACTIVITY_COUNTS = {
    "txn_count": "int32",
    "digital_logins": "int16",
    "branch_visits": "int16",
    "rm_contacts": "int16",
    "vas_used": "int16",
    "complaints": "int16",
}
AUM_TOLERANCE_CNY = 1.0

# The key that identifies a row of each table, used to point at offending rows.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "branches": ("branch_id",),
    "rms": ("rm_id",),
    "customers": ("customer_id",),
    "relationships": ("customer_id", "related_customer_id"),
    "cards": ("card_id",),
    "snapshots": ("customer_id", "month"),
    "card_spend": ("card_id", "month"),
    "contacts": ("customer_id", "card_id", "list", "month"),
}

# --- building blocks ------------------------------------------------------------------------

TEXT_TYPE_ERROR = "must be text (str, object or category)"


def _is_text(series: pd.Series) -> bool:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return is_string_dtype(series.cat.categories)
    return is_string_dtype(series.dropna())


def text(*checks: pa.Check, nullable: bool = False) -> pa.Column:
    """A text column: str, object holding strings, or category of strings."""
    return pa.Column(None, [pa.Check(_is_text, error=TEXT_TYPE_ERROR), *checks], nullable=nullable)


# pandera keeps this many failing values per check (the validator counts them all itself), so
# a column that is wrong in every one of a million rows does not blow up memory.
KEEP_FAILURES = 5


def one_of(values: tuple[str, ...]) -> pa.Check:
    return pa.Check.isin(
        values, error=f"must be one of: {', '.join(values)}", n_failure_cases=KEEP_FAILURES
    )


def between(low: int, high: int) -> pa.Check:
    return pa.Check.in_range(
        low, high, error=f"must be between {low} and {high}", n_failure_cases=KEEP_FAILURES
    )


def at_least(low: int) -> pa.Check:
    return pa.Check.ge(low, error=f"must be at least {low}", n_failure_cases=KEEP_FAILURES)


def not_negative() -> pa.Check:
    return pa.Check.ge(0, error="must not be negative", n_failure_cases=KEEP_FAILURES)


def positive() -> pa.Check:
    return pa.Check.gt(0, error="must be greater than 0", n_failure_cases=KEEP_FAILURES)


DATE = pa.DateTime  # datetime64 at any resolution, no time zone


def row_rule(
    column: str,
    error: str,
    passes: Callable[[pd.DataFrame], pd.Series],
    shows: tuple[str, ...],
) -> pa.Check:
    """A rule across the columns of one row.

    A broken rule is reported against `column`, with the `shows` columns as examples.
    pandera is asked for a few failure cases only; the validator counts the rows itself.
    """
    return pa.Check(
        passes,
        error=error,
        title=column,
        statistics={"shows": shows},
        n_failure_cases=KEEP_FAILURES,
    )


def _products_match_flags(df: pd.DataFrame) -> pd.Series:
    """Open: the current account plus one per flag set. Closed: nothing held."""
    held = df[list(PRODUCT_FLAGS)].sum(axis=1)
    closed = df["status"].astype(str) == "closed"
    return (df["products_held"] == (1 + held).where(~closed, 0)) & (~closed | (held == 0))


def _aum_total_is_sum(df: pd.DataFrame) -> pd.Series:
    return (df["aum_total"] - df[list(AUM_PARTS)].sum(axis=1)).abs() <= AUM_TOLERANCE_CNY


def _first_use_after_issue(df: pd.DataFrame) -> pd.Series:
    return df["first_use_date"].isna() | (df["first_use_date"] >= df["issue_date"])


def _not_self(df: pd.DataFrame) -> pd.Series:
    return df["customer_id"] != df["related_customer_id"]


# --- the tables -----------------------------------------------------------------------------

BRANCHES = pa.DataFrameSchema(
    {
        "branch_id": pa.Column("int32", unique=True),
        "branch_name": text(),
        "region": text(),
        "area_type": text(one_of(AREA_TYPES)),
        "opened_date": pa.Column(DATE),
    },
    name="branches",
)

RMS = pa.DataFrameSchema(
    {
        "rm_id": pa.Column("int32", unique=True),
        "branch_id": pa.Column("int32"),
        "rm_name": text(),
        "capacity": pa.Column("int16", positive()),
        "hired_date": pa.Column(DATE),
    },
    name="rms",
)

CUSTOMERS = pa.DataFrameSchema(
    {
        "customer_id": pa.Column("int64", positive(), unique=True),
        "segment": text(one_of(SEGMENTS)),
        "birth_year": pa.Column("int16", between(*BIRTH_YEARS)),
        "gender": text(one_of(GENDERS)),
        "region": text(),
        "branch_id": pa.Column("int32"),
        "rm_id": pa.Column("int32"),
        "onboard_date": pa.Column(DATE),
        "onboard_channel": text(one_of(ONBOARD_CHANNELS)),
        "payroll_enrolled": pa.Column("bool"),
    },
    name="customers",
)

RELATIONSHIPS = pa.DataFrameSchema(
    {
        "customer_id": pa.Column("int64"),
        "related_customer_id": pa.Column("int64"),
        "kind": text(one_of(RELATIONSHIP_KINDS)),
        "since": pa.Column(DATE),
    },
    checks=[
        row_rule(
            "related_customer_id",
            "a customer cannot be related to themselves",
            _not_self,
            shows=("customer_id", "related_customer_id"),
        ),
    ],
    unique=["customer_id", "related_customer_id"],
    name="relationships",
)

CARDS = pa.DataFrameSchema(
    {
        "card_id": pa.Column("int64", unique=True),
        "customer_id": pa.Column("int64"),
        "issue_date": pa.Column(DATE),
        "channel": text(one_of(CARD_CHANNELS)),
        "product": text(one_of(CARD_PRODUCTS)),
        "credit_limit": pa.Column("float64", positive()),
        "first_use_date": pa.Column(DATE, nullable=True),  # NaT: not used yet
    },
    checks=[
        row_rule(
            "first_use_date",
            "first_use_date is before issue_date",
            _first_use_after_issue,
            shows=("card_id", "issue_date", "first_use_date"),
        ),
    ],
    name="cards",
)

SNAPSHOTS = pa.DataFrameSchema(
    {
        "customer_id": pa.Column("int64"),
        "month": pa.Column(DATE),
        "status": text(one_of(ACCOUNT_STATUSES)),
        **{name: pa.Column("float64", not_negative()) for name in MONEY_COLUMNS},
        **{name: pa.Column("bool") for name in PRODUCT_FLAGS},
        "products_held": pa.Column("int8", between(0, 1 + len(PRODUCT_FLAGS))),
        **{name: pa.Column(dtype, not_negative()) for name, dtype in ACTIVITY_COUNTS.items()},
    },
    checks=[
        row_rule(
            "aum_total",
            f"aum_total differs from the sum of {', '.join(AUM_PARTS)} by more than "
            f"{AUM_TOLERANCE_CNY:g} CNY",
            _aum_total_is_sum,
            shows=("aum_total", *AUM_PARTS),
        ),
        row_rule(
            "products_held",
            "products_held must equal 1 + the number of has_* flags set (0 once closed)",
            _products_match_flags,
            shows=("products_held",),
        ),
    ],
    unique=["customer_id", "month"],
    name="snapshots",
)

CARD_SPEND = pa.DataFrameSchema(
    {
        "card_id": pa.Column("int64"),
        "month": pa.Column(DATE),
        "txn_count": pa.Column("int16", at_least(1)),
        "amount": pa.Column("float64", not_negative()),
    },
    unique=["card_id", "month"],
    name="card_spend",
)


def _control_not_reached(df: pd.DataFrame) -> pd.Series:
    return ~((df["assignment"].astype(str) == "control") & df["reached"].astype(bool))


def _list_before_contact(df: pd.DataFrame) -> pd.Series:
    return df["list_month"] < df["month"]


CONTACTS = pa.DataFrameSchema(
    {
        "customer_id": pa.Column("int64", positive()),
        # the card a card list worked (a file's integer column with gaps reads as floats)
        "card_id": pa.Column("Int64", nullable=True, coerce=True),
        "month": pa.Column(DATE),  # the month the contact was made (its partition)
        "list_month": pa.Column(DATE),  # the scored month whose list held the customer
        "list": text(),
        "action": text(one_of(CONTACT_ACTIONS)),
        "channel": text(one_of(CONTACT_CHANNELS)),
        "assignment": text(one_of(ASSIGNMENTS)),
        "reached": pa.Column("bool"),
        "rm_id": pa.Column("int32"),
    },
    checks=[
        row_rule(
            "reached",
            "a held-out (control) customer cannot have been reached",
            _control_not_reached,
            shows=("assignment", "reached"),
        ),
        row_rule(
            "list_month",
            "list_month must be before the month of the contact",
            _list_before_contact,
            shows=("list_month",),
        ),
    ],
    unique=["customer_id", "card_id", "list", "month"],
    name="contacts",
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "branches": BRANCHES,
    "rms": RMS,
    "customers": CUSTOMERS,
    "relationships": RELATIONSHIPS,
    "cards": CARDS,
    "snapshots": SNAPSHOTS,
    "card_spend": CARD_SPEND,
    "contacts": CONTACTS,
}
