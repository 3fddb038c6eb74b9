"""Flat-table mode on an extract an analyst might bring."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.model.dataset import training_set
from bookpulse.specs import load_model_specs


@pytest.fixture(scope="module")
def extract(trainable_book: Path, tmp_path_factory) -> Path:
    """The churn training set flattened like a warehouse extract: ids, names, strings."""
    spec = load_model_specs()["churn"]
    months = [str(p) for p in pd.period_range("2025-03", "2026-02", freq="M")]
    df = training_set(trainable_book, spec, months)
    rng = np.random.default_rng(0)
    flat = pd.DataFrame(
        {
            "RowNumber": np.arange(1, len(df) + 1),
            "CustomerId": df["customer_id"].to_numpy() * 10 + rng.integers(0, 9, len(df)),
            "Surname": [f"Name{i:07d}" for i in rng.permutation(len(df))],
            "Snapshot": df["as_of"].dt.strftime("%Y-%m-%d"),
            "Segment": df["segment"].astype(str),
            "Tier": df["tier"].astype(str),
            "Products": df["products_held"],
            "Balance": np.expm1(df["aum_log"]).round(2),
            "Logins3m": df["logins_3m"],
            "LoginTrend": df["logins_trend_3m"],
            "TxnVsYear": df["txn_vs_12m"],
            "Complaints3m": df["complaints_3m"],
            "Payroll": df["has_payroll"].astype(bool),
            "Exited": np.where(df["churned"] == 1, "yes", "no"),
        }
    )
    path = tmp_path_factory.mktemp("extract") / "Bank Churn Extract.csv"
    flat.to_csv(path, index=False)
    return path


def test_train_table_out_of_time_leaves_identifiers_out(
    extract: Path, tmp_path: Path, monkeypatch
) -> None:
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store")
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
    res = CliRunner().invoke(
        cli.app,
        [
            "train-table",
            str(extract),
            "--target",
            "Exited",
            "--positive",
            "yes",
            "--time-col",
            "Snapshot",
            "--threads",
            "1",
        ],
        env={"BOOKPULSE_HOME": str(tmp_path)},
    )
    assert res.exit_code == 0, res.output
    for col in ("RowNumber", "CustomerId", "Surname"):
        assert f"left out {col}" in res.output
    assert "Snapshot: used for the out-of-time split" in res.output
    auc = float(res.output.split("test AUC ")[1].split(",")[0])
    assert auc > 0.75
    assert (tmp_path / "mlflow.db").is_file()


def test_train_table_stratified_and_clear_errors(extract: Path, tmp_path: Path) -> None:
    from bookpulse.errors import BookpulseError
    from bookpulse.jobs.train_table import TableError, TableRequest, train_table

    def table(target: str, **options):
        return train_table(TableRequest(tmp_path, extract, target, **options))

    r = table("Exited", positive="yes", drop=("Snapshot",), threads=1)
    assert "Surname" not in r.features and "Segment" in r.features
    share = {k: v / sum(r.rows.values()) for k, v in r.rows.items()}
    assert share["test"] == pytest.approx(0.2, abs=0.01)
    assert r.metrics["auc"] > 0.75
    assert issubclass(TableError, BookpulseError)  # the CLI prints it as a message
    with pytest.raises(TableError, match="--positive"):
        table("Exited")
    with pytest.raises(TableError, match="no column 'Churn'"):
        table("Churn")
    with pytest.raises(TableError, match="no row has target value"):
        table("Exited", positive="maybe")


@pytest.mark.parametrize("periods", [4, 5, 6, 7, 9, 12])
def test_out_of_time_split_gives_every_part_whole_periods(periods: int) -> None:
    from bookpulse.jobs.train_table import split

    df = pd.DataFrame({"when": np.repeat(np.arange(periods), 50)})
    parts, _ = split(df, np.zeros(len(df), dtype=int), "when")
    assert all(len(v) > 0 for v in parts.values())
    seen = {k: set(df["when"].iloc[v]) for k, v in parts.items()}
    order = ["train", "valid", "calibration", "test"]
    assert all(max(seen[a]) < min(seen[b]) for a, b in zip(order, order[1:], strict=False))


def test_identifier_names_and_text_levels() -> None:
    from bookpulse.jobs.train_table import _as_model_frame, choose_features

    n = 200
    df = pd.DataFrame(
        {
            "CustomerId": np.arange(1000, 1000 + n)[::-1],
            "customer_no": np.arange(n) * 7,
            "amount_paid": np.arange(n) * 1.5,
            "valid": np.arange(n) % 3,
            "flag": pd.Series([True, False, None] * 66 + [True, False], dtype="object"),
        }
    )
    features, excluded = choose_features(df, [])
    assert {"CustomerId", "customer_no"} <= set(excluded)
    assert {"amount_paid", "valid", "flag"} <= set(features)
    frame = _as_model_frame(df, ["flag"])
    assert list(frame["flag"].cat.categories) == ["False", "True"]
    assert frame["flag"].notna().sum() == 134
