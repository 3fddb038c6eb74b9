"""The model-risk document: the pure renderer from a hand-made set of facts (every section, the
features' descriptions, a flagged slice, evidence not logged), and end to end: a quick model
trained and promoted finds its document (Markdown and HTML) among its run's artifacts, naming
the model, its test window and AUC as logged; rollback documents the champion it restores; the
`model-risk` command writes both files and refuses what it cannot document."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.model import risk_doc

# --- the renderer ------------------------------------------------------------------------------


def _facts() -> dict:
    slice_row = {
        "dimension": "tier",
        "rows": 1200,
        "mean_probability": 0.05,
        "oe_z": 0.4,
        "auc_se": 0.02,
        "listing_rate": None,
    }
    return {
        "model": "churn",
        "registered_name": "bookpulse-churn",
        "version": "4",
        "aliases": ["champion"],
        "run_id": "abc123",
        "experiment": "bookpulse-churn",
        "trained_at": "2026-11-02T10:00:00+00:00",
        "trained_by": "analyst",
        "generated_at": "2026-11-03T09:00:00+00:00",
        "version_tags": {"spec_hash": "0123456789ab", "promoted_at": "2026-11-03"},
        "params": {
            "window.train": "2025-06..2026-03",
            "window.valid": "2026-04..2026-05",
            "window.calibration": "2026-06..2026-07",
            "window.test": "2026-09..2026-11",
            "rows.train": "150000",
            "rows.valid": "30000",
            "rows.calibration": "30000",
            "rows.test": "45000",
            "positive_rate.train": "0.05",
            "positive_rate.valid": "0.051",
            "positive_rate.calibration": "0.049",
            "positive_rate.test": "0.052",
            "embargo_months": "1",
            "best_iteration": "412",
            "lgb.num_leaves": "7",
        },
        "metrics": {
            "auc": 0.8123,
            "pr_auc": 0.31,
            "ks": 0.48,
            "brier": 0.041,
            "ece": 0.006,
            "ece_noise": 0.004,
            "ece_excess": 0.002,
            "event_rate": 0.052,
            "mean_probability": 0.05,
            "psi_train_test": 0.031,
            "lift_top10": 3.9,
            "capture_top10": 0.39,
            "auc_month_min": 0.80,
            "auc_month_max": 0.82,
            "oe_month_max_dev": 0.07,
            "slices_flagged": 1.0,
        },
        "run_tags": {"book_generator": "bookpulse.synthetic.simulate", "book": "/data/book"},
        "auc_by_month": {"2026-09": 0.80, "2026-10": 0.81, "2026-11": 0.82},
        "spec": {
            "name": "churn",
            "description": "Will an active customer leave within three months?",
            "score_noun": "churn risk",
            "target": {
                "kind": "attrition",
                "entity": "customer",
                "label": "churned",
                "horizon_months": 3,
                "population": "Customers active at month-end T.",
                "event": "Attrition at any month-end in (T, T+3].",
                "leavers": "Early leavers count as churned.",
                "scored": {"exclude_tiers": [], "without_products": []},
            },
            "features": ["products_held", "age", "segment", "aum_chg_3m"],
            "gates": {"min_auc": 0.75, "max_calibration_error": 0.02, "max_auc_drop": 0.01},
        },
        "spec_source": "validation/spec.json, logged with the run",
        "catalog": [
            {
                "group": "products",
                "description": "What the customer holds here.",
                "features": [
                    {
                        "name": "products_held",
                        "dtype": "int8",
                        "window_months": 1,
                        "description": "Number of product lines held at T.",
                        "monitor": True,
                    }
                ],
            },
            {
                "group": "profile",
                "description": "Who the customer is.",
                "features": [
                    {
                        "name": "age",
                        "dtype": "int16",
                        "window_months": 1,
                        "description": "Age in years at T.",
                        "monitor": True,
                    },
                    {
                        "name": "segment",
                        "dtype": "category",
                        "window_months": 1,
                        "description": "Horizontal segment: business owners, elderly, women.",
                        "monitor": True,
                    },
                ],
            },
            {
                "group": "balances",
                "description": "Assets held here.",
                "features": [
                    {
                        "name": "aum_chg_3m",
                        "dtype": "float32",
                        "window_months": 4,
                        "description": "Change in log(1 + AUM) from T-3 to T.",
                        "monitor": True,
                    }
                ],
            },
        ],
        "reference": {
            "rows": 45000,
            "months": ["2026-09", "2026-10", "2026-11"],
            "rows_by_month": [15000, 15000, 15000],
            "score": {"usual_psi": 0.004},
            "features": {"products_held": {"usual_psi": 0.002}},
            "by_gain": ["products_held", "aum_chg_3m", "segment", "age"],
        },
        "gains": [
            {"decile": 1, "rows": 4500, "events": 900, "event_rate": 0.2, "mean_p": 0.19},
        ],
        "slices": [
            {
                **slice_row,
                "group": "effective",
                "events": 150,
                "event_rate": 0.125,
                "observed_over_expected": 1.6,
                "auc": 0.71,
                "flag": True,
                "note": "O/E 1.60 against the book's 1.02: more events than expected here",
            },
            {
                **slice_row,
                "group": "mid",
                "events": 60,
                "event_rate": 0.05,
                "observed_over_expected": 1.0,
                "auc": 0.80,
                "flag": False,
                "note": "",
            },
        ],
        "fairness": None,
        "artifacts": ["validation/plots/roc.png", "validation/reference.json"],
        "plots": {"roc": b"\x89PNG fake bytes"},
        "decisions": [
            {
                "model": "churn",
                "action": "promote",
                "outcome": "promoted",
                "challenger": "4",
                "champion_before": "3",
                "champion_after": "4",
                "window": ["2026-09", "2026-10", "2026-11"],
                "metrics": {
                    "challenger_auc": 0.8121,
                    "champion_auc": 0.8010,
                    "auc_diff": 0.0111,
                    "auc_diff_low": 0.0041,
                    "auc_diff_high": 0.0181,
                    "auc_diff_p": 0.0019,
                    "auc_diff_z": 3.1,
                    "rows": 45000.0,
                },
                "reason": "all gates passed; against the champion: better",
                "verdict": "better",
                "time": "2026-11-03T08:00:00+00:00",
            }
        ],
        "monitoring": risk_doc.monitoring_thresholds(),
    }


def test_every_section_is_rendered_with_descriptions_flags_and_the_decision() -> None:
    facts = _facts()
    md = risk_doc.to_markdown(facts)
    page = risk_doc.to_html(facts)
    for heading in risk_doc.SECTIONS:
        assert f"## {heading}" in md, heading
        assert f">{heading}</h2>" in page, heading
    assert md.startswith("# Model-risk document: churn (bookpulse-churn version 4)")
    # the features with their plain descriptions, grouped, with their gain ranks
    for text in ("Number of product lines held at T.", "Age in years at T.", "### products (1)"):
        assert text in md
    assert "| 1 | `products_held` | Number of product lines held at T." in md
    assert "| 4 | `age` | Age in years at T." in md
    assert "Number of product lines held at T." in page
    # the flagged slice is flagged in both, the other is not
    assert "| tier | effective |" in md and "**FLAGGED**" in md
    effective = next(line for line in md.splitlines() if line.startswith("| tier | effective"))
    mid = next(line for line in md.splitlines() if line.startswith("| tier | mid"))
    assert "FLAGGED" in effective and "FLAGGED" not in mid
    assert '<tr class="flagged"><td>tier</td><td>effective</td>' in page
    assert '<td class="flag">flagged</td>' in page
    assert "**1 of 2 groups flagged** beyond noise: tier=effective" in md
    # fairness was not logged by this run: said plainly, in both
    assert "not logged by this run" in md.split("## 7. Fairness")[1].split("## 8.")[0]
    assert "not logged by this run" in page
    # the promotion: verdict, difference, interval and p
    assert "better than champion version 3" in md
    assert "difference +0.0111 (95% interval +0.0041 to +0.0181, DeLong p 0.0019)" in md
    # windows, AUC and the monitoring thresholds as the code holds them
    assert "2026-09..2026-11" in md and "0.812" in md
    drift = facts["monitoring"]["drift"]
    assert f"watch {drift['watch']}, act {drift['act']}" in md
    assert "off promise below 0.762" in md  # the test AUC less the review's AUC_DROP
    # gender stands in through the segment: said among the fairness notes
    assert "stands in for gender" in md
    # the plot logged is inline, the plot not logged is named as missing
    assert "data:image/png;base64," in page
    assert "<code>validation/plots/pr.png</code> not logged by this run" in page


def test_slices_absent_are_said_to_be_not_logged() -> None:
    facts = copy.deepcopy(_facts())
    facts["slices"] = None
    facts["metrics"].pop("slices_flagged")
    md = risk_doc.to_markdown(facts)
    slices = md.split("### Slices")[1].split("## 5.")[0]
    assert "**not logged by this run**: `validation/slices.csv` is absent" in slices
    assert "**Weak spots**: not logged by this run" in md
    assert "FLAGGED" not in md


def test_a_run_logged_before_the_pack_grew_still_renders() -> None:
    """An old run: no reference profile, gains, monthly AUCs, plots or tables."""
    facts = copy.deepcopy(_facts())
    facts.update(reference=None, gains=None, slices=None, fairness=None, auc_by_month={}, plots={})
    facts["artifacts"] = []
    md, page = risk_doc.to_markdown(facts), risk_doc.to_html(facts)
    features = md.split("## 3. Features")[1].split("## 4.")[0]
    assert "not logged by this run: gain ranks not shown" in features
    assert "| - | `age` | Age in years at T." in features  # still described
    assert "AUC by test month: not logged by this run." in md
    assert "Gains by decile: not logged by this run." in md
    assert "data:image/png" not in page and page.count("not logged by this run") >= 6


def test_the_monitoring_plan_names_the_early_read_and_the_weak_spot_rule() -> None:
    facts = copy.deepcopy(_facts())
    facts["monitoring"]["early"] = {
        "oe_z": 3.0,
        "oe_band": 0.2,
        "auc_drop": 0.05,
        "timing_windows": 6,
        "cbpe_note": "blind to concept drift",
    }
    plan = risk_doc.to_markdown(facts).split("## 10. Ongoing monitoring plan")[1]
    assert "early outcome read" in plan and "|z\\| >= 3.0 and O/E is outside 1 +/- 20%" in plan
    assert "expected AUC is under 0.762" in plan and "blind to concept drift" in plan
    live = risk_doc.monitoring_thresholds()  # what this build's monitor and review apply
    assert live["early"]["oe_z"] == 3.0 and live["slices"]["listing_band"] == (0.8, 1.25)
    facts["monitoring"] = live
    plan = risk_doc.to_markdown(facts).split("## 10. Ongoing monitoring plan")[1]
    assert "weak spots (by tier" in plan and "Benjamini-Hochberg at 5%" in plan


def test_a_version_never_promoted_says_so() -> None:
    facts = copy.deepcopy(_facts())
    facts["decisions"] = []
    md = risk_doc.to_markdown(facts)
    assert "No promotion of this version is recorded." in md


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promoted(trainable_book: Path, tmp_path_factory):
    """A quick churn model trained twice (the same spec: identical versions) in a home of its
    own; the first promoted, then the second (equivalent on the same rows)."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    from bookpulse.adapters import registry
    from bookpulse.jobs.train import train_models
    from bookpulse.specs import GateSpec, load_model_specs

    home = tmp_path_factory.mktemp("risk-doc-home")
    base = load_model_specs()["churn"]
    spec = base.model_copy(
        update={
            "lightgbm": base.lightgbm.model_copy(
                update={"num_boost_round": 40, "early_stopping_rounds": 10}
            ),
            "gates": GateSpec(min_auc=0.55, max_calibration_error=0.2, max_auc_drop=0.05),
        }
    )
    first = train_models(trainable_book, home, [spec], threads=1)[0]
    tracking.configure(home)
    d1 = registry.promote(home, trainable_book, spec)
    second = train_models(trainable_book, home, [spec], threads=1)[0]
    tracking.configure(home)
    d2 = registry.promote(home, trainable_book, spec)
    assert d1.outcome == d2.outcome == "promoted"
    return home, spec, first, second, d2


