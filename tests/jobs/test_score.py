"""`bookpulse score` (local engine): outputs, lists, manifest, safety, re-runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bookpulse.adapters import publish
from bookpulse.adapters.publish import default_out, file_entries, read_scores
from bookpulse.book import io
from bookpulse.errors import BookpulseError, ScoringError
from bookpulse.jobs.score import score_month
from bookpulse.model.lists import rm_caps


@pytest.fixture(scope="module")
def scored(trainable_book, champions, catalogs, playbook, score_month, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    out = default_out(home, score_month)
    manifest = score_month_run(trainable_book, home, score_month, champions, catalogs, playbook)
    return home, out, manifest


def score_month_run(book, home, month, champions, catalogs, playbook, out=None):
    out = out or default_out(home, month)
    return score_month(book, month, champions, catalogs, playbook, out)


def test_every_active_customer_and_new_card_is_scored(scored, trainable_book, score_month):
    from bookpulse.features import build_from_book

    _, out, manifest = scored
    customers, cards = build_from_book(trainable_book, score_month)
    cust = read_scores(out, "customer")
    assert list(cust["customer_id"]) == sorted(customers["customer_id"])
    assert cust["churn_probability"].between(0, 1).all()
    private = cust["tier"] == "private"
    assert private.any()
    assert cust.loc[~private, "upgrade_probability"].notna().all()
    assert cust.loc[private, "upgrade_probability"].isna().all()
    # wealth take-up scores the customers holding no wealth product at T, and only them
    holds = customers.set_index("customer_id")["has_wealth"].reindex(cust["customer_id"]) > 0
    holds = holds.to_numpy()
    assert holds.any() and not holds.all()
    assert cust.loc[~holds, "wealth_probability"].between(0, 1).all()
    assert cust.loc[holds, "wealth_probability"].isna().all()
    card = read_scores(out, "card")
    assert sorted(card["card_id"]) == sorted(cards["card_id"])
    assert manifest.rows_out["customers"] == len(cust)
    assert manifest.rows_in["active_customers"] == len(customers)
    # deciles split the book in tenths, decile 1 holding the highest scores
    counts = cust["churn_decile"].value_counts()
    assert counts.max() - counts.min() <= 0.02 * len(cust) + 2
    top = cust.loc[cust["churn_decile"] == 1, "churn_probability"].min()
    assert top >= cust.loc[cust["churn_decile"] == 2, "churn_probability"].max()


def test_the_manifest_names_models_and_checks_every_file(scored, champions):
    _, out, manifest = scored
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["files"] == file_entries(out)
    assert set(on_disk["files"]) >= {
        "customers.parquet",
        "cards.parquet",
        "lists/retention.csv",
        "lists/retention.parquet",
        "lists/upgrade.csv",
        "lists/activation.csv",
        "lists/cross_sell.csv",
    }
    assert set(on_disk["models"]) == set(champions) == set(manifest.models)
    for name, m in on_disk["models"].items():
        assert m["version"] == "7" and m["spec_hash"] == champions[name].spec.spec_hash
        assert manifest.models[name].version == "7"
    # the typed manifest is what is on disk
    assert publish.Manifest.read(out) == manifest
    assert manifest.model_dump(mode="json") == on_disk
    assert {"validate", "features", "scoring", "lists", "write", "total"} <= set(
        on_disk["timings_seconds"]
    )


def test_a_folder_without_a_manifest_or_with_a_broken_one_is_refused(tmp_path):
    with pytest.raises(BookpulseError, match="holds no published month"):
        publish.Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text('{"as_of": "2026-09"}')
    with pytest.raises(BookpulseError, match="is not a scoring manifest"):
        publish.Manifest.read(tmp_path)


def test_lists_are_ranked_capped_per_rm_and_carry_an_action(scored, trainable_book, playbook):
    _, out, _ = scored
    rms = io.read_static(trainable_book, "rms")
    for name, lst in playbook.lists.items():
        df = pd.read_csv(out / "lists" / f"{name}.csv")
        assert len(df) > 0, name
        caps = rm_caps(rms, lst)
        per_rm = df.groupby("rm_id")["rank"].agg(["max", "count"])
        assert (per_rm["count"] <= caps.reindex(per_rm.index)).all()
        assert (per_rm["max"] == per_rm["count"]).all(), "ranks run 1..n within an RM"
        ascending = lst.rank == "lowest_first"
        by_value = df["expected_value"].notna().any()  # an uplift champion ranks it
        assert by_value == (name == "retention"), name  # the fixture's one uplift champion
        for _, g in df.groupby("rm_id"):
            g = g.sort_values("rank")
            if by_value:  # the most value of a call first
                assert (np.diff(g["expected_value"].to_numpy()) <= 0).all()
                continue
            p = g["probability"].to_numpy()
            assert (np.diff(p) >= 0).all() if ascending else (np.diff(p) <= 0).all()
        if not ascending:
            assert (df["decile"] <= lst.max_decile).all()
        # a tenth of each list held out at random, not contacted
        assert set(df["assignment"]) == {"treated", "control"}
        assert 0.03 < df["assignment"].eq("control").mean() < 0.2
        if by_value:
            assert (df["expected_value"] > 0).all()  # no call for whom it is expected to harm
            said = df["expected_effect"]
            assert said.str.contains(
                r"^a call (?:lowers|raises|hardly changes) this customer's"
            ).all()
            assert said.str.contains("at stake").all()
        assert df["suggested_action"].str.len().min() > 10 and df["reason"].notna().all()
        for _, row in df.head(20).iterrows():
            assert row["suggested_action"] == lst.action_for(row["segment"], row["tier"])


def test_a_rerun_gives_identical_files_and_duplicates_nothing(
    scored, trainable_book, champions, catalogs, playbook, score_month
):
    home, out, first = scored
    again = score_month_run(trainable_book, home, score_month, champions, catalogs, playbook)
    assert again.files == first.files
    siblings = [p.name for p in out.parent.iterdir()]
    assert siblings == [score_month], "no temporary or old folders left behind"


def test_a_crash_mid_run_publishes_nothing_and_keeps_the_last_month(
    scored, trainable_book, champions, catalogs, playbook, score_month, monkeypatch
):
    home, out, _ = scored
    before = file_entries(out)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(publish, "_write_table", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        score_month_run(trainable_book, home, score_month, champions, catalogs, playbook)
    monkeypatch.undo()
    assert file_entries(out) == before
    assert [p.name for p in out.parent.iterdir()] == [score_month]
    # and a re-run completes cleanly
    after = score_month_run(trainable_book, home, score_month, champions, catalogs, playbook)
    assert after.files == before


def test_a_bad_book_is_refused_before_anything_is_written(
    trainable_book, champions, catalogs, playbook, score_month, tmp_path
):
    book = tmp_path / "book"
    shutil.copytree(trainable_book, book)
    snap = io.monthly_path(book, "snapshots", score_month)
    df = pd.read_parquet(snap)
    df.loc[df.index[:3], "aum_current"] = -5.0
    df.to_parquet(snap)
    with pytest.raises(ScoringError, match="aum_current") as err:
        score_month_run(book, tmp_path, score_month, champions, catalogs, playbook)
    assert "bookpulse book validate" in str(err.value)
    assert not (tmp_path / "scores").exists()
    with pytest.raises(ScoringError, match="not a month of the book"):
        score_month_run(book, tmp_path, "2031-01", champions, catalogs, playbook)


def test_a_model_needing_a_feature_the_pipeline_lacks_is_refused(
    trainable_book, champions, catalogs, playbook, score_month, tmp_path
):
    from dataclasses import replace

    churn = champions["churn"]
    renamed = replace(churn.model, features=[*churn.model.features[:-1], "retired_feature"])
    broken = {**champions, "churn": replace(churn, model=renamed)}
    with pytest.raises(ScoringError, match="retired_feature"):
        score_month_run(trainable_book, tmp_path, score_month, broken, catalogs, playbook)
    assert not (tmp_path / "scores").exists()


def test_score_command_explains_a_missing_champion(tmp_path, trainable_book) -> None:
    from typer.testing import CliRunner

    from bookpulse import cli

    env = {"BOOKPULSE_HOME": str(tmp_path)}
    res = CliRunner().invoke(cli.app, ["score", "--book", str(trainable_book)], env=env)
    assert res.exit_code == 2, res.output
    assert "no champion" in res.output and "bookpulse promote" in res.output
    res = CliRunner().invoke(cli.app, ["score", "--engine", "dask"], env=env)
    assert res.exit_code == 2 and "unknown engine" in res.output


def test_a_list_its_uplift_model_cannot_rank_says_why_in_one_line(
    trainable_book, champions, playbook, tmp_path
):
    import shutil

    from bookpulse.jobs.score import lists_by_score

    said = lists_by_score(trainable_book, playbook, champions)
    # the fixture's churn champion carries the retention call's model; the others have none
    assert set(said) == {"list upgrade by expected value", "list activation by expected value"}
    assert all("has no champion yet" in why and "ranked by the" in why for why in said.values())
    bare = tmp_path / "bare"
    shutil.copytree(trainable_book, bare)
    shutil.rmtree(bare / "contacts")
    said = lists_by_score(bare, playbook, champions)
    assert all("no contacts table" in why for why in said.values()) and len(said) == 2


def test_the_review_counts_the_risk_list_against_the_value_list_with_the_truth(
    scored, trainable_book, score_month, tmp_path
):
    import shutil

    from bookpulse.jobs.review import risk_against_value
    from bookpulse.specs import load_model_specs, load_playbook

    _, out, _ = scored
    specs, playbook = load_model_specs(), load_playbook()
    against = risk_against_value(trainable_book, score_month, out, specs, playbook)
    assert set(against) == {"retention"}  # the one list an uplift model scored
    c = against["retention"]
    # the same RM capacity; ranked by value, nobody a call is expected to harm is listed
    assert c["risk_listed"] >= c["value_listed"] > 20
    assert 0.8 < c["value_rows"] / c["value_listed"] < 0.97  # the treated rows: a tenth held out
    for key in ("risk_kept", "value_kept", "risk_assets", "value_assets"):
        assert np.isfinite(c[key]), key
    assert c["risk_kept"] != c["value_kept"]  # two rankings, two lists (benchmarks/uplift.py
    # measures which keeps more, on books large enough for the answer to mean something)
    bare = tmp_path / "bare"
    shutil.copytree(trainable_book, bare, ignore=shutil.ignore_patterns("truth"))
    assert risk_against_value(bare, score_month, out, specs, playbook) == {}
