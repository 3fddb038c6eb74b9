"""A shock to catch: champions trained on a calm book, then run on the same book and on a copy
shocked from mid-2026 (a deposit-rate cut, then a bulk card campaign). The monitor must flag
the shocked book and stay quiet on the calm one; the review must show the miscalibration.
Both books are identical before the shock, so the same champions fit both."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.adapters import tracking
from bookpulse.adapters.champions import load_champions
from bookpulse.adapters.publish import default_out
from bookpulse.adapters.report import EXPERIMENT
from bookpulse.errors import MonitorError
from bookpulse.jobs.monitor import drifts as month_drifts
from bookpulse.jobs.review import ReviewRequest, realised_outcomes, review
from bookpulse.jobs.score import score_month
from bookpulse.specs import GateSpec, load_feature_catalog, load_model_specs, load_playbook
from bookpulse.synthetic.simulate import BookSpec, Shock, generate_book

CALM = BookSpec(customers=5_000, months=24, seed=21, end_month="2026-10")
RATE_CUT, CAMPAIGN = "2026-06", "2026-07"
SHOCKED = dataclasses.replace(
    CALM, shocks=(Shock("rate_cut", RATE_CUT), Shock("card_campaign", CAMPAIGN))
)
MONITORED = "2026-09"  # three months into the cut, the campaign's third month
# Churn is reviewed on the month before the cut: the same scores in both books (nothing before
# a shock differs), but its outcome window (2026-06..08) falls in the cut. Cards: on the
# campaign's first month. Both months are in the champions' test windows (2026-05 on), and
# every outcome window has closed by the book's end.
CHURN_MONTH, CARD_MONTH = "2026-05", CAMPAIGN
REVIEWED = {"churn": CHURN_MONTH, "card_activation": CARD_MONTH}


def _quick(spec):
    lgb = spec.lightgbm.model_copy(update={"num_boost_round": 80, "early_stopping_rounds": 20})
    gates = GateSpec(min_auc=0.51, max_calibration_error=0.5, max_auc_drop=0.2)
    return spec.model_copy(update={"lightgbm": lgb, "gates": gates})


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shock")
    out = {"calm": root / "calm", "shocked": root / "shocked"}
    generate_book(CALM, out["calm"])
    generate_book(SHOCKED, out["shocked"])
    return out


@pytest.fixture(scope="module")
def home(books, tmp_path_factory) -> Path:
    """Champions trained and promoted on the calm book; its test windows start in 2026-05."""
    from bookpulse.adapters.registry import promote
    from bookpulse.jobs.train import train_models

    if "MLFLOW_TRACKING_URI" in os.environ:
        pytest.skip("uses the embedded store; unset MLFLOW_TRACKING_URI")
    home = tmp_path_factory.mktemp("shock-home")
    specs = [_quick(s) for s in load_model_specs().values()]
    train_models(books["calm"], home, specs, threads=1)
    for spec in specs:
        assert promote(home, books["calm"], spec).outcome == "promoted"
    return home


def outcomes(home: Path, book: Path, month: str, scores: Path):
    """The review's figures for a scored month: (results, lists, skipped)."""
    tracking.configure(home)
    return realised_outcomes(book, month, scores, load_model_specs(), load_playbook())


@pytest.fixture(scope="module")
def champions(home):
    tracking.configure(home)
    return load_champions(list(load_model_specs().values()))


@pytest.fixture(scope="module")
def drifts(home, books, champions):
    tracking.configure(home)
    return {name: month_drifts(book, MONITORED, champions) for name, book in books.items()}


@pytest.fixture(scope="module")
def reviews(home, books, champions):
    catalog = load_feature_catalog()
    catalogs = {e: catalog.for_entity(e) for e in ("customer", "card")}
    out = {}
    for name, book in books.items():
        for month in sorted(set(REVIEWED.values())):
            scores = home / f"scores-{name}" / month
            score_month(book, month, champions, catalogs, load_playbook(), scores)
            out[name, month] = outcomes(home, book, month, scores)
    return out


def test_a_calm_book_raises_no_alarm(drifts):
    for model, d in drifts["calm"].items():
        assert d.verdict == "stable", (model, d.reasons)


def test_the_rate_cut_is_flagged_on_balances(drifts):
    churn = drifts["shocked"]["churn"]
    assert churn.verdict == "act", churn.reasons
    moved = churn.features.loc[churn.features["psi_verdict"] == "act", "feature"].tolist()
    assert any("aum" in f or "balance" in f or "flow" in f for f in moved), moved


def test_the_card_campaign_is_flagged(drifts):
    cards = drifts["shocked"]["card_activation"]
    assert cards.verdict == "act", cards.reasons
    assert cards.volume_verdict == "act"  # a surge of new cards
    assert cards.volume_ratio > 3


