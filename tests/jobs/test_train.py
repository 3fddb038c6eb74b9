"""`bookpulse train` end to end on a small book: MLflow run, validation pack, registered
challenger; the commands analysts and model owners type; directions a trained model must
follow. (The registry's promotion, history and rollback: tests/adapters/test_registry.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.jobs.train import train_models
from bookpulse.model.dataset import training_set
from bookpulse.model.fit import ScoringModel
from bookpulse.specs import load_model_specs


@pytest.fixture(scope="module")
def trained(trainable_book: Path, tmp_path_factory):
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    home = tmp_path_factory.mktemp("home")
    specs = load_model_specs()
    results = train_models(trainable_book, home, list(specs.values()), threads=1)
    return home, specs, {r.model: r for r in results}


def test_every_model_is_tracked_under_home_not_mlruns(trained) -> None:
    home, specs, results = trained
    models = {"card_activation", "churn", "tier_upgrade", "wealth_take_up"}
    assert set(results) == set(specs) == models
    assert (home / "mlflow.db").is_file()
    assert not Path("mlruns").exists()
    client = MlflowClient(tracking.configure(home))
    for name, spec in specs.items():
        run = client.get_run(results[name].run_id)
        assert run.data.tags["model"] == name
        assert run.data.params["spec_hash"] == spec.spec_hash
        assert run.data.params["window.test"].endswith(("2026-07", "2026-09"))
        for metric in ("auc", "pr_auc", "ks", "brier", "ece", "lift_top10", "ceiling_auc"):
            assert metric in run.data.metrics, (name, metric)
        assert 0.5 < run.data.metrics["auc"] <= 1.0
        assert run.inputs.dataset_inputs, "dataset lineage is logged"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
        assert "validation/model_card.md" in artifacts
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "validation/plots")}
        assert {
            f"validation/plots/{p}.png"
            for p in (
                "roc",
                "pr",
                "calibration",
                "gains_lift",
                "feature_importance",
                "shap_summary",
            )
        } <= plots
        assert str(Path(run.info.artifact_uri.removeprefix("file://"))).startswith(
            str(home.resolve())
        )


def test_the_validation_pack_breaks_figures_down_by_group(trained, tmp_path) -> None:
    """Weak spots by tier, age band, segment and region, and fairness by gender and age band
    with the listing rate: every test row in exactly one group of each dimension, for card
    models by their holder's groups; both in the model card."""
    home, specs, results = trained
    client = MlflowClient(tracking.configure(home))
    for name, result in results.items():
        run = client.get_run(result.run_id)
        test_rows = int(run.data.params["rows.test"])
        folder = Path(client.download_artifacts(result.run_id, "validation", str(tmp_path / name)))
        slices = pd.read_csv(folder / "slices.csv")
        fairness = pd.read_csv(folder / "fairness.csv")
        assert set(slices["dimension"]) == {"tier", "age_band", "segment", "region"}, name
        assert set(fairness["dimension"]) == {"age_band", "gender"}, name
        for table in (slices, fairness):
            assert (table.groupby("dimension")["rows"].sum() == test_rows).all(), name
            events = table.groupby("dimension")["events"].sum()
            assert (events == round(run.data.metrics["event_rate"] * test_rows)).all(), name
        listed = (fairness["listing_rate"] * fairness["rows"]).groupby(fairness["dimension"]).sum()
        assert (listed / test_rows).between(0.099, 0.13).all(), (name, listed)  # a tenth a month
        assert slices["listing_rate"].isna().all()
        assert run.data.metrics["slices_flagged"] == slices["flag"].sum()
        assert run.data.metrics["fairness_flagged"] == fairness["flag"].sum()
        card = (folder / "model_card.md").read_text()
        assert "## Weak spots" in card and "## Fairness" in card, name
        assert "| gender | F |" in card, name


def test_a_second_run_registers_a_new_challenger_version(trained, trainable_book) -> None:
    home, specs, results = trained
    again = train_models(trainable_book, home, [specs["card_activation"]], threads=1)[0]
    assert int(again.version) == int(results["card_activation"].version) + 1
    tracking.configure(home)
    alias = MlflowClient().get_model_version_by_alias(
        specs["card_activation"].registered_name, tracking.CHALLENGER
    )
    assert str(alias.version) == again.version