def _read(run_id: str, path: str) -> str:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)).read_text()


def test_promotion_logs_the_document_to_the_champions_run(promoted) -> None:
    home, spec, _, second, decision = promoted
    tracking.configure(home)
    client = MlflowClient()
    found = {a.path for a in client.list_artifacts(second.run_id, "model-risk")}
    stem = f"model-risk/churn-v{second.version}"
    assert {f"{stem}.md", f"{stem}.html"} <= found
    run = client.get_run(second.run_id)
    test_window = run.data.params["window.test"]
    auc = f"{run.data.metrics['auc']:.3f}"
    md, page = _read(second.run_id, f"{stem}.md"), _read(second.run_id, f"{stem}.html")
    for text in (md, page):
        assert "churn" in text and "bookpulse-churn" in text
        assert test_window in text
        assert auc in text
        assert "not logged by this run" in text or "validation/slices.csv" in text
    # the promotion that made it champion, with its paired test
    assert decision.verdict == "equivalent"  # the same spec, data and seed: the same model
    assert f"equivalent to champion version {decision.champion_before}, AUC" in md
    assert f"DeLong p {decision.metrics['auc_diff_p']:.3g}" in md
    # features with their catalog descriptions, ranked by the logged gain
    assert "Number of product lines" in md or "product lines" in md
    assert "data:image/png;base64," in page  # the run's plots inline
    tag = client.get_model_version(spec.registered_name, second.version).tags
    assert tag["model_risk_document"] == f"{stem}.md"