def test_the_calm_months_are_as_promised(reviews):
    for month in sorted(set(REVIEWED.values())):
        results, lists, skipped = reviews["calm", month]
        assert set(results) == {"churn", "tier_upgrade", "card_activation", "wealth_take_up"}, (
            skipped
        )
        for model in ("churn", "card_activation"):  # the models the shocks will hit
            r = results[model]
            assert not any("miscalibrated" in x for x in r.reasons), (month, model, r.reasons)
        churn = lists["retention"][2]
        assert churn["listed_rate"] > churn["not_listed_rate"]  # the list found the leavers
        assert set(lists) == {"retention", "upgrade", "activation", "cross_sell"}
        assert lists["cross_sell"][0] == "took_up"  # the outcome word is the spec's label


def test_the_shocks_show_as_miscalibration(reviews):
    churn = reviews["shocked", CHURN_MONTH][0]["churn"]
    calm = reviews["calm", CHURN_MONTH][0]["churn"]
    assert churn.metrics["mean_probability"] == calm.metrics["mean_probability"]  # same scores
    assert churn.metrics["observed_over_expected"] > 1.3
    assert churn.metrics["observed_over_expected"] > calm.metrics["observed_over_expected"] + 0.2
    assert any("more than predicted" in x for x in churn.reasons), churn.reasons
    cards = reviews["shocked", CARD_MONTH][0]["card_activation"]
    assert cards.metrics["observed_over_expected"] < 0.7
    assert any("fewer than predicted" in x for x in cards.reasons), cards.reasons


def test_the_cli_writes_reports_and_logs_them(home, books, reviews, monkeypatch):
    from rich.console import Console

    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
    env = {"BOOKPULSE_HOME": str(home)}
    runner = CliRunner()
    res = runner.invoke(
        cli.app, ["monitor", "--as-of", MONITORED, "--book", str(books["shocked"])], env=env
    )
    assert res.exit_code == 0, res.output
    assert "act" in res.output
    page = home / "reports" / f"monitor-{MONITORED}.html"
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 4  # one figure per model
    scores = home / "scores-shocked" / CHURN_MONTH
    args = ["review", "--scored", CHURN_MONTH, "--book", str(books["shocked"])]
    res = runner.invoke(cli.app, [*args, "--scores", str(scores)], env=env)
    assert res.exit_code == 0, res.output
    assert "off promise" in res.output
    assert (home / "reports" / f"review-{CHURN_MONTH}.html").is_file()
    tracking.configure(home)
    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.data.tags["kind"]: r for r in client.search_runs([exp.experiment_id])}
    assert runs["monitor"].data.tags["churn.verdict"] == "act"
    assert runs["monitor"].data.metrics["churn.score_psi"] >= 0
    assert runs["review"].data.metrics["churn.observed_over_expected"] > 1.3
    names = [a.path for a in client.list_artifacts(runs["review"].info.run_id)]
    assert f"review-{CHURN_MONTH}.html" in names


def test_a_folder_of_another_month_is_refused(home, books, reviews):
    scores = home / "scores-calm" / CHURN_MONTH
    with pytest.raises(MonitorError, match=f"holds the scores of {CHURN_MONTH}, not 2026-06"):
        outcomes(home, books["calm"], "2026-06", scores)
    with pytest.raises(MonitorError, match=f"holds the scores of {CHURN_MONTH}, not 2026-06"):
        review(ReviewRequest(home, "2026-06", books["calm"], scores))


def test_tier_upgrade_is_monitored_on_the_customers_it_scores(drifts, books):
    from bookpulse.features import build_features, read_frames

    customers, _ = build_features(read_frames(books["calm"], MONITORED), MONITORED)
    below_top = int((customers["tier"] != "private").sum())
    assert drifts["calm"]["tier_upgrade"].rows == below_top < len(customers)
    without_wealth = int((customers["has_wealth"] == 0).sum())
    assert drifts["calm"]["wealth_take_up"].rows == without_wealth < len(customers)


def test_a_month_not_scored_or_in_sample_is_refused(home, books, reviews):
    # no manifest at the default folder ($BOOKPULSE_HOME/scores/2026-08): score it first
    assert not default_out(home, "2026-08").exists()
    with pytest.raises(MonitorError, match="2026-08 has not been scored") as err:
        review(ReviewRequest(home, "2026-08", books["calm"]))
    assert "bookpulse score --as-of 2026-08" in str(err.value)
    manifest = json.loads((home / "scores-calm" / CHURN_MONTH / "manifest.json").read_text())
    manifest["as_of"] = "2026-01"
    early = home / "early" / "2026-01"
    early.mkdir(parents=True)
    (early / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MonitorError, match="in-sample"):
        outcomes(home, books["calm"], "2026-01", early)


