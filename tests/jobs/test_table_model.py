"""Flat-table models in the registry: registered by `train-table` (pyfunc, signature, card,
spec), promoted through the book models' gates (DeLong on the challenger's test rows),
listed by `runs` and `promotions`, and scored by `score-table` against the training schema.

The extracts are made here (a few thousand rows, a known signal), not from a book."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.adapters import registry, tracking
from bookpulse.jobs.table_model import (
    SPEC_FILE,
    TEST_ROWS_FILE,
    ScoreTableRequest,
    TableSpec,
    conform,
    score_table,
)
from bookpulse.jobs.train_table import LABEL, TableError, TableRequest, train_table

REGISTERED = "bookpulse-table-bank_churn"


def extract(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Customers of a bank with an exit flag driven by region, balance, tenure, payroll and
    logins; an identifier and a month-end column as a warehouse would give them."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], n)
    balance = np.round(rng.gamma(2.0, 1500.0, n), 2)
    tenure = rng.integers(0, 30, n)
    payroll = rng.random(n) < 0.4
    logins = rng.poisson(6, n).astype(float)
    logins[rng.random(n) < 0.05] = np.nan
    month = pd.date_range("2024-01-31", periods=12, freq="ME")[rng.integers(0, 12, n)]
    z = (
        2.5
        + 1.5 * (region == "south")
        - 0.0005 * balance
        - 0.1 * tenure
        - 1.5 * payroll
        - 0.5 * np.nan_to_num(logins, nan=3.0)
    )
    exited = rng.random(n) < 1 / (1 + np.exp(-z))
    return pd.DataFrame(
        {
            "CustomerId": 100_000 + rng.permutation(n),
            "Snapshot": month.strftime("%Y-%m-%d"),
            "Region": region,
            "Balance": balance,
            "Tenure": tenure,
            "Payroll": payroll,
            "Logins": logins,
            "Exited": np.where(exited, "yes", "no"),
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A home with bank_churn version 1 registered (not promoted) from `Bank Churn.csv`."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    root = tmp_path_factory.mktemp("table-model")
    home = root / "home"
    file = root / "Bank Churn.csv"
    extract().to_csv(file, index=False)
    result = train_table(TableRequest(home, file, "Exited", positive="yes", threads=1))
    return home, file, result


def _spec_of(run_id: str) -> TableSpec:
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/validation/{SPEC_FILE}")
    return TableSpec.model_validate_json(text)


def test_train_table_registers_a_challenger_with_signature_card_and_spec(trained) -> None:
    home, file, r = trained
    assert (r.registered_name, r.version) == (REGISTERED, "1")
    tracking.configure(home)
    client = MlflowClient()
    version = client.get_model_version_by_alias(REGISTERED, tracking.CHALLENGER)
    assert str(version.version) == r.version and version.run_id == r.run_id
    # the card: file, target, event, split, left-out columns with the reason, metrics, limits
    card = version.description
    for text in ("Model card: bookpulse-table-bank_churn", "`Exited` = `yes`", "Bank Churn.csv"):
        assert text in card
    assert "stratified random" in card and f"| CustomerId | {r.excluded['CustomerId']} |" in card
    assert "| auc |" in card and "## Limits" in card and "Snapshot" in card
    tags = version.tags
    assert tags["mode"] == "flat-table" and tags["target"] == "Exited"
    assert tags["positive"] == "yes" and tags["gates.min_auc"] == "0.6"
    assert "Region:category" in tags["features"]
    # the pyfunc: a signature over the model's input and an input example
    info = mlflow.models.get_model_info(f"models:/{REGISTERED}/{r.version}")
    assert info.signature.inputs.input_names() == r.features
    assert info.saved_input_example_info is not None
    # the spec: each feature with its type, levels, the columns left out
    spec = _spec_of(r.run_id)
    kinds = {f.name: f.kind for f in spec.features}
    assert kinds == {
        "Snapshot": "category",
        "Region": "category",
        "Balance": "number",
        "Tenure": "number",
        "Payroll": "flag",
        "Logins": "number",
    }
    assert spec.feature("Region").levels == ["east", "north", "south", "west"]
    assert spec.excluded == r.excluded and "CustomerId" in spec.excluded
    assert (spec.target, spec.positive, spec.split) == ("Exited", "yes", "stratified random")
    assert spec.rows == r.rows and spec.gates.max_auc_drop == 0.01
    # the guards' warnings travel with the model
    assert spec.warnings == r.warnings and "identifier" in spec.warnings
    assert "## Warnings at training" in card and tags["warning.identifier"]
    # the test rows, for promotion: the model's input and the label
    rows = pd.read_parquet(
        mlflow.artifacts.download_artifacts(f"runs:/{r.run_id}/validation/{TEST_ROWS_FILE}")
    )
    assert list(rows.columns) == [*r.features, LABEL] and len(rows) == r.rows["test"]


def test_promote_gates_delong_history_rollback_and_same_rows(trained, tmp_path) -> None:
    from bookpulse.jobs.promote import PromoteRequest, promote, promotions, rollback

    home, file, first = trained

    def promote_it():
        (decision,) = promote(PromoteRequest(home, "bank_churn"))
        return decision

    def retrain(path: Path = file, **options):
        request = TableRequest(home, path, "Exited", positive="yes", threads=1, **options)
        return train_table(request)

    one = promote_it()  # no champion: the gates alone
    assert one.outcome == "promoted" and one.champion_before is None
    assert one.gates == {"min_auc": True, "max_calibration_error": True}
    assert one.model == REGISTERED and "auc_diff" not in one.metrics
    assert f"run {first.run_id}" in one.rows_from
    assert promote_it().outcome == "unchanged"

    # a challenger that leaves out a strong column: judged on its own test rows, which keep
    # the column the champion reads
    two = retrain(drop=("Logins",))
    tracking.configure(home)
    rows = pd.read_parquet(
        mlflow.artifacts.download_artifacts(f"runs:/{two.run_id}/validation/{TEST_ROWS_FILE}")
    )
    assert "Logins" not in two.features and "Logins" in rows.columns
    kept = promote_it()
    assert kept.outcome == "kept" and kept.verdict in ("worse", "inconclusive")
    assert kept.gates["not_worse"] is False and "DeLong" in kept.reason
    assert kept.metrics["rows"] == two.rows["test"]
    m = kept.metrics
    assert m["auc_diff"] == pytest.approx(m["challenger_auc"] - m["champion_auc"], abs=1e-12)
    assert f"run {two.run_id}" in kept.rows_from

    # the same recipe on the same file: the same scores, equivalent, promoted
    three = retrain()
    promoted = promote_it()
    assert promoted.outcome == "promoted" and promoted.verdict == "equivalent"
    assert promoted.champion_after == three.version and promoted.champion_before == "1"
    assert "note" not in promoted.reason  # the same file, split alike: the same held-out rows

    back = rollback(home, "bank_churn")
    assert (back.champion_before, back.champion_after) == (three.version, "1")
    outcomes = [d.outcome for d in promotions(home, "bank_churn")]
    assert outcomes == ["rolled_back", "promoted", "kept", "unchanged", "promoted"]
    assert promotions(home, REGISTERED)[1].verdict == "equivalent"  # the registered name too

    # a challenger whose file lacks a column the champion reads: refused, nothing recorded
    narrow = tmp_path / "Bank Churn.csv"
    pd.read_csv(file).drop(columns=["Tenure"]).to_csv(narrow, index=False)
    four = retrain(narrow)
    with pytest.raises(registry.RegistryError, match="cannot score .* it needs Tenure"):
        promote_it()
    assert len(promotions(home, "bank_churn")) == 5
    tracking.configure(home)
    champion = MlflowClient().get_model_version_by_alias(REGISTERED, tracking.CHAMPION)
    assert str(champion.version) == "1" and four.version == "4"


def test_runs_takes_a_table_model_by_name(trained) -> None:
    from bookpulse.jobs.runs import runs
    from bookpulse.specs import SpecError

    home, _, r = trained
    metrics, _ = runs(home, "bank_churn")
    assert "auc" in metrics.index and r.run_id[:8] in metrics.columns
    assert runs(home, "Bank Churn")[0].shape == metrics.shape  # named as the file is
    with pytest.raises(SpecError, match="unknown model 'nope'") as exc:
        runs(home, "nope")
    assert re.search(r"book models [a-z_, ]*churn", str(exc.value))
    assert "table models bank_churn" in str(exc.value)


def _new_extract(tmp_path: Path, rows: int = 600) -> Path:
    path = tmp_path / "new.csv"
    extract(rows, seed=11).drop(columns=["Exited"]).to_csv(path, index=False)
    return path


def test_score_table_matches_the_pyfunc_with_deciles_and_reasons(trained, tmp_path) -> None:
    home, _, _ = trained
    path = _new_extract(tmp_path)
    out = tmp_path / "scores.parquet"
    res = score_table(ScoreTableRequest(home, "bank_churn", path, out))
    tracking.configure(home)
    champion = MlflowClient().get_model_version_by_alias(REGISTERED, tracking.CHAMPION)
    assert res.version == str(champion.version) and res.rows == 600
    got = pd.read_parquet(out)
    assert got["row"].tolist() == list(range(1, 601))
    df = pd.read_csv(path)
    assert (got["CustomerId"] == df["CustomerId"]).all()  # left out in training: copied
    # the same probabilities as the registered pyfunc on the same rows
    pyfunc = mlflow.pyfunc.load_model(f"models:/{REGISTERED}@champion")
    spec = _spec_of(champion.run_id)
    frame = conform(df, spec).frame
    payload = tracking.example_input(frame, [f.name for f in spec.features], rows=len(frame))
    want = pyfunc.predict(payload)["probability"].to_numpy()
    assert np.allclose(got["probability"].to_numpy(), want, atol=1e-9)
    # deciles within the extract: 1 holds the highest tenth
    counts = got["decile"].value_counts()
    assert sorted(counts.index) == list(range(1, 11)) and counts.between(55, 65).all()
    top, bottom = got.loc[got["decile"] == 1, "probability"], got.loc[got["decile"] == 10]
    assert top.min() >= bottom["probability"].max()
    for j in (1, 2, 3):
        feature, sentence = got[f"reason{j}_feature"], got[f"reason{j}_sentence"]
        sign = np.where(got[f"reason{j}_contribution"] >= 0, "raises", "lowers")
        assert (got[f"reason{j}_direction"] == sign).all()
        pattern = [
            re.fullmatch(rf"{re.escape(f)} = .+ {d} the score", s) is not None
            for f, d, s in zip(feature, sign, sentence, strict=True)
        ]
        assert all(pattern)
    first = got["reason1_contribution"].abs()
    assert (first >= got["reason2_contribution"].abs() - 1e-12).all()
    row = got.loc[got["reason1_feature"] == "Balance"].iloc[0]
    assert row["reason1_sentence"].startswith(f"Balance = {df.loc[row['row'] - 1, 'Balance']:g}")
    assert set(got["model"]) == {REGISTERED}


def test_schema_problems_one_message_and_nothing_written(trained, tmp_path) -> None:
    home, _, _ = trained
    df = extract(300, seed=12).drop(columns=["Exited", "Tenure"])
    df["Region"] = df["Region"].astype(object)
    df.loc[[3, 8], "Region"] = "mars"
    df["Balance"] = df["Balance"].astype(object)
    df.loc[5, "Balance"] = "abc"
    df["Notes"] = "free text"
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    out.write_text("old scores\n")
    with pytest.raises(TableError) as exc:
        score_table(ScoreTableRequest(home, "bank_churn", path, out))
    message = str(exc.value)
    assert "nothing was scored" in message
    assert "missing columns: Tenure" in message
    assert "Balance: trained as numbers; 1 values cannot be read as numbers (e.g. 'abc')" in (
        message
    )
    assert "Region: levels not seen in training, scored as unseen: 'mars' (2 rows)" in message
    assert "extra columns, ignored: Notes" in message
    assert out.read_text() == "old scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "scores.csv"]
    # a new level alone is scored (as unseen) and noted
    fine = extract(300, seed=12).drop(columns=["Exited"])
    fine.loc[[3, 8], "Region"] = "mars"
    fine.to_csv(path, index=False)
    res = score_table(ScoreTableRequest(home, "bank_churn", path, out))
    assert res.notes == ["Region: levels not seen in training, scored as unseen: 'mars' (2 rows)"]
    scored = pd.read_csv(out)
    assert len(scored) == 300
    for i in (3, 8):  # a reason on the unseen level says so
        for j in (1, 2, 3):
            if scored.loc[i, f"reason{j}_feature"] == "Region":
                assert scored.loc[i, f"reason{j}_sentence"].startswith(
                    "Region = mars (not seen in training) "
                )


def test_score_table_refuses_an_unknown_model_and_a_bad_out(trained, tmp_path) -> None:
    from bookpulse.specs import SpecError

    home, _, _ = trained
    path = _new_extract(tmp_path, 50)
    with pytest.raises(TableError, match="name a .csv or .parquet file"):
        score_table(ScoreTableRequest(home, "bank_churn", path, tmp_path / "scores.xlsx"))
    with pytest.raises(SpecError, match="table models bank_churn"):
        score_table(ScoreTableRequest(home, "bank_exits", path, tmp_path / "s.csv"))
    assert not (tmp_path / "s.csv").exists()
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(TableError, match="is a folder"):
        score_table(ScoreTableRequest(home, "bank_churn", path, tmp_path / "folder.csv"))


def test_carried_columns_never_overwrite_the_scores_and_files_keep_their_mode(
    trained, tmp_path
) -> None:
    home, _, _ = trained
    df = extract(80, seed=13).drop(columns=["Exited"]).assign(probability=0.5, decile="A")
    path = tmp_path / "with_scores.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "s.csv"
    with pytest.raises(TableError, match="--carry probability: the scores have a column"):
        score_table(ScoreTableRequest(home, "bank_churn", path, out, carry=("probability",)))
    assert not out.exists()
    out.write_text("old\n")
    out.chmod(0o640)
    score_table(ScoreTableRequest(home, "bank_churn", path, out, carry=("CustomerId",)))
    assert out.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its permissions
    scored = pd.read_csv(out)
    assert scored["probability"].between(0, 1).all() and scored["probability"].nunique() > 1
    fresh = tmp_path / "fresh.csv"
    score_table(ScoreTableRequest(home, "bank_churn", path, fresh))
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_train_promote_and_score_by_command_alone(tmp_path: Path, monkeypatch) -> None:
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store")
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
    env = {"BOOKPULSE_HOME": str(tmp_path / "home")}
    file = tmp_path / "exits.csv"
    extract(2500, seed=3).to_csv(file, index=False)

    def run(*args: str):
        return CliRunner().invoke(cli.app, list(args), env=env)

    res = run(
        "train-table", str(file), "--target", "Exited", "--positive", "yes",
        "--time-col", "Snapshot", "--threads", "1", "--name", "Exits Q3",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "registered bookpulse-table-exits_q3 version 1 (challenger)" in res.output
    res = run("promote", "exits_q3")
    assert res.exit_code == 0, res.output
    assert "promoted" in res.output and "judged on the test rows of version 1" in res.output
    res = run("runs", "exits_q3")
    assert res.exit_code == 0 and "auc" in res.output
    res = run("promotions", "exits_q3")
    assert res.exit_code == 0 and "promoted" in res.output
    new = _new_extract(tmp_path, 200)
    out = tmp_path / "scores.csv"
    res = run("score-table", "exits_q3", str(new), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "scored 200 rows with bookpulse-table-exits_q3 version 1" in res.output
    scored = pd.read_csv(out)
    assert {"probability", "decile", "reason1_sentence", "CustomerId", "Snapshot"} <= set(scored)
    pd.read_csv(new).drop(columns=["Logins"]).to_csv(new, index=False)
    res = run("score-table", "exits_q3", str(new), "--out", str(out))
    assert res.exit_code == 2 and "missing columns: Logins" in res.output
    assert len(pd.read_csv(out)) == 200  # the earlier scores stay
    res = run("promote", "exits_q4")
    assert res.exit_code == 2 and "unknown model 'exits_q4'" in res.output


def test_score_table_reads_an_extract_as_the_training_file_was_read(trained, tmp_path) -> None:
    """A ;-separated latin-1 export: told once at training, remembered for scoring."""
    home, _, _ = trained
    towns = {"north": "Zürich", "south": "Genève", "east": "Bern", "west": "Lugano"}

    def export(path: Path, rows: int, seed: int) -> Path:
        df = extract(rows, seed=seed).assign(Region=lambda d: d["Region"].map(towns))
        df.to_csv(path, sep=";", encoding="latin-1", index=False)
        return path

    file = export(tmp_path / "swiss.csv", 4000, 0)
    r = train_table(
        TableRequest(home, file, "Exited", positive="yes", threads=1, sep=";", encoding="latin-1")
    )
    from bookpulse.jobs.promote import PromoteRequest, promote

    assert promote(PromoteRequest(home, "swiss"))[0].outcome == "promoted"
    tracking.configure(home)
    spec = _spec_of(r.run_id)
    assert spec.reading == {"sep": ";", "encoding": "latin-1"}
    assert "Genève" in spec.feature("Region").levels
    new = export(tmp_path / "new.csv", 300, 21)
    out = tmp_path / "scores.csv"
    res = score_table(ScoreTableRequest(home, "swiss", new, out))  # no --sep, no --encoding
    assert res.rows == 300 and res.notes == []  # every town read as trained


def test_a_version_trained_with_a_leakage_warning_is_not_promoted(tmp_path: Path) -> None:
    """Another model's output left in the extract makes the test AUC 1.000: the version is
    registered with its warning, and promotion keeps it out, saying why."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    frame = extract(seed=3)
    rng = np.random.default_rng(3)
    frame["Other_Model_Score"] = np.where(frame["Exited"] == "yes", 0.99, 0.01) + rng.normal(
        0, 0.001, len(frame)
    )
    file = tmp_path / "leaky.csv"
    frame.to_csv(file, index=False)
    home = tmp_path / "home"
    result = train_table(TableRequest(home, file, "Exited", positive="yes", threads=1))
    assert result.metrics["auc"] > 0.99
    assert "leakage" in result.warnings
    tracking.configure(home)
    from bookpulse.jobs.table_model import promote_table, table_named

    decision = promote_table(home, table_named("leaky"))
    assert decision.outcome == "kept", decision
    assert "leakage" in decision.reason and "Other_Model_Score" in decision.reason
    assert registry.alias_version("bookpulse-table-leaky", tracking.CHAMPION) is None


def test_one_honest_strong_driver_warns_but_does_not_block_promotion(tmp_path: Path) -> None:
    """One feature carrying most of the gain is worth a look, not a refusal: no column ranks
    the rows alone like a leak and the test AUC is ordinary, so the version is promotable."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    rng = np.random.default_rng(5)
    n = 3000
    x1, x2, x3 = rng.normal(size=(3, n))
    y = rng.random(n) < 1 / (1 + np.exp(-(2.0 * x1 + 0.3 * x2 + 0.2 * x3)))
    file = tmp_path / "driver.csv"
    pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "y": y.astype(int)}).to_csv(file, index=False)
    home = tmp_path / "home"
    result = train_table(TableRequest(home, file, "y", threads=1))
    assert "leakage" not in result.warnings
    assert result.warnings["dominant_feature"].startswith("check for leakage: x1 (")
    assert "The column x1 carries" in result.warnings["dominant_feature"]  # its own case
    from bookpulse.jobs.table_model import promote_table, table_named

    tracking.configure(home)
    assert promote_table(home, table_named("driver")).outcome == "promoted"