def test_a_book_too_short_for_the_split_is_refused(small_book: Path, tmp_path: Path) -> None:
    from bookpulse.book.io import BookError

    with pytest.raises(BookError, match="needs 19 labelled months"):
        train_models(small_book, tmp_path, [load_model_specs()["churn"]])


def test_commands_for_analysts_and_model_owners(trained, tmp_path, monkeypatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from bookpulse import cli, cli_tables

    home, _, results = trained
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
    runner = CliRunner()
    env = {"BOOKPULSE_HOME": str(home)}
    res = runner.invoke(cli.app, ["runs", "churn", "--last", "3"], env=env)
    assert res.exit_code == 0, res.output
    assert "ceiling_auc" in res.output and results["churn"].run_id[:8] in res.output
    res = runner.invoke(cli.app, ["promotions", "churn"], env=env)  # trained, never promoted
    assert res.exit_code == 0, res.output
    assert "no decisions recorded for churn yet" in res.output
    empty = {"BOOKPULSE_HOME": str(tmp_path)}
    res = runner.invoke(cli.app, ["promote", "churn", "--book", str(tmp_path)], env=empty)
    assert res.exit_code == 2 and "bookpulse train churn" in res.output
    res = runner.invoke(cli.app, ["rollback", "card_activation"], env=empty)
    assert res.exit_code == 2 and "no champion" in res.output
    res = runner.invoke(cli.app, ["train", "retention"], env=empty)
    assert res.exit_code == 2 and "unknown model" in res.output
    assert (
        "unknown model 'retention': use card_activation, churn, tier_upgrade, wealth_take_up, "
        "activation_follow_up_uplift, retention_call_uplift, upgrade_offer_uplift or all"
        in " ".join(res.output.split())
    )


# --- behaviour: directions that must hold on a trained model -----------------------------


def _trained_model(trained, name: str) -> ScoringModel:
    """The version the fixture trained (the challenger alias moves as later tests train)."""
    from bookpulse.adapters.registry import load_scoring_model

    home, specs, results = trained
    tracking.configure(home)
    return load_scoring_model(specs[name].registered_name, results[name].version)


def test_more_products_lower_the_churn_score(trained, trainable_book) -> None:
    home, specs, _ = trained
    spec = specs["churn"]
    model = _trained_model(trained, "churn")
    frame = training_set(trainable_book, spec, ["2026-01"]).head(1500)
    # the product lines and the count together, as a customer holding them would show them
    lines = ["has_time_deposit", "has_wealth", "has_funds", "has_insurance"]
    few = model.predict(frame.assign(products_held=np.int8(2), **dict.fromkeys(lines, np.int8(0))))
    many = model.predict(frame.assign(products_held=np.int8(6), **dict.fromkeys(lines, np.int8(1))))
    assert many.mean() < 0.8 * few.mean()


def test_closer_to_the_next_tier_raises_the_upgrade_score(trained, trainable_book) -> None:
    home, specs, _ = trained
    spec = specs["tier_upgrade"]
    model = _trained_model(trained, "tier_upgrade")
    frame = training_set(trainable_book, spec, ["2026-01"]).head(1500)
    far = model.predict(frame.assign(dist_next_tier_log=2.0, dist_next_tier_pct=0.86))
    close = model.predict(frame.assign(dist_next_tier_log=0.05, dist_next_tier_pct=0.05))
    assert close.mean() > 2 * far.mean()


def test_bulk_corporate_cards_score_lower(trained, trainable_book) -> None:
    import pandas as pd

    home, specs, _ = trained
    spec = specs["card_activation"]
    model = _trained_model(trained, "card_activation")
    frame = training_set(trainable_book, spec, ["2025-06", "2025-07", "2025-08"])
    levels = frame["issue_channel"].cat.categories
    branch = model.predict(
        frame.assign(issue_channel=pd.Categorical(["branch"] * len(frame), levels))
    )
    bulk = model.predict(
        frame.assign(issue_channel=pd.Categorical(["bulk_corporate"] * len(frame), levels))
    )
    assert bulk.mean() < 0.8 * branch.mean()


def test_compare_experiments_notebook_runs(trained) -> None:
    import nbformat
    from nbclient import NotebookClient

    home, _, _ = trained
    path = Path(__file__).parents[2] / "notebooks" / "01-compare-experiments.ipynb"
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("BOOKPULSE_HOME")
    os.environ["BOOKPULSE_HOME"] = str(home)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    finally:
        if env_before is None:
            os.environ.pop("BOOKPULSE_HOME", None)
        else:
            os.environ["BOOKPULSE_HOME"] = env_before
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    assert "ceiling_auc" in text and "champion" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plot is drawn"


def _hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_copied_and_moved_home_works_without_touching_the_original(
    trained, trainable_book, tmp_path
) -> None:
    """Copy a home, move the copy, then train, promote, roll back and score there: the
    original is neither read (it is out of the way meanwhile) nor written (its files hash the
    same), and the copy's store names no path of the original."""
    import shutil

    from bookpulse.adapters.registry import promote, rollback
    from bookpulse.jobs.score import ScoreRequest, score
    from bookpulse.specs import GateSpec

    home, specs, _ = trained
    original = tmp_path / "original"
    shutil.copytree(home, original)  # a home of its own for this test (itself a copy)
    spec = specs["card_activation"].model_copy(
        update={"gates": GateSpec(min_auc=0.51, max_calibration_error=0.5, max_auc_drop=0.2)}
    )
    tracking.configure(original)
    assert promote(original, trainable_book, spec).outcome == "promoted"
    before = _hashes(original)
    shutil.copytree(original, tmp_path / "copy")
    moved = (tmp_path / "copy").rename(tmp_path / "moved")
    hidden = original.rename(tmp_path / "out-of-the-way")  # any read of it would fail
    try:
        train_models(trainable_book, moved, [spec], threads=1)
        assert promote(moved, trainable_book, spec).outcome == "promoted"
        assert rollback(moved, spec).outcome == "rolled_back"
        month = "2026-09"
        scored = score(ScoreRequest(home=moved, book=trainable_book, as_of=month, threads=1))
        assert (moved / "scores" / month / "customers.parquet").is_file()
        assert scored.manifest.models["card_activation"].version
    finally:
        hidden.rename(original)
    assert _hashes(original) == before
    db = (moved / "mlflow.db").read_bytes()
    assert str(original.resolve()).encode() not in db
    assert str(moved.resolve()).encode() in db


def test_the_ui_answers_with_one_worker_and_stops_cleanly(trained) -> None:
    """`bookpulse ui` (what `make ui` runs): one web worker, no background job consumers, the
    experiments labelled for analysts, and SIGTERM leaves no process behind."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    from bookpulse.jobs.tracking_server import free_port, processes_with

    home, specs, _ = trained
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bookpulse"), "ui", "--port", str(port)],
        env={**env, "BOOKPULSE_HOME": str(home), "COLUMNS": "250"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:  # until it says it is up (or ends)
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        out = "".join(lines)
        assert f"MLflow UI on http://127.0.0.1:{port}" in out, out
        assert "viewStateShareKey=analyst&workflowType=machine_learning" in out
        ours = processes_with(f"--port {port}")
        assert len(ours) == 3, ours  # bookpulse, `mlflow server` and its one uvicorn worker
        assert any("uvicorn" in c and "--workers 1" in c for c in ours), ours
        assert not processes_with("huey"), "no job consumers"
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(
            f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=bookpulse-churn"
        ) as reply:
            tags = {t["key"]: t["value"] for t in json.load(reply)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        view = json.loads(json.loads(tags["mlflow.sharedViewState.analyst"])["state"])
        for metric in ("auc", "gap_to_ceiling", "ece", "lift_top10"):
            assert f"metrics.`{metric}`" in view["selectedColumns"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert not processes_with(f"--port {port}"), "nothing left running"
