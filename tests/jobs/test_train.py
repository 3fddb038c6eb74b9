"""Training end to end on a small book: MLflow run, validation pack, registry, pyfunc."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bookpulse.specs import load_model_specs
from bookpulse.adapters import tracking
from bookpulse.model.dataset import training_set
from bookpulse.model.fit import ScoringModel
from bookpulse.jobs.train import train_models


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


def test_registered_challenger_returns_calibrated_probabilities(trained, trainable_book) -> None:
    home, specs, results = trained
    tracking.configure(home)
    spec = specs["churn"]
    client = MlflowClient()
    version = client.get_model_version_by_alias(spec.registered_name, tracking.CHALLENGER)
    assert str(version.version) == results["churn"].version
    pyfunc = mlflow.pyfunc.load_model(f"models:/{spec.registered_name}@challenger")
    frame = training_set(trainable_book, spec, ["2026-01"])
    payload = tracking.example_input(frame, spec.features, rows=200)
    got = pyfunc.predict(payload)["probability"].to_numpy()
    local = mlflow.artifacts.download_artifacts(f"models:/{spec.registered_name}@challenger")
    model = ScoringModel.from_json(next(Path(local).rglob(tracking.MODEL_FILE)).read_text())
    want = model.predict(frame.head(200))
    assert np.allclose(got, want)
    assert ((got > 0) & (got < 1)).all()
    # calibration moves the level, never the order
    raw = model.predict_raw(frame.head(200))
    assert (np.argsort(raw, kind="stable") == np.argsort(want, kind="stable")).all()


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


def test_promotion_gates_history_and_rollback(trained, trainable_book) -> None:
    from bookpulse.specs import GateSpec
    from bookpulse.adapters import registry

    home, specs, results = trained
    lenient = GateSpec(min_auc=0.55, max_calibration_error=0.2, max_auc_drop=0.1)
    strict = GateSpec(min_auc=0.999, max_calibration_error=0.2, max_auc_drop=0.1)
    spec = specs["churn"].model_copy(update={"gates": lenient})
    first = registry.promote(home, trainable_book, spec)
    assert first.outcome == "promoted" and first.champion_before is None
    assert first.champion_after == results["churn"].version
    assert first.gates == {"min_auc": True, "max_calibration_error": True}
    again = registry.promote(home, trainable_book, spec)
    assert again.outcome == "unchanged"

    v2 = train_models(trainable_book, home, [specs["churn"]], threads=1)[0].version
    refused = registry.promote(
        home, trainable_book, specs["churn"].model_copy(update={"gates": strict})
    )
    assert refused.outcome == "kept" and refused.champion_after == first.champion_after
    assert "below the minimum 0.999" in refused.reason
    # the same window and rows for both: both AUCs are recorded
    assert {"challenger_auc", "champion_auc", "challenger_ece", "rows"} <= set(refused.metrics)
    tracking.configure(home)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(spec.registered_name, tracking.CHAMPION)
    assert str(champion.version) == first.champion_after

    second = registry.promote(home, trainable_book, spec)
    assert second.outcome == "promoted" and second.champion_after == v2
    back = registry.rollback(home, spec)
    assert back.champion_before == v2 and back.champion_after == first.champion_after
    champion = client.get_model_version_by_alias(spec.registered_name, tracking.CHAMPION)
    assert str(champion.version) == first.champion_after
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback(home, spec)
    # the rolled-back version is no longer the challenger: promote cannot bring it back
    assert "no longer the challenger" in back.reason
    with pytest.raises(registry.RegistryError, match="no challenger"):
        registry.promote(home, trainable_book, spec)

    outcomes = [d.outcome for d in registry.history(home, "churn")]
    assert outcomes == ["rolled_back", "promoted", "kept", "unchanged", "promoted"]


def test_promote_refuses_a_window_the_model_was_fitted_on(trained, tmp_path) -> None:
    """A model trained on a later book is not judged on an earlier book's months."""
    from bookpulse.synthetic.simulate import BookSpec, generate_book
    from bookpulse.adapters import registry

    home, specs, _ = trained
    earlier = tmp_path / "earlier"
    generate_book(BookSpec(customers=800, months=24, seed=3, end_month="2026-03"), earlier)
    with pytest.raises(registry.RegistryError, match="not out of time"):
        registry.promote(home, earlier, specs["tier_upgrade"])
    assert registry.history(home, "tier_upgrade") == [], "nothing is recorded"


def test_commands_for_analysts_and_model_owners(trained, tmp_path) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from bookpulse import cli

    home, _, results = trained
    cli.console = Console(width=200)
    runner = CliRunner()
    env = {"BOOKPULSE_HOME": str(home)}
    res = runner.invoke(cli.app, ["runs", "churn", "--last", "3"], env=env)
    assert res.exit_code == 0, res.output
    assert "ceiling_auc" in res.output and results["churn"].run_id[:8] in res.output
    res = runner.invoke(cli.app, ["promotions", "churn"], env=env)
    assert res.exit_code == 0 and "rolled_back" in res.output
    empty = {"BOOKPULSE_HOME": str(tmp_path)}
    res = runner.invoke(cli.app, ["promote", "churn", "--book", str(tmp_path)], env=empty)
    assert res.exit_code == 2 and "bookpulse train churn" in res.output
    res = runner.invoke(cli.app, ["rollback", "card_activation"], env=empty)
    assert res.exit_code == 2 and "no champion" in res.output
    res = runner.invoke(cli.app, ["train", "retention"], env=empty)
    assert res.exit_code == 2 and "unknown model" in res.output


# --- behaviour: directions that must hold on a trained model -----------------------------


def _trained_model(trained, name: str) -> ScoringModel:
    """The version the fixture trained (aliases move as the promotion tests run)."""
    from bookpulse.adapters.registry import load_scoring_model

    home, specs, results = trained
    tracking.configure(home)
    return load_scoring_model(specs[name].registered_name, results[name].version)


def test_more_products_lower_the_churn_score(trained, trainable_book) -> None:
    home, specs, _ = trained
    spec = specs["churn"]
    model = _trained_model(trained, "churn")
    frame = training_set(trainable_book, spec, ["2026-01"]).head(1500)
    few = model.predict(frame.assign(products_held=np.int8(2)))
    many = model.predict(frame.assign(products_held=np.int8(6)))
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