def test_rollback_documents_the_champion_it_restores(promoted) -> None:
    from bookpulse.adapters import registry

    home, spec, first, second, _ = promoted
    tracking.configure(home)
    back = registry.rollback(home, spec)
    assert back.champion_after == first.version
    md = _read(first.run_id, f"model-risk/churn-v{first.version}.md")
    assert "rolled_back" in md  # the decision history now names the rollback
    assert "aliases: champion" in md


def test_the_model_risk_command(promoted, tmp_path, monkeypatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from bookpulse import cli, cli_tables

    for module in (cli, cli_tables):  # messages at a terminal's width, unwrapped
        monkeypatch.setattr(module, "console", Console(width=400))
        monkeypatch.setattr(module, "err", Console(width=400, stderr=True))
    home, spec, first, second, _ = promoted
    env = {"BOOKPULSE_HOME": str(home)}
    runner = CliRunner()
    helped = runner.invoke(cli.app, ["model-risk", "--help"])
    assert helped.exit_code == 0 and "--version" in helped.output and "--out" in helped.output
    res = runner.invoke(cli.app, ["model-risk", "churn", "--out", str(tmp_path)], env=env)
    assert res.exit_code == 0, res.output
    tracking.configure(home)
    champion = MlflowClient().get_model_version_by_alias(spec.registered_name, tracking.CHAMPION)
    stem = f"churn-v{champion.version}"
    assert (tmp_path / f"{stem}.md").read_text().startswith("# Model-risk document: churn")
    assert (tmp_path / f"{stem}.html").read_text().startswith("<!doctype html>")
    assert not list(tmp_path.glob(".*.tmp")), "written whole, no temporary file left"
    assert f"version {champion.version} (champion)" in res.output
    # a named version that is not the champion, to the default folder
    other = runner.invoke(cli.app, ["model-risk", "churn", "--version", second.version], env=env)
    assert other.exit_code == 0 and "(not the champion)" in other.output, other.output
    assert (home / "reports" / f"churn-v{second.version}.html").is_file()
    missing = runner.invoke(cli.app, ["model-risk", "churn", "--version", "99"], env=env)
    assert missing.exit_code == 2 and "has no version 99" in missing.output
    unknown = runner.invoke(cli.app, ["model-risk", "nosuch"], env=env)
    assert unknown.exit_code == 2 and "unknown model 'nosuch': use one of" in unknown.output
    assert "churn" in unknown.output and "all" not in unknown.output.split("use one of")[1]
    untrained = runner.invoke(cli.app, ["model-risk", "tier_upgrade"], env=env)
    assert untrained.exit_code == 2 and "no registered version" in untrained.output
    uplift = runner.invoke(cli.app, ["model-risk", "retention_call_uplift"], env=env)
    assert uplift.exit_code == 2 and "uplift model" in uplift.output
    # versions registered, none the champion (the last test here: it takes the alias away)
    MlflowClient().delete_registered_model_alias(spec.registered_name, tracking.CHAMPION)
    none = runner.invoke(cli.app, ["model-risk", "churn"], env=env)
    assert none.exit_code == 2 and "has no champion (versions 1, 2 are registered)" in none.output


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    from bookpulse.jobs.model_risk import ModelRiskRequest, model_risk
    from bookpulse.specs import SpecError

    taken = tmp_path / "reports"
    taken.write_text("not a folder")
    with pytest.raises(SpecError, match="is a file: give a folder"):
        model_risk(ModelRiskRequest(tmp_path / "home", "churn", out=taken))
    assert not (tmp_path / "home").exists()  # no store opened, nothing logged
    assert taken.read_text() == "not a folder"
