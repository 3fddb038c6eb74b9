"""`bookpulse train <uplift model>` end to end on a small book with contacts: the MLflow run and
its validation pack, the registered pyfunc, and the refusals (no contacts, no hold-out) before
any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.adapters import tracking
from bookpulse.book import io
from bookpulse.book.io import write_parquet
from bookpulse.jobs.uplift import train_uplift
from bookpulse.model.dataset import NoContacts, contacts_of
from bookpulse.model.uplift import UpliftModel
from bookpulse.specs import load_uplift_specs

pytestmark = pytest.mark.skipif(
    "MLFLOW_TRACKING_URI" in os.environ, reason="uses the embedded store"
)


@pytest.fixture(scope="module")
def trained_uplift(trainable_book: Path, tmp_path_factory):
    home = tmp_path_factory.mktemp("uplift-home")
    spec, outcome = load_uplift_specs()["retention_call_uplift"]
    result = train_uplift(trainable_book, home, spec, outcome, threads=1)
    return home, spec, outcome, result


def test_the_run_holds_the_uplift_validation_pack(trained_uplift, trainable_book):
    home, spec, _, result = trained_uplift
    client = MlflowClient(tracking.configure(home))
    run = client.get_run(result.run_id)
    assert run.data.tags["kind"] == "uplift" and run.data.tags["list"] == "retention"
    assert run.data.params["spec_hash"] == spec.spec_hash
    m = run.data.metrics
    for key in ("qini", "auuc", "ate_realised", "ate_predicted", "expected_gain_ratio", "ate_true"):
        assert key in m, key
    assert m["ate_realised_low"] <= m["ate_realised"] <= m["ate_realised_high"]
    assert m["ate_true"] > 0  # a call keeps customers, on average, in this book
    arts = {a.path for a in client.list_artifacts(result.run_id, "validation")}
    assert {"validation/model_card.md", "validation/uplift_by_decile.csv"} <= arts
    plots = {a.path for a in client.list_artifacts(result.run_id, "validation/plots")}
    assert plots == {"validation/plots/qini.png", "validation/plots/uplift_by_decile.png"}
    card = Path(client.download_artifacts(result.run_id, "validation/model_card.md")).read_text()
    assert "randomised hold-outs" in card and "X-learner" in card
    alias = client.get_model_version_by_alias(spec.registered_name, tracking.CHALLENGER)
    assert str(alias.version) == result.version


def test_the_registered_pyfunc_gives_the_models_effects(trained_uplift, trainable_book):
    home, spec, outcome, result = trained_uplift
    tracking.configure(home)
    uri = f"models:/{spec.registered_name}/{result.version}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="model")
    model = UpliftModel.from_json(
        next(Path(local).rglob("uplift_model.json")).read_text(), threads=1
    )
    from bookpulse.model.dataset import uplift_set

    contacts = contacts_of(trainable_book, spec.uplift.list, spec.uplift.action)
    month = io.month_key(contacts["list_month"].max() - pd.offsets.MonthEnd(3))
    rows = uplift_set(trainable_book, outcome, spec.features, contacts, [month])
    got = pyfunc.predict(tracking.example_input(rows, list(spec.features), rows=len(rows)))
    np.testing.assert_allclose(got["effect"].to_numpy(), model.effect(rows), rtol=1e-6)


def _without_controls(book: Path, out: Path) -> Path:
    shutil.copytree(book, out)
    for month in io.available_months(out, "contacts"):
        path = io.monthly_path(out, "contacts", month)
        rows = pd.read_parquet(path)
        rows = rows.loc[rows["assignment"].ne("control")]
        write_parquet(rows, path)
    return out


def test_no_contacts_or_no_hold_out_is_refused_before_any_work(
    trainable_book, small_book, tmp_path, monkeypatch
):
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
    runner = CliRunner()
    home = tmp_path / "home"
    home.mkdir()
    env = {"BOOKPULSE_HOME": str(home)}
    bare = tmp_path / "bare"
    shutil.copytree(small_book, bare)
    shutil.rmtree(bare / "contacts")
    with pytest.raises(NoContacts):
        contacts_of(bare, "retention", "call")
    res = runner.invoke(cli.app, ["train", "retention_call_uplift", "--book", str(bare)], env=env)
    assert res.exit_code == 2, res.output
    assert "no contacts table" in " ".join(res.output.split())
    held = _without_controls(trainable_book, tmp_path / "no-hold-out")
    res = runner.invoke(cli.app, ["train", "all", "--book", str(held)], env=env)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "no held-out (control) rows" in text and "randomised hold-out" in text
    assert "Traceback" not in res.output
    assert not (home / "mlartifacts").exists()  # refused before any training


def test_promotion_follows_the_uplift_gates_and_is_recorded(trained_uplift):
    from bookpulse.adapters import registry
    from bookpulse.specs import UpliftGates

    home, spec, _, result = trained_uplift
    tracking.configure(home)
    controls = result.metrics["control_rows_test"]
    strict = spec.model_copy(
        update={"gates": UpliftGates(min_control_rows=int(controls) + 1, min_qini_z=-99)}
    )
    kept = registry.promote_uplift(home, strict)
    assert kept.outcome == "kept" and kept.champion_after is None
    assert "held-out rows" in kept.reason and not kept.gates["min_control_rows"]
    loose = spec.model_copy(update={"gates": UpliftGates(min_control_rows=1, min_qini_z=-99)})
    done = registry.promote_uplift(home, loose)
    assert done.outcome == "promoted" and done.champion_after == result.version
    again = registry.promote_uplift(home, loose)
    assert again.outcome == "unchanged"
    outcomes = [d.outcome for d in registry.history(spec.name)]
    assert outcomes[:3] == ["unchanged", "promoted", "kept"]
