"""A new target is a YAML file and no code: `churn_6m.yaml` (churn's spec with another name,
registered name and a 6-month horizon) dropped into a copy of the specs is trained, promoted,
scored, served and monitored by the commands as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.config import _default_specs_root
from served_helpers import AUTH, bentoml_serve, served_env


@pytest.fixture(scope="module")
def specs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("specs")
    project = _default_specs_root()
    shutil.copytree(project / "features", root / "features")
    shutil.copytree(project / "models", root / "models")
    spec = yaml.safe_load((root / "models" / "churn.yaml").read_text())
    spec["name"] = "churn_6m"
    spec["registered_name"] = "bookpulse-churn_6m"
    spec["description"] = "Will an active customer leave within the next six months?"
    spec["target"]["horizon_months"] = 6
    spec["target"]["label"] = "churned_6m"
    spec["target"].pop("truth")  # the simulator's truth is for 3 months
    # 24 months of book label 18 of them: 6 train + 2 valid + 2 calibration + 5 embargo + 3 test
    spec["split"] = {
        "train_months": 6,
        "valid_months": 2,
        "calibration_months": 2,
        "test_months": 3,
    }
    spec["lightgbm"]["num_boost_round"] = 80
    spec["lightgbm"]["early_stopping_rounds"] = 20
    spec["lightgbm"]["params"]["min_data_in_leaf"] = 200
    spec["gates"] = {"min_auc": 0.6, "max_calibration_error": 0.2, "max_auc_drop": 0.05}
    (root / "models" / "churn_6m.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@pytest.fixture()
def env(specs_root: Path, tmp_path_factory, monkeypatch) -> dict[str, str]:
    home = tmp_path_factory.getbasetemp() / "spec-only-home"
    values = {"BOOKPULSE_HOME": str(home), "BOOKPULSE_SPECS_ROOT": str(specs_root)}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BOOKPULSE_ONLINE_STORE", raising=False)
    cli_tables.console = Console(width=200)
    return values


def run(*args: str) -> str:
    res = CliRunner().invoke(cli.app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_a_target_declared_in_yaml_runs_end_to_end(env, trainable_book: Path) -> None:
    book = str(trainable_book)
    months = pd.read_json(trainable_book / "book.json", typ="series")["months"]
    month = months[-1]
    home = Path(env["BOOKPULSE_HOME"])

    out = run("train", "churn_6m", "--book", book, "--threads", "1")
    assert "churn_6m" in out
    out = run("promote", "churn_6m", "--book", book)
    assert "promoted" in out, out
    # the test window is the spec's: its last month is the last whose 6 months are in the book
    from mlflow.tracking import MlflowClient

    from bookpulse.adapters import tracking

    tracking.configure(home)
    mv = MlflowClient().get_model_version_by_alias("bookpulse-churn_6m", "champion")
    params = MlflowClient().get_run(mv.run_id).data.params
    assert params["window.test"].endswith(months[-7]) and params["embargo_months"] == "5"

    out = run("score", "--book", book, "--as-of", month, "--threads", "1")
    assert "churn not scored" in out  # the copied models have no champion in this home
    scores = pd.read_parquet(home / "scores" / month / "customers.parquet")
    assert scores["churn_6m_probability"].notna().all()
    assert scores["churn_6m_decile"].between(1, 10).all()
    assert scores["churn_6m_model"].eq("bookpulse-churn_6m").all()
    assert not any(c.startswith("upgrade_") for c in scores.columns)

    # serve one id: a real `bentoml serve` on these specs scores it with the new model, as the
    # batch did
    customer = int(scores["customer_id"].iloc[0])
    serve_env = {
        **served_env(home, home / "bentoml"),
        "BOOKPULSE_SPECS_ROOT": env["BOOKPULSE_SPECS_ROOT"],
    }
    with bentoml_serve("bookpulse.serving.service:Scoring", serve_env, home / "serve.log") as url:
        reply = httpx.post(
            f"{url}/v1/customers/score",
            json={"customer_ids": [customer]},
            headers=AUTH,
            timeout=30,
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["models"] == {"bookpulse-churn_6m": "1"}
    got = body["results"][0]["scores"]["churn_6m"]
    row = scores.set_index("customer_id").loc[customer]
    assert got["probability"] == row["churn_6m_probability"]
    assert got["decile"] == row["churn_6m_decile"]
    assert got["reasons"][0]["sentence"] == row["churn_6m_reason1_sentence"]

    out = run("monitor", "--book", book, "--as-of", month)
    assert "churn_6m" in out and "tier_upgrade not monitored" in out
