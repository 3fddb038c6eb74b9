"""The simulator's campaign practice (`bookpulse.synthetic.campaigns`): the contacts it records
follow the bank's rules, the true effects have the sizes the README states, and the outcomes
the book shows agree with the truth it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bookpulse.book import io
from bookpulse.book.validate import validate_book
from bookpulse.labels import labelled_months, labels_for_month
from bookpulse.specs import load_model_specs
from bookpulse.synthetic import campaigns as cmp
from bookpulse.synthetic.simulate import BookSpec, generate_book


@pytest.fixture(scope="module")
def contacts(realism_book: Path) -> pd.DataFrame:
    return io.read_monthly(realism_book, "contacts", io.available_months(realism_book, "contacts"))


@pytest.fixture(scope="module")
def listed(realism_book: Path, contacts: pd.DataFrame) -> pd.DataFrame:
    """Customer contacts with the truth at their list's month-end and the 3-month churn."""
    months = io.read_meta(realism_book)["months"]
    truth = io.read_truth(realism_book, months).rename(columns={"month": "list_month"})
    rows = contacts.loc[contacts["card_id"].isna()].merge(truth, on=["customer_id", "list_month"])
    return rows


def test_contacts_cover_every_month_after_the_first_and_validate(realism_book, contacts):
    months = io.read_meta(realism_book)["months"]
    assert io.available_months(realism_book, "contacts") == months[1:]
    assert validate_book(realism_book) == []
    assert (contacts["list_month"] < contacts["month"]).all()
    assert set(contacts["list"]) == {name for name, *_ in cmp.LISTS}


def test_each_list_holds_out_a_tenth_at_random_and_never_reaches_it(contacts):
    for name, part in contacts.groupby("list"):
        control = part["assignment"].eq("control")
        share = control.mean()
        se = np.sqrt(cmp.HOLD_OUT * (1 - cmp.HOLD_OUT) / len(part))
        assert abs(share - cmp.HOLD_OUT) < 4 * se, name
        assert not part.loc[control, "reached"].any()
        reached = part.loc[~control, "reached"].mean()
        assert 0.55 <= reached <= 0.85, (name, reached)


def test_rms_work_their_lists_within_capacity(realism_book, contacts):
    rms = io.read_static(realism_book, "rms").set_index("rm_id")["capacity"]
    per_rm = contacts.groupby(["list", "month", "rm_id"]).size()
    for name, _, share, _ in cmp.LISTS:
        worked = per_rm.loc[name]
        cap = np.floor(rms.reindex(worked.index.get_level_values("rm_id")).to_numpy() * share)
        assert (worked.to_numpy() <= cap + 1).all(), name  # +1: capacity x share, rounded at random


def test_a_reached_retention_call_lowers_churn_by_a_modest_relative_amount(listed):
    retention = listed.loc[listed["list"].eq("retention")]
    reached = retention.loc[retention["reached"]]
    relative = reached["effect_call_3m"].mean() / reached["p_churn_3m"].mean()
    assert -0.30 <= relative <= -0.10
    # a few sleeping dogs: the call raises their churn risk
    assert 0.0 < (retention["effect_call_3m"] > 0).mean() < 0.10


def test_effects_are_strongest_for_liquid_customers_and_nil_for_no_one_else(realism_book):
    month = io.read_meta(realism_book)["months"][-6]
    truth = io.read_truth(realism_book, [month])
    snap = io.read_monthly(
        realism_book, "snapshots", [month], ["customer_id", "aum_total", "external_assets_est"]
    )
    rows = truth.merge(snap, on="customer_id")
    gap = np.log1p(rows["external_assets_est"]) - np.log1p(rows["aum_total"])
    mid = rows["aum_total"].between(50_000, 500_000)
    liquid = mid & (gap > 2)
    potential = rows["aum_total"] < 10_000
    # relative to the risk: a call lowers it most for liquid mid-tier customers
    rel = rows["effect_call_3m"] / rows["p_churn_3m"]
    assert rel[liquid].median() < 1.5 * rel[potential].median() < 0
    assert (
        rows.loc[liquid, "effect_offer_3m"].mean()
        > rows.loc[mid & (gap < 0), "effect_offer_3m"].mean()
    )
    cards = pd.read_parquet(realism_book / io.TRUTH_DIR / "cards.parquet")
    assert cards["effect_follow_up_30d"].notna().all() and (cards["reach_follow_up"] > 0).all()


def test_treated_against_control_churn_matches_the_truths_average_effect(listed, realism_book):
    """Realised 3-month churn of the treated arm minus the control's estimates the average of
    reach x effect the truth gives for the treated: the truth is what the book does."""
    target = load_model_specs()["churn"].target
    months = io.read_meta(realism_book)["months"]
    labels = pd.concat(
        [
            labels_for_month(realism_book, target, m, months).assign(list_month=io.month_end(m))
            for m in labelled_months(months, target)
        ]
    )
    rows = listed.loc[listed["list"].eq("retention")].merge(
        labels, on=["customer_id", "list_month"]
    )
    assert len(rows) > 20_000
    y = rows[target.label].to_numpy(float)
    treated = rows["assignment"].eq("treated").to_numpy()
    diff = y[treated].mean() - y[~treated].mean()
    se = np.sqrt(y[treated].var() / treated.sum() + y[~treated].var() / (~treated).sum())
    itt = (rows["effect_call_3m"] * rows["reach_call"]).to_numpy()[treated].mean()
    assert itt < 0
    assert abs(diff - itt) < 2.6 * se, (diff, itt, se)


def test_a_book_without_campaigns_has_no_contacts_and_no_effects(tmp_path: Path):
    out = tmp_path / "book"
    generate_book(
        BookSpec(customers=800, months=6, seed=5, end_month="2026-10", campaigns=False), out
    )
    assert io.available_months(out, "contacts") == []
    truth = io.read_truth(out, io.read_meta(out)["months"][:1])
    assert not any(c.startswith(("effect_", "reach_")) for c in truth.columns)
    assert validate_book(out) == []
