"""The command line: what a user types and sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.book import io

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch) -> None:
    """Tables wrap at 80 columns in a captured stream; read them at a terminal's width."""
    from rich.console import Console

    for module in (cli, cli_tables):  # cli prints a few lines itself, cli_tables the rest
        monkeypatch.setattr(module, "console", Console(width=200))
        monkeypatch.setattr(module, "err", Console(width=200, stderr=True))


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(cli.app, list(args), env=env)


def test_generate_validate_and_summarise_a_book(tmp_path: Path) -> None:
    out = tmp_path / "book"
    res = run(
        "book",
        "generate",
        "--customers",
        "600",
        "--months",
        "6",
        "--seed",
        "5",
        "--end-month",
        "2026-08",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    assert "book written" in res.output
    meta = json.loads((out / "book.json").read_text())
    assert meta["customers"] == 600 and meta["months"][-1] == "2026-08"
    res = run("book", "validate", str(out))
    assert res.exit_code == 0, res.output
    assert "valid" in res.output
    res = run("book", "summary", str(out))
    assert res.exit_code == 0, res.output
    for word in ("potential", "elderly", "ceiling AUC", "card first use"):
        assert word in res.output


def test_bad_month_is_refused_with_the_expected_format(tmp_path: Path) -> None:
    res = run("book", "generate", "--end-month", "2026/10", "--out", str(tmp_path / "b"))
    assert res.exit_code == 2
    assert "YYYY-MM" in res.output
    assert not (tmp_path / "b").exists()


def test_generate_refuses_to_overwrite_an_existing_book(tmp_path: Path) -> None:
    out = tmp_path / "book"
    out.mkdir()
    keep = out / "precious.txt"
    keep.write_text("do not lose me")
    res = run("book", "generate", "--customers", "200", "--months", "4", "--out", str(out))
    assert res.exit_code == 2
    assert "--force" in res.output
    assert keep.read_text() == "do not lose me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book"]  # no temporary left behind


def test_validate_reports_problems_and_exits_non_zero(tmp_path: Path, small_book: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_book, broken)
    (broken / "cards.parquet").unlink()
    res = run("book", "validate", str(broken))
    assert res.exit_code == 1
    assert "cards" in res.output
    assert "Traceback" not in res.output


def test_validate_a_folder_that_is_not_a_book(tmp_path: Path) -> None:
    res = run("book", "validate", str(tmp_path))
    assert res.exit_code == 1
    assert "book.json" in res.output


def test_book_home_comes_from_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = run(
        "book",
        "generate",
        "--customers",
        "200",
        "--months",
        "4",
        "--end-month",
        "2026-06",
        env={"BOOKPULSE_HOME": str(home)},
    )
    assert res.exit_code == 0, res.output
    assert (home / "book" / "book.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_demo_generates_validates_and_summarises(tmp_path: Path, monkeypatch) -> None:
    from bookpulse.jobs import demo

    monkeypatch.setattr(demo, "CUSTOMERS", 800)
    monkeypatch.setattr(demo, "MONTHS", 24)
    env = {"BOOKPULSE_HOME": str(tmp_path)}
    res = run("demo", env=env)
    assert res.exit_code == 0, res.output
    assert "valid" in res.output and "ceiling AUC" in res.output
    stamp = (tmp_path / "book" / "book.json").stat().st_mtime_ns
    res = run("demo", env=env)  # a second run reuses the same book
    assert res.exit_code == 0, res.output
    assert "reusing" in res.output
    assert (tmp_path / "book" / "book.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("args", [["--help"], ["book", "--help"], ["book", "generate", "--help"]])
def test_help_explains(args: list[str]) -> None:
    res = run(*args)
    assert res.exit_code == 0
    assert "book" in res.output.lower()


def test_publishing_leaves_nothing_when_the_work_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), io.publishing(target) as tmp:
        (tmp / "half.parquet").write_text("half")
        raise RuntimeError("killed mid-run")
    assert list(tmp_path.iterdir()) == []


def test_publishing_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), io.publishing(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("failed")
    assert (target / "old.txt").read_text() == "old"
    with io.publishing(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_features_build_writes_checked_frames(tmp_path: Path, small_book: Path) -> None:
    import pandas as pd

    out = tmp_path / "f" / "oct.parquet"
    res = run(
        "features", "build", "--as-of", "2026-10", "--book", str(small_book), "--out", str(out)
    )
    assert res.exit_code == 0, res.output
    customers = pd.read_parquet(out)
    cards = pd.read_parquet(tmp_path / "f" / "oct_cards.parquet")
    assert customers["customer_id"].is_unique and (customers["as_of"] == "2026-10-31").all()
    assert {"aum_log", "products_held", "linked_attrited_3m"} <= set(customers.columns)
    assert {"card_id", "days_since_issue", "holder_tier"} <= set(cards.columns)
    assert sorted(p.name for p in out.parent.iterdir()) == ["oct.parquet", "oct_cards.parquet"]


def test_features_build_default_location_and_clean_errors(tmp_path: Path, small_book) -> None:
    env = {"BOOKPULSE_HOME": str(tmp_path)}
    res = run("features", "build", "--as-of", "2026-09", "--book", str(small_book), env=env)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "features" / "2026-09" / "customers.parquet").is_file()
    res = run("features", "build", "--as-of", "2027-01", "--book", str(small_book), env=env)
    assert res.exit_code == 2
    assert "not a month of the book" in res.output and "Traceback" not in res.output
    res = run("features", "build", "--as-of", "2026-10", "--book", str(tmp_path / "nobook"))
    assert res.exit_code == 2 and "book.json" in res.output


def test_demo_does_not_replace_a_book_it_did_not_make(tmp_path: Path) -> None:
    book = tmp_path / "book"
    book.mkdir()
    (book / "book.json").write_text('{"generator": "bank warehouse import", "months": []}')
    res = run("demo", env={"BOOKPULSE_HOME": str(tmp_path)})
    assert res.exit_code == 2 and "will not replace" in res.output
    assert "warehouse" in (book / "book.json").read_text()
