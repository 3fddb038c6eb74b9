"""The MLflow registry adapter (`bookpulse.adapters.registry`): the registered pyfunc, gated
promotion of challenger against champion, the decisions' history and rollback. Models trained
on the trainable book into a home of their own (the promotions move its aliases)."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.jobs.train import train_models
from bookpulse.model.dataset import training_set
from bookpulse.model.fit import ScoringModel
from bookpulse.specs import load_model_specs


@pytest.fixture(scope="module")
def trained(trainable_book: Path, tmp_path_factory):
    """churn and tier_upgrade (the models these tests promote) trained, not yet promoted."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    home = tmp_path_factory.mktemp("registry-home")
    specs = load_model_specs()
    chosen = [specs["churn"], specs["tier_upgrade"]]
    results = train_models(trainable_book, home, chosen, threads=1)
    return home, specs, {r.model: r for r in results}


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


def test_promotion_gates_history_and_rollback(trained, trainable_book) -> None:
    from bookpulse.adapters import registry
    from bookpulse.specs import GateSpec

    home, specs, results = trained
    lenient = GateSpec(min_auc=0.55, max_calibration_error=0.2, max_auc_drop=0.1)
    strict = GateSpec(min_auc=0.999, max_calibration_error=0.2, max_auc_drop=0.1)
    spec = specs["churn"].model_copy(update={"gates": lenient})
    tracking.configure(home)  # the job entry points configure tracking; the adapters do not
    first = registry.promote(home, trainable_book, spec)
    assert first.outcome == "promoted" and first.champion_before is None
    assert first.champion_after == results["churn"].version
    assert first.gates == {"min_auc": True, "max_calibration_error": True}
    again = registry.promote(home, trainable_book, spec)
    assert again.outcome == "unchanged"

    # a challenger that knows two features only: worse on the same rows, beyond the margin
    weak = spec.model_copy(update={"features": spec.features[:2]})
    train_models(trainable_book, home, [weak], threads=1)
    tracking.configure(home)
    worse = registry.promote(home, trainable_book, weak)
    assert worse.outcome == "kept" and worse.verdict == "worse"
    assert worse.metrics["auc_diff_high"] < 0 and worse.gates["not_worse"] is False
    assert "DeLong" in worse.reason and "worse than the champion" in worse.reason

    v2 = train_models(trainable_book, home, [specs["churn"]], threads=1)[0].version
    tracking.configure(home)
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
    # the paired test on the same rows is kept with the decision
    assert second.verdict in ("better", "equivalent", "not worse")
    m = second.metrics
    assert m["auc_diff_low"] <= m["auc_diff"] <= m["auc_diff_high"]
    assert m["auc_diff_low"] >= -lenient.max_auc_drop and 0 <= m["auc_diff_p"] <= 1
    assert m["auc_diff"] == pytest.approx(m["challenger_auc"] - m["champion_auc"], abs=1e-12)
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

    outcomes = [d.outcome for d in registry.history("churn")]
    assert outcomes == ["rolled_back", "promoted", "kept", "kept", "unchanged", "promoted"]
    assert registry.history("churn")[1].verdict == second.verdict


def test_the_promotions_command_lists_the_history(trained, monkeypatch) -> None:
    """After the promotions and the rollback above, the CLI shows them."""
    from rich.console import Console
    from typer.testing import CliRunner

    from bookpulse import cli, cli_tables

    home, _, _ = trained
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
    res = CliRunner().invoke(cli.app, ["promotions", "churn"], env={"BOOKPULSE_HOME": str(home)})
    assert res.exit_code == 0 and "rolled_back" in res.output


def test_promote_refuses_a_window_the_model_was_fitted_on(trained, tmp_path) -> None:
    """A model trained on a later book is not judged on an earlier book's months."""
    from bookpulse.adapters import registry
    from bookpulse.synthetic.simulate import BookSpec, generate_book

    home, specs, _ = trained
    earlier = tmp_path / "earlier"
    generate_book(BookSpec(customers=800, months=24, seed=3, end_month="2026-03"), earlier)
    tracking.configure(home)
    with pytest.raises(registry.RegistryError, match="not out of time"):
        registry.promote(home, earlier, specs["tier_upgrade"])
    assert registry.history("tier_upgrade") == [], "nothing is recorded"
