"""Book validation: a valid hand-made book passes; each kind of damage is named precisely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bookpulse.book.io import BookError, monthly_path, write_parquet
from bookpulse.book.validate import (
    Problem,
    check_book,
    describe_problems,
    format_problems,
    validate_book,
)
from bookpulse.domain import PRODUCT_FLAGS

MONTHS = ["2025-01", "2025-02"]
FLAGS = list(PRODUCT_FLAGS)


def _dates(*values: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values)), dtype="datetime64[us]")


def _snapshot(customer_ids: list[int], month_no: int) -> pd.DataFrame:
    n = len(customer_ids)
    rng = np.random.default_rng(month_no)
    parts = {
        name: rng.uniform(0, 10_000, n).round(2)
        for name in ("aum_current", "aum_time_deposit", "aum_wealth", "aum_funds", "aum_insurance")
    }
    flags = {
        name: np.array([(i + j + month_no) % 3 == 0 for i in range(n)])
        for j, name in enumerate(FLAGS)
    }
    df = pd.DataFrame({"customer_id": np.array(customer_ids, dtype="int64"), "status": "open"})
    for name, values in parts.items():
        df[name] = values
    df["aum_total"] = sum(parts.values())
    for name in (
        "loan_mortgage",
        "loan_consumer",
        "loan_business",
        "payroll_inflow",
        "txn_amount",
        "transfer_in",
        "transfer_out",
        "external_assets_est",
    ):
        df[name] = rng.uniform(0, 5_000, n).round(2)
    for name, values in flags.items():
        df[name] = values
    df["products_held"] = (1 + sum(v.astype(int) for v in flags.values())).astype("int8")
    df["txn_count"] = rng.integers(0, 50, n).astype("int32")
    for name in ("digital_logins", "branch_visits", "rm_contacts", "vas_used", "complaints"):
        df[name] = rng.integers(0, 5, n).astype("int16")
    return df


def _spend(card_ids: list[int], amounts: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "card_id": np.array(card_ids, dtype="int64"),
            "txn_count": np.array([3] * len(card_ids), dtype="int16"),
            "amount": np.array(amounts, dtype="float64"),
        }
    )


@pytest.fixture
def tables() -> dict:
    """A tiny valid book: 2 months, 2 branches, 3 RMs, 4 customers (104 joins in Feb), 3 cards."""
    return {
        "branches": pd.DataFrame(
            {
                "branch_id": np.array([1, 2], dtype="int32"),
                "branch_name": ["Riverside", "Hill Street"],
                "region": ["north", "south"],
                "area_type": ["urban", "rural"],
                "opened_date": _dates("2001-03-01", "2015-07-15"),
            }
        ),
        "rms": pd.DataFrame(
            {
                "rm_id": np.array([10, 11, 12], dtype="int32"),
                "branch_id": np.array([1, 1, 2], dtype="int32"),
                "rm_name": ["Li Na", "Wang Wei", "Zhang Min"],
                "capacity": np.array([200, 150, 180], dtype="int16"),
                "hired_date": _dates("2010-01-04", "2018-09-01", "2020-02-17"),
            }
        ),
        "customers": pd.DataFrame(
            {
                "customer_id": np.array([101, 102, 103, 104], dtype="int64"),
                "segment": pd.Series(["mass", "elderly", "women", "grower"], dtype="category"),
                "birth_year": np.array([1980, 1950, 1992, 1975], dtype="int16"),
                "gender": ["M", "F", "F", "M"],
                "region": ["north", "north", "south", "south"],
                "branch_id": np.array([1, 1, 2, 2], dtype="int32"),
                "rm_id": np.array([10, 11, 12, 12], dtype="int32"),
                "onboard_date": _dates("2023-05-10", "2024-12-01", "2025-01-15", "2025-02-20"),
                "onboard_channel": ["branch", "referral", "online", "agri_program"],
                "payroll_enrolled": [True, False, False, True],
            }
        ),
        "relationships": pd.DataFrame(
            {
                "customer_id": np.array([101, 102, 103], dtype="int64"),
                "related_customer_id": np.array([102, 101, 104], dtype="int64"),
                "kind": ["family", "family", "friend"],
                "since": _dates("2024-12-01", "2024-12-01", "2025-02-20"),
            }
        ),
        "cards": pd.DataFrame(
            {
                "card_id": np.array([1001, 1002, 1003], dtype="int64"),
                "customer_id": np.array([101, 102, 104], dtype="int64"),
                "issue_date": _dates("2024-06-01", "2025-01-05", "2025-02-22"),
                "channel": ["branch", "online", "telemarketing"],
                "product": ["gold", "senior", "standard"],
                "credit_limit": [20_000.0, 8_000.0, 5_000.0],
                "first_use_date": _dates("2024-06-10", "2025-02-02", None),
            }
        ),
        "snapshots": {
            "2025-01": _snapshot([101, 102, 103], 1),
            "2025-02": _snapshot([101, 102, 103, 104], 2),
        },
        "card_spend": {
            "2025-01": _spend([1001, 1002], [1_250.5, 0.0]),
            "2025-02": _spend([1001, 1002], [300.0, 99.9]),
        },
    }


@pytest.fixture
def meta() -> dict:
    return {
        "generator": "hand-made test book",
        "seed": 7,
        "customers": 4,
        "months": MONTHS,
        "start_month": MONTHS[0],
        "end_month": MONTHS[-1],
    }


def write_book(root: Path, tables: dict, meta: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "book.json").write_text(json.dumps(meta))
    for name, table in tables.items():
        if isinstance(table, dict):
            for month, df in table.items():
                write_parquet(df, monthly_path(root, name, month))
        else:
            write_parquet(table, root / f"{name}.parquet")
    return root


@pytest.fixture
def book(tmp_path: Path, tables: dict, meta: dict) -> Path:
    return write_book(tmp_path / "book", tables, meta)


def problems_of(tmp_path: Path, tables: dict, meta: dict) -> list[Problem]:
    return validate_book(write_book(tmp_path / "bad", tables, meta))


def the(problems: list[Problem], table: str, column: str | None) -> Problem:
    """The one problem reported for (table, column)."""
    found = [p for p in problems if p.table == table and p.column == column]
    assert len(found) == 1, f"expected one problem for {table}.{column}, got: {problems}"
    return found[0]


# --- the valid book -------------------------------------------------------------------------


def test_valid_book_has_no_problems_and_reports_progress(book: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    problems = validate_book(
        book, progress=lambda label, done, total: seen.append((label, done, total))
    )
    assert problems == []
    total = 1 + 5 + 2 * len(MONTHS)  # book.json, static tables, two monthly tables
    assert [done for _, done, _ in seen] == list(range(1, total + 1))
    assert ("snapshots 2025-02", 8, total) in seen


# --- book.json and files --------------------------------------------------------------------


def test_missing_book_json_is_the_only_problem(book: Path) -> None:
    (book / "book.json").unlink()
    problems = validate_book(book)
    assert len(problems) == 1
    assert problems[0].table == "book.json"
    assert problems[0].column is None
    assert "book.json is missing" in problems[0].reason


def test_book_json_that_is_not_json(book: Path) -> None:
    (book / "book.json").write_text("{not json")
    problems = validate_book(book)
    assert len(problems) == 1
    assert the(problems, "book.json", None).reason.startswith("book.json cannot be read")


def test_missing_table(book: Path) -> None:
    (book / "cards.parquet").unlink()
    problems = validate_book(book)
    problem = the(problems, "cards", None)
    assert "table is missing" in problem.reason
    assert str(book / "cards.parquet") in problem.reason
    assert len(problems) == 1  # card_spend is not checked against absent cards


def test_corrupt_parquet_file_is_a_problem_not_a_traceback(book: Path) -> None:
    (book / "customers.parquet").write_bytes(b"this is not parquet at all \x00\x01\x02")
    problems = validate_book(book)
    problem = the(problems, "customers", None)
    assert "cannot be read" in problem.reason
    assert "customers.parquet" in problem.reason
    assert len(problems) == 1  # no noise from checks that needed the customers


def test_missing_snapshot_partition(book: Path) -> None:
    shutil.rmtree(monthly_path(book, "snapshots", "2025-02").parent)
    problems = validate_book(book)
    problem = the(problems, "snapshots", None)
    assert "no partition" in problem.reason
    assert problem.examples == "2025-02"
    assert len(problems) == 1


def test_months_in_book_json_must_be_consecutive(book: Path, meta: dict) -> None:
    meta["months"] = ["2025-02", "2025-01"]
    (book / "book.json").write_text(json.dumps(meta))
    problem = the(validate_book(book), "book.json", "months")
    assert "consecutive months in order" in problem.reason


# --- one table against its schema -----------------------------------------------------------


def test_wrong_column_type(tmp_path, tables, meta) -> None:
    tables["customers"]["birth_year"] = tables["customers"]["birth_year"].astype("float64")
    problems = problems_of(tmp_path, tables, meta)
    problem = the(problems, "customers", "birth_year")
    assert "wrong type: expected int16, found float64" in problem.reason
    assert len(problems) == 1


def test_duplicate_customer_id(tmp_path, tables, meta) -> None:
    tables["customers"].loc[3, "customer_id"] = 103
    problem = the(problems_of(tmp_path, tables, meta), "customers", "customer_id")
    assert "duplicate" in problem.reason
    assert "(2 rows)" in problem.reason
    assert problem.examples == "customer_id=103"


def test_duplicate_snapshot_row(tmp_path, tables, meta) -> None:
    feb = tables["snapshots"]["2025-02"]
    tables["snapshots"]["2025-02"] = pd.concat([feb, feb.iloc[[0]]], ignore_index=True)
    problem = the(problems_of(tmp_path, tables, meta), "snapshots", "customer_id, month")
    assert "duplicate" in problem.reason
    assert problem.examples == "customer_id=101, month=2025-02"


def test_negative_balance(tmp_path, tables, meta) -> None:
    for snap in tables["snapshots"].values():
        snap.loc[1, "aum_total"] -= snap.loc[1, "aum_current"] + 50.0
        snap.loc[1, "aum_current"] = -50.0  # the parts still add up to aum_total
    problems = problems_of(tmp_path, tables, meta)
    problem = the(problems, "snapshots", "aum_current")
    assert "must not be negative" in problem.reason
    assert "(2 rows in 2 months)" in problem.reason
    assert "customer_id=102, month=2025-01, aum_current=-50" in problem.examples
    assert len(problems) == 1


def test_products_held_inconsistent_with_flags(tmp_path, tables, meta) -> None:
    snap = tables["snapshots"]["2025-02"]
    snap.loc[2, "products_held"] = snap.loc[2, "products_held"] + 1
    problem = the(problems_of(tmp_path, tables, meta), "snapshots", "products_held")
    assert "1 + the number of has_* flags" in problem.reason
    assert "(1 row)" in problem.reason
    assert problem.examples.startswith("customer_id=103, month=2025-02, products_held=")


def test_first_use_date_before_issue_date(tmp_path, tables, meta) -> None:
    tables["cards"]["first_use_date"] = _dates("2024-05-01", "2025-02-02", None)
    problem = the(problems_of(tmp_path, tables, meta), "cards", "first_use_date")
    assert "before issue_date" in problem.reason
    assert problem.examples == "card_id=1001, first_use_date=2024-05-01, issue_date=2024-06-01"


# --- across tables --------------------------------------------------------------------------


def test_onboard_date_after_book_end(tmp_path, tables, meta) -> None:
    tables["customers"].loc[0, "onboard_date"] = pd.Timestamp("2025-03-02")
    problems = problems_of(tmp_path, tables, meta)
    problem = the(problems, "customers", "onboard_date")
    assert "after the book's last month-end (2025-02-28)" in problem.reason
    assert problem.examples == "customer_id=101, onboard_date=2025-03-02"


def test_snapshot_for_unknown_customer(tmp_path, tables, meta) -> None:
    tables["snapshots"]["2025-02"].loc[0, "customer_id"] = 999
    problem = the(problems_of(tmp_path, tables, meta), "snapshots", "customer_id")
    assert "unknown customer" in problem.reason
    assert problem.examples == "customer_id=999, month=2025-02"


def test_card_for_unknown_customer(tmp_path, tables, meta) -> None:
    tables["cards"].loc[1, "customer_id"] = 555
    problem = the(problems_of(tmp_path, tables, meta), "cards", "customer_id")
    assert "unknown customer" in problem.reason
    assert problem.examples == "card_id=1002, customer_id=555"


def test_every_problem_is_listed_in_one_pass(tmp_path, tables, meta) -> None:
    """Many unrelated faults at once: each is reported once, nothing else is."""
    tables["branches"]["branch_name"] = np.array([1, 2], dtype="int64")
    tables["rms"].loc[0, "branch_id"] = 9
    customers = tables["customers"]
    customers.loc[0, "rm_id"] = 77
    customers["segment"] = ["mass", "elderly", "women", "astronaut"]
    tables["relationships"].loc[2, "related_customer_id"] = 103
    tables["relationships"].loc[0, "since"] = pd.Timestamp("2025-03-05")
    cards = tables["cards"].drop(columns="credit_limit")
    cards.loc[1, "first_use_date"] = pd.Timestamp("2025-03-03")
    cards.loc[2, "issue_date"] = pd.Timestamp("2025-02-01")  # customer 104 joined 2025-02-20
    tables["cards"] = cards
    tables["snapshots"]["2025-01"] = _snapshot([101, 102, 103, 104], 1)  # 104 not yet joined
    tables["snapshots"]["2025-01"].loc[0, "aum_total"] += 5.0
    tables["card_spend"]["2025-01"] = _spend([1001, 1003], [10.0, 20.0])  # 1003 issued in Feb
    tables["card_spend"]["2025-02"].loc[1, "card_id"] = 4242
    book = write_book(tmp_path / "bad", tables, meta)
    monthly_path(book, "snapshots", "2025-03").parent.mkdir(parents=True)

    expected = {
        ("branches", "branch_name"): "wrong type: expected text",
        ("rms", "branch_id"): "unknown branch",
        ("customers", "rm_id"): "unknown RM",
        ("customers", "segment"): "must be one of",
        ("relationships", "related_customer_id"): "related to themselves",
        ("relationships", "since"): "after the book's last month-end",
        ("cards", "credit_limit"): "column is missing",
        ("cards", "first_use_date"): "after the book's last month-end",
        ("cards", "issue_date"): "before the customer's onboard_date",
        ("snapshots", "month"): "before the customer's onboarding month",
        ("snapshots", "aum_total"): "differs from the sum of",
        ("snapshots", None): "outside the book's months",
        ("card_spend", "month"): "before the card's issue month",
        ("card_spend", "card_id"): "unknown card",
    }
    problems = validate_book(book)
    assert {(p.table, p.column) for p in problems} == set(expected)
    assert len(problems) == len(expected)
    for (table, column), essence in expected.items():
        assert essence in the(problems, table, column).reason, (table, column)
    assert the(problems, "snapshots", "month").examples == (
        "customer_id=104, month=2025-01, onboard_date=2025-02-20"
    )


# --- telling the user -----------------------------------------------------------------------


def test_check_book_raises_a_readable_book_error(book: Path) -> None:
    (book / "book.json").unlink()
    with pytest.raises(BookError) as caught:
        check_book(book)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{book} is not a valid book: 1 problem:"
    assert lines[1].startswith("  - book.json: book.json is missing")
    assert "bookpulse book validate" in lines[-1]


def test_format_problems_renders_a_table() -> None:
    problems = [
        Problem("customers", "birth_year", "wrong type: expected datetime64[ns]", ""),
        Problem("snapshots", None, "no partition for 1 of the book's 2 months", "2025-02"),
    ]
    console = Console(width=200, record=True)
    console.print(format_problems(problems))
    text = console.export_text()
    assert "2 problems" in text
    assert "datetime64[ns]" in text  # shown as written, not taken for rich markup
    assert "2025-02" in text
    assert "snapshots: no partition" in describe_problems(Path("b"), problems)


def test_closed_rows_hold_no_products(tmp_path, tables, meta) -> None:
    snap = tables["snapshots"]["2025-02"]
    snap.loc[2, "status"] = "closed"  # closed, but still showing products
    problem = the(problems_of(tmp_path, tables, meta), "snapshots", "products_held")
    assert "0 once closed" in problem.reason


def test_slices_find_what_one_read_finds(small_book: Path, tmp_path: Path, monkeypatch) -> None:
    """Each file is checked a slice at a time; duplicates split across slices, bad values in
    any slice and unknown ids are found and counted as reading the file whole finds them."""
    import bookpulse.book.validate as validate

    book = tmp_path / "book"
    shutil.copytree(small_book, book)
    month = json.loads((book / "book.json").read_text())["months"][-1]
    snap = pd.read_parquet(monthly_path(book, "snapshots", month))
    first = snap.iloc[[0]]
    bad = snap.iloc[[5]].assign(customer_id=10**12, txn_count=-3)
    write_parquet(
        pd.concat([first, snap, first, bad], ignore_index=True),
        monthly_path(book, "snapshots", month),
    )
    customers = pd.read_parquet(book / "customers.parquet")
    write_parquet(pd.concat([customers, customers.iloc[[0]]]), book / "customers.parquet")

    def found(rows: int) -> list[tuple]:
        monkeypatch.setattr(validate, "BATCH_ROWS", rows)
        return sorted((p.table, p.column, p.reason) for p in validate_book(book))

    whole = found(10**9)
    assert len(whole) >= 4, whole
    assert any("duplicate" in r and "(3 rows)" in r for t, _, r in whole if t == "snapshots")
    assert any("duplicate" in r and "(2 rows)" in r for t, _, r in whole if t == "customers")
    assert found(97) == whole
    assert found(400) == whole


def _contacts(book: Path, month: str, n: int = 6) -> pd.DataFrame:
    """A worked list's contacts in `month`: the first n customers, the last of them held out."""
    customers = pd.read_parquet(book / "customers.parquet").head(n)
    month_end = pd.Timestamp(month) + pd.offsets.MonthEnd(0)
    treated = np.arange(n) < n - 1
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"].to_numpy("int64"),
            "card_id": pd.array([None] * n, dtype="Int64"),
            "list_month": (month_end - pd.offsets.MonthEnd(1)).as_unit("us"),
            "list": "retention",
            "action": "call",
            "channel": "rm_call",
            "assignment": np.where(treated, "treated", "control"),
            "reached": treated & (np.arange(n) % 2 == 0),
            "rm_id": customers["rm_id"].to_numpy("int32"),
        }
    )