def test_the_review_by_cause_measures_each_worked_list_against_its_hold_out(books, tmp_path):
    import shutil

    import pandas as pd

    from bookpulse.book import io
    from bookpulse.book.io import write_parquet
    from bookpulse.jobs.review import caused_by_lists

    specs, playbook = load_model_specs(), load_playbook()
    found, notes = caused_by_lists(books["calm"], CHURN_MONTH, specs, playbook)
    assert set(found) == {"retention", "upgrade", "activation"}, notes
    assert "list cross_sell by cause" in notes  # the bank does not work that list
    retention = found["retention"]
    t = retention.totals
    assert t["treated"] > 5 * t["control"] > 0
    assert t["effect_low"] < t["effect"] < t["effect_high"]
    assert retention.true_effect is not None and retention.true_effect < 0
    assert t["effect_low"] <= retention.true_effect <= t["effect_high"]
    per_rm = retention.by_group.loc[retention.by_group["level"].eq("rm")]
    assert (per_rm["treated"] + per_rm["control"]).sum() == t["listed"]
    # without a hold-out the list is not measured, and says why; without contacts, one line
    bare = tmp_path / "bare"
    shutil.copytree(books["calm"], bare)
    for month in io.available_months(bare, "contacts"):
        path = io.monthly_path(bare, "contacts", month)
        rows = pd.read_parquet(path)
        write_parquet(rows.loc[rows["assignment"].ne("control")], path)
    found, notes = caused_by_lists(bare, CHURN_MONTH, specs, playbook)
    assert not found and "randomised hold-out" in notes["list retention by cause"]
    shutil.rmtree(bare / "contacts")
    found, notes = caused_by_lists(bare, CHURN_MONTH, specs, playbook)
    assert not found and list(notes) == ["campaigns"]


def test_monthly_scores_monitors_reviews_what_just_closed_and_does_it_once(home, books):
    """The scheduler's command: June, then September (whose run reviews June, its churn
    window just closed), then September again: nothing is done twice."""
    from mlflow.tracking import MlflowClient as Client

    from bookpulse.jobs.monthly import EXIT_ACTION, EXIT_CALM, MonthlyRequest, monthly

    june = monthly(MonthlyRequest(home, "2026-06", books["calm"]))
    assert (default_out(home, "2026-06") / "manifest.json").is_file()
    assert set(june.monitor) == {"churn", "tier_upgrade", "card_activation", "wealth_take_up"}
    assert not june.reviews  # nothing scored before it in this home
    assert any("2026-03 not reviewed" in n for n in june.notes)
    september = monthly(MonthlyRequest(home, "2026-09", books["calm"]))
    assert list(september.reviews) == ["2026-06"]  # the 3-month windows of June closed
    assert set(september.reviews["2026-06"]) >= {"churn", "tier_upgrade"}
    assert september.exit_code == (EXIT_ACTION if september.needs_action else EXIT_CALM)
    assert all(v == "stable" for v in september.monitor.values()), september.monitor
    tracking.configure(home)
    exp = Client().get_experiment_by_name(EXPERIMENT).experiment_id
    runs = len(Client().search_runs([exp], max_results=1000))
    again = monthly(MonthlyRequest(home, "2026-09", books["calm"]))
    assert again.already_done and again.reviews == september.reviews
    assert again.exit_code == september.exit_code
    assert len(Client().search_runs([exp], max_results=1000)) == runs  # nothing logged twice
    runner = CliRunner()
    res = runner.invoke(
        cli.app,
        ["monthly", "--as-of", "2026-09", "--book", str(books["calm"])],
        env={"BOOKPULSE_HOME": str(home)},
    )
    assert res.exit_code == september.exit_code, res.output
    assert "already done" in res.output


def test_monthly_exit_codes_tell_a_scheduler_what_to_do():
    from bookpulse.jobs.monthly import EXIT_ACTION, EXIT_CALM, MonthlyResult

    calm = MonthlyResult("2026-09", {}, {"churn": "stable", "tier_upgrade": "watch"})
    assert calm.exit_code == EXIT_CALM == 0 and not calm.needs_action
    drift = MonthlyResult("2026-09", {}, {"churn": "act"})
    assert drift.exit_code == EXIT_ACTION == 3 and "churn" in drift.needs_action[0]
    off = MonthlyResult("2026-09", {}, {}, {"2026-06": {"churn": "off promise"}})
    assert off.exit_code == EXIT_ACTION and "2026-06" in off.needs_action[0]
