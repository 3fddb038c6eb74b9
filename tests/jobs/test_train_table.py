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
from bookpulse.jobs.train_table import (
    TableError,
    TableRequest,
    choose_features,
    looks_like_id,
    period_values,
    read_table,
    split,
    table_threads,
    train_table,
)
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
    assert "warning (identifier)" in res.output and "leakage" not in res.output
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


def test_a_split_with_too_few_events_in_a_part_is_refused(tmp_path: Path) -> None:
    """Events only in the early periods: the test part would hold none, so the model could be
    neither judged nor promoted; refused before any fitting, saying which part."""
    from bookpulse.jobs.train_table import TableError, TableRequest, train_table

    rng = np.random.default_rng(4)
    n = 2400
    month = np.repeat(np.arange(1, 13), n // 12)
    y = (rng.random(n) < 0.2) & (month <= 8)
    frame = pd.DataFrame({"month": month, "x": rng.normal(size=n), "y": y.astype(int)})
    file = tmp_path / "early.csv"
    frame.to_csv(file, index=False)
    with pytest.raises(TableError, match=r"too few of one class.*test 0 events"):
        train_table(TableRequest(tmp_path / "home", file, "y", time_col="month", threads=1))


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
    choice = choose_features(df, [])
    assert {"CustomerId", "customer_no"} <= set(choice.excluded)
    assert {"amount_paid", "valid", "flag"} <= set(choice.features)
    frame = _as_model_frame(df, ["flag"])
    assert list(frame["flag"].cat.categories) == ["False", "True"]
    assert frame["flag"].notna().sum() == 134


# --- guards, reading, speed (issue 18) ------------------------------------------------------


def bank(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    """A churn extract with a known signal (age, products, logins, segment), as a warehouse
    gives it."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    products = rng.integers(1, 5, n)
    logins = rng.poisson(5, n)
    segment = rng.choice(["mass", "affluent", "private"], n)
    z = -1.0 + 0.04 * (age - 50) - 0.5 * products - 0.15 * logins + 0.8 * (segment == "mass")
    churned = rng.random(n) < 1 / (1 + np.exp(-z))
    return pd.DataFrame(
        {
            "Age": age,
            "Products": products,
            "Logins": logins,
            "Segment": segment,
            "Balance": np.round(rng.gamma(2.0, 3000.0, n), 2),
            "churned": churned.astype(int),
        }
    )


def _invoke(args: list[str], home: Path, monkeypatch):
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store")
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
        monkeypatch.setattr(module, "err", Console(width=200, stderr=True))
    return CliRunner().invoke(
        cli.app, ["train-table", *args, "--threads", "1"], env={"BOOKPULSE_HOME": str(home)}
    )


def _run_of(home: Path, output: str):
    from mlflow.tracking import MlflowClient

    from bookpulse.adapters import tracking

    tracking.configure(home)
    return MlflowClient().get_run(output.split("MLflow run ")[1].split()[0])


def test_another_models_output_is_flagged_as_leakage_and_clientnum_left_out(
    tmp_path: Path, monkeypatch
) -> None:
    """BankChurners.csv as it comes: CLIENTNUM (not in order), and two trailing
    Naive_Bayes_Classifier columns, another model's probabilities of the outcome."""
    df = bank()
    rng = np.random.default_rng(2)
    leak = np.clip(df["churned"] * 0.98 + rng.normal(0.01, 0.01, len(df)), 0, 1)
    df.insert(0, "CLIENTNUM", rng.choice(np.arange(700_000_000, 800_000_000), len(df), False))
    df["Attrition_Flag"] = np.where(df.pop("churned") == 1, "Attrited Customer", "Existing")
    nb = "Naive_Bayes_Classifier_Attrition_Flag_Card_Category_Contacts_Count_12_mon"
    df[f"{nb}_1"] = leak.round(5)
    df[f"{nb}_2"] = (1 - leak).round(5)
    file = tmp_path / "BankChurners.csv"
    df.to_csv(file, index=False)
    res = _invoke([str(file), "--target", "Attrition_Flag", "--positive", "Attrited Customer"],
                  tmp_path / "home", monkeypatch)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "left out CLIENTNUM: looks like an identifier (its name, and 3,000" in res.output
    assert "warning (leakage): check for leakage: Naive_Bayes_Classifier" in res.output
    assert "test AUC 1.000" in res.output or "test AUC 0.99" in res.output
    tags = _run_of(tmp_path / "home", res.output).data.tags
    assert tags["warning.leakage"].startswith("check for leakage: Naive_Bayes_Classifier")
    assert "CLIENTNUM" in tags["warning.identifier"]


def test_identifiers_by_name_and_by_distinct_values() -> None:
    """Churn_Modelling.csv's RowNumber, CustomerId, Surname (2,932 distinct on 10,000 rows);
    CLIENTNUM, client_num; real categoricals and amounts stay."""
    n = 10_000
    rng = np.random.default_rng(0)
    surnames = np.array([f"Surname{i}" for i in range(2932)])
    df = pd.DataFrame(
        {
            "RowNumber": np.arange(1, n + 1),
            "CustomerId": rng.permutation(np.arange(15_500_000, 15_500_000 + n)),
            "Surname": surnames[np.r_[np.arange(2932), rng.integers(0, 2932, n - 2932)]],
            "CLIENTNUM": rng.permutation(n) * 37 + 708_000_000,
            "client_num": rng.permutation(n),
            "ref_code": rng.permutation(n) * 3 + 11,  # no name hint: its values say so
            "CreditScore": rng.integers(350, 851, n),
            "Geography": rng.choice(["France", "Spain", "Germany"], n),
            "City": rng.choice([f"city{i}" for i in range(150)], n),
            "Balance": np.round(rng.gamma(2.0, 40_000, n), 2),
            "EstimatedSalary": rng.integers(10_000, 200_000, n),
        }
    )
    choice = choose_features(df, [])
    ids = {"RowNumber", "CustomerId", "Surname", "CLIENTNUM", "client_num", "ref_code"}
    assert set(choice.identifiers) == ids
    assert set(choice.features) == {"CreditScore", "Geography", "City", "Balance",
                                    "EstimatedSalary"}  # fmt: skip
    assert "its name" in choice.excluded["Surname"]
    assert "nearly all distinct" in choice.excluded["ref_code"]
    assert choose_features(df, [], keep=("CLIENTNUM",)).features[0] == "CLIENTNUM"
    # a panel: the same customer in every month is distinct within each month
    months = np.repeat(np.arange(12), 500)
    panel = pd.DataFrame({"CustomerId": np.tile(np.arange(500), 12), "x": np.arange(6000) % 7})
    assert choose_features(panel, [], periods=pd.Series(months)).identifiers == ["CustomerId"]
    for name in ("CLIENTNUM", "RowNumber", "CustomerId", "customer_no", "Surname", "ACCTNO",
                 "e-mail", "Unnamed: 0", "member_id"):  # fmt: skip
        assert looks_like_id(name), name
    for name in ("amount_paid", "valid", "NumOfProducts", "HasCrCard", "Tenure", "pdays"):
        assert not looks_like_id(name), name


def test_high_cardinality_text_left_out_unless_kept(tmp_path: Path, monkeypatch) -> None:
    df = bank(12_000)
    rng = np.random.default_rng(3)
    df["Comment"] = [f"note {i}" for i in rng.permutation(len(df)) % 5000]  # 5,000 levels
    df["Branch"] = rng.choice([f"branch {i}" for i in range(40)], len(df))
    choice = choose_features(df.drop(columns=["churned"]), [])
    assert choice.high_cardinality == ["Comment"] and "Branch" in choice.features
    assert choice.excluded["Comment"].startswith("high-cardinality text (")
    file = tmp_path / "notes.csv"
    df.to_csv(file, index=False)
    res = _invoke([str(file), "--target", "churned"], tmp_path / "home", monkeypatch)
    assert res.exit_code == 0, res.output
    assert "left out Comment: high-cardinality text" in res.output
    assert "warning (high cardinality): Comment" in res.output
    kept = train_table(TableRequest(tmp_path / "home", file, "churned", keep=("Comment",),
                                    threads=1))  # fmt: skip
    assert "Comment" in kept.features and "high_cardinality" not in kept.warnings


def _uci_like(n: int = 3000) -> pd.DataFrame:
    """UCI bank-marketing's shape: ';'-separated, quoted text, a 3-class outcome with some
    rows unlabelled, accented job names, and a YYYY-MM month."""
    df = bank(n, seed=4)
    rng = np.random.default_rng(5)
    outcome = np.where(df.pop("churned") == 1, "yes", np.where(rng.random(n) < 0.3, "maybe", "no"))
    df["job"] = rng.choice(["técnico", "gérant", "ouvrière", "admin."], n)
    df["month"] = pd.period_range("2022-01", periods=18, freq="M").astype(str)[
        np.sort(rng.integers(0, 18, n))
    ]
    df["y"] = pd.Series(outcome).where(rng.random(n) > 0.01)  # 1% never heard back
    return df


def test_semicolon_latin1_file_with_classes_unlabelled_rows_and_embargo(
    tmp_path: Path, monkeypatch
) -> None:
    df = _uci_like()
    file = tmp_path / "bank-full.csv"
    df.to_csv(file, sep=";", index=False, encoding="latin-1", quoting=2)  # QUOTE_NONNUMERIC
    home = tmp_path / "home"
    res = _invoke([str(file), "--target", "y", "--positive", "yes"], home, monkeypatch)
    assert res.exit_code == 2
    assert "not UTF-8" in res.output and "--encoding latin-1" in res.output
    with pytest.raises(TableError, match="try --encoding latin-1"):
        read_table(file)
    sniffed = read_table(file, encoding="latin-1")
    assert list(sniffed.columns) == list(df.columns) and sniffed["job"].str.contains("é").any()
    given = read_table(file, sep=";", encoding="latin-1")
    pd.testing.assert_frame_equal(sniffed, given)
    with pytest.raises(TableError, match="looks like a ';'-separated file: try --sep ';'"):
        read_table(file, sep=",", encoding="latin-1")
    args = [str(file), "--target", "y", "--positive", "yes", "--encoding", "latin-1",
            "--time-col", "month", "--horizon", "3"]  # fmt: skip
    res = _invoke(args, home, monkeypatch)
    assert res.exit_code == 0, res.output
    unlabelled = int(df["y"].isna().sum())
    assert f"{unlabelled} rows have no target and were left out" in res.output
    assert (
        "the target has 3 classes: 'yes' is the event, 'no' and 'maybe' are merged as "
        "non-events" in res.output
    )
    assert "embargo: 2 period(s) (" in res.output
    run = _run_of(home, res.output)
    assert run.data.params["embargo_periods"] == "2" and run.data.params["horizon"] == "3"
    assert {"warning.unlabelled_rows", "warning.merged_classes"} <= set(run.data.tags)


def test_tab_separated_sniffed_and_a_header_only_or_empty_file_says_so(tmp_path: Path) -> None:
    df = bank(50)
    tab = tmp_path / "extract.txt"
    df.to_csv(tab, sep="\t", index=False)
    pd.testing.assert_frame_equal(read_table(tab), df)
    header = tmp_path / "header.csv"
    header.write_text("Age,Products,churned\n")
    with pytest.raises(TableError, match="the file has no rows"):
        read_table(header)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TableError, match="the file is empty"):
        read_table(empty)
    with pytest.raises(TableError, match="the file has no rows"):
        train_table(TableRequest(tmp_path, header, "churned"))


def test_time_columns_that_are_not_full_dates_are_refused() -> None:
    with pytest.raises(TableError, match="month names without a year") as e:
        period_values(pd.Series(["may", "jun", "jul", "may"]), "month")
    assert "split out of order" in str(e.value)
    with pytest.raises(TableError, match="not dates or periods"):
        period_values(pd.Series(["31/12/2023", "01/01/2024"]), "when")
    accepted = {
        "iso": pd.Series(["2023-05-31", "2023-06-30"]),
        "month": pd.Series(["2023-05", "2023-06"]),
        "yyyymm": pd.Series([202305, 202306]),
        "yyyymm text": pd.Series(["202305", "202306"]),
        "ordinal": pd.Series([1, 2]),
        "datetime": pd.Series(pd.to_datetime(["2023-05-31", "2023-06-30"])),
    }
    for what, values in accepted.items():
        got = period_values(values, what)
        assert got.iloc[0] < got.iloc[1], what
    assert period_values(pd.Series([202312, 202401]), "m").dt.year.tolist() == [2023, 2024]


@pytest.mark.parametrize("horizon", [1, 2, 3, 4])
def test_horizon_leaves_an_embargo_of_horizon_minus_one_periods(horizon: int) -> None:
    df = pd.DataFrame({"when": np.repeat(np.arange(1, 25), 40)})
    parts, t = split(df, np.zeros(len(df), dtype=int), "when", horizon)
    seen = {k: sorted(set(df["when"].iloc[v])) for k, v in parts.items()}
    assert seen["test"][0] - seen["calibration"][-1] - 1 == horizon - 1
    assert seen["train"][-1] < seen["valid"][0] and seen["valid"][-1] < seen["calibration"][0]
    assert seen["test"][-1] == 24


def test_thread_default_and_a_fresh_store_made_once(tmp_path: Path) -> None:
    from bookpulse.adapters import tracking

    assert table_threads(0, 10_000) == 1 and table_threads(3, 10_000) == 3
    assert 1 <= table_threads(0, 10_000_000) <= (os.cpu_count() or 1)
    assert tracking.create_store(tmp_path) is True
    assert tracking.create_store(tmp_path) is False
    assert not [p for p in tmp_path.iterdir() if p.name != "mlflow.db"]