def test_contacts_are_optional_and_checked_when_present(small_book: Path, tmp_path: Path):
    """A book may hold the actions taken on its lists (`contacts`, any month): they are
    checked like every table, and contacts dated after the book's end are named."""
    book = tmp_path / "book"
    shutil.copytree(small_book, book)
    months = json.loads((book / "book.json").read_text())["months"]
    assert validate_book(book) == []  # no contacts at all: a valid book
    write_parquet(_contacts(book, months[-1]), monthly_path(book, "contacts", months[-1]))
    assert validate_book(book) == []  # one month of contacts, the others without

    bad = _contacts(book, months[-2])
    cards = pd.read_parquet(book / "cards.parquet")["card_id"]
    bad.loc[0, "customer_id"] = 10**12  # nobody
    bad.loc[1, "card_id"] = int(cards.max()) + 1  # no such card
    bad.loc[2, "card_id"] = int(cards.iloc[0])  # a real card: fine
    bad.loc[3, "list_month"] = pd.Timestamp(months[-1]) + pd.offsets.MonthEnd(0)
    bad.loc[5, "reached"] = True  # the held-out customer, reached
    write_parquet(bad, monthly_path(book, "contacts", months[-2]))
    later = (pd.Period(months[-1], "M") + 1).strftime("%Y-%m")
    write_parquet(_contacts(book, later), monthly_path(book, "contacts", later))

    found = {(p.table, p.column): p.reason for p in validate_book(book)}
    assert "unknown customer" in found[("contacts", "customer_id")]
    assert "(1 row)" in found[("contacts", "customer_id")]
    assert (
        "unknown card" in found[("contacts", "card_id")]
        and "(1 row)" in found[("contacts", "card_id")]
    )
    assert "before the month of the contact" in found[("contacts", "list_month")]
    assert "control" in found[("contacts", "reached")]
    assert "outside the book's months" in found[("contacts", None)]
    assert {t for t, _ in found} == {"contacts"}
