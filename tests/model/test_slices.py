"""Weak spots and fairness tables: a group is flagged only when it departs from the rest of
the book materially and beyond noise, after the correction for the number of groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from bookpulse.model.slices import (
    count_p_value,
    flagged,
    markdown,
    slice_table,
    step_up,
    top_share_listed,
)


def _book(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 12, n)
    return p, (rng.random(n) < p).astype(int), rng


def test_a_calibrated_book_has_no_weak_spot_even_across_many_groups():
    p, y, rng = _book(40_000, 1)
    groups = pd.DataFrame({"branch": rng.integers(0, 60, len(p)).astype(str)})
    table = slice_table(y, p, groups)
    assert len(table) == 60
    assert not table["flag"].any(), flagged(table)
    # without the correction some of the 60 groups would pass a plain 95% test by chance
    assert (table["oe_z"].abs() > 1.96).sum() >= 1


def test_a_group_hit_harder_is_named_and_its_size_matters():
    p, _, rng = _book(30_000, 2)
    tier = np.where(rng.random(len(p)) < 0.2, "effective", "mid_or_other")
    tiny = rng.random(len(p)) < 0.002  # some 60 rows hit as hard
    tier = np.where(tiny, "tiny", tier)
    hit = (tier == "effective") | (tier == "tiny")
    y = (rng.random(len(p)) < np.where(hit, np.minimum(1.6 * p, 1), p)).astype(int)
    table = slice_table(y, p, pd.DataFrame({"tier": tier})).set_index("group")
    assert table.loc["effective", "flag"]
    assert "more events than predicted" in table.loc["effective", "note"]
    assert table.loc["effective", "observed_over_expected"] > 1.4
    assert not table.loc["tiny", "flag"]  # as far off, but 60 rows are within noise
    assert not table.loc["mid_or_other", "flag"]
    assert flagged(table.reset_index())[0].startswith("tier effective: more events")


def test_a_difference_must_be_material_as_well_as_real():
    """On a large book a 10% miss is real but not worth a reviewer's time; 50% is."""
    p, _, rng = _book(200_000, 3)
    band = rng.choice(["a", "b", "c"], len(p))
    lift = np.select([band == "b", band == "c"], [1.1, 1.5], 1.0)
    y = (rng.random(len(p)) < np.minimum(p * lift, 1)).astype(int)
    table = slice_table(y, p, pd.DataFrame({"band": band})).set_index("group")
    assert table.loc["b", "oe_z"] > 4  # beyond noise ...
    assert not table.loc["b", "flag"]  # ... but within 20%
    assert table.loc["c", "flag"]
    assert not table.loc["a", "flag"]


def test_one_event_in_a_group_that_expected_almost_none_is_not_a_weak_spot():
    p, y, rng = _book(5_000, 7)
    tier = np.where(np.arange(len(p)) < 10, "private", "other")
    p[:10], y[:10] = 0.0066, 0  # ten rows expecting 0.07 events between them ...
    y[0] = 1  # ... had one: O/E 15, a z of 3.7, and a Poisson chance of 6%
    table = slice_table(y, p, pd.DataFrame({"tier": tier})).set_index("group")
    assert table.loc["private", "observed_over_expected"] > 10
    assert not table.loc["private", "flag"]
    assert count_p_value(1, p[:10]) > 0.1


def test_a_group_the_model_cannot_rank_is_flagged_on_ranking():
    p, y, rng = _book(30_000, 4)
    region = np.where(rng.random(len(p)) < 0.25, "west", "east")
    west = region == "west"
    noisy = p.copy()
    noisy[west] = rng.permutation(p[west])  # scores unrelated to outcomes there
    table = slice_table(y, noisy, pd.DataFrame({"region": region})).set_index("group")
    assert table.loc["west", "flag"]
    assert "AUC" in table.loc["west", "note"]
    assert table.loc["west", "auc"] < 0.6 < table.loc["east", "auc"]


def test_listing_rates_follow_the_four_fifths_rule_beyond_noise():
    p, y, rng = _book(20_000, 5)
    gender = rng.choice(["F", "M"], len(p))
    listed = top_share_listed(p, np.zeros(len(p)))
    assert listed.sum() == 2_000
    fair = slice_table(y, p, pd.DataFrame({"gender": gender}), listed)
    assert not fair["flag"].any(), flagged(fair)
    skewed = listed & ~((gender == "F") & (rng.random(len(p)) < 0.5))  # half the women dropped
    table = slice_table(y, p, pd.DataFrame({"gender": gender}), skewed).set_index("group")
    assert table.loc["F", "flag"] and "listed" in table.loc["F", "note"]
    assert 0.4 < table.loc["F", "listing_rate"] / table.loc["M", "listing_rate"] < 0.6


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_the_step_up_rule_sits_between_bonferroni_and_no_correction(ps):
    rejected = step_up(ps)
    m = len(ps)
    for pv, r in zip(ps, rejected, strict=True):
        if pv <= 0.05 / m:
            assert r  # Bonferroni's rejections are the step-up rule's too
        if r:
            assert pv <= 0.05  # nothing above the level is ever rejected
    # rejections are a prefix of the sorted p-values
    if any(rejected):
        assert max(pv for pv, r in zip(ps, rejected, strict=True) if r) <= min(
            [pv for pv, r in zip(ps, rejected, strict=True) if not r], default=1.0
        )


def test_the_top_tenth_is_taken_within_each_month():
    p = np.array([0.9, 0.8, 0.1, 0.2, 0.05, 0.01, 0.3, 0.4, 0.5, 0.6, 0.7, 0.95])
    month = np.array(["a"] * 6 + ["b"] * 6)
    listed = top_share_listed(p, month)
    assert listed.tolist() == [True] + [False] * 10 + [True]


def test_the_markdown_table_shows_rates_as_percentages():
    p, y, rng = _book(5_000, 6)
    age = pd.Categorical(rng.choice(["under_30", "75_plus"], len(p)), ["under_30", "75_plus"])
    text = markdown(slice_table(y, p, pd.DataFrame({"age_band": age})))
    assert "age band | under_30" in text  # the categories' declared order
    assert text.index("under_30") < text.index("75_plus")
    assert "%" in text.splitlines()[2]
    assert "listed" not in text.splitlines()[0]  # no list, no listing columns


def test_fairness_asks_whether_one_group_is_served_worse_than_the_others():
    """A month when every group is off alike is no disparity: against the book's level,
    neither gender is flagged; a group off twice as much as the others is."""
    p, _, rng = _book(40_000, 8)
    gender = rng.choice(["F", "M"], len(p))
    y = (rng.random(len(p)) < np.minimum(1.5 * p, 1)).astype(int)  # everyone 1.5x
    alike = slice_table(y, p, pd.DataFrame({"gender": gender}), against_book=True)
    assert not alike["flag"].any(), flagged(alike)
    assert slice_table(y, p, pd.DataFrame({"gender": gender}))["flag"].all()  # both off 1
    band = rng.choice(["young", "middle", "old"], len(p), p=[0.4, 0.45, 0.15])
    y = (rng.random(len(p)) < np.minimum(np.where(band == "old", 3, 1.5) * p, 1)).astype(int)
    table = slice_table(y, p, pd.DataFrame({"age_band": band}), against_book=True)
    assert [line.split(":")[0] for line in flagged(table)] == ["age band old"]
    assert "more events than the book" in table.set_index("group").loc["old", "note"]


def test_a_narrow_group_ranks_less_well_than_the_book_and_is_no_weak_spot():
    """Within a tier the scores span a narrow range: any model ranks less well there than
    across the book. Judged against what its own scores expect, such a tier is not flagged."""
    rng = np.random.default_rng(9)
    tier = rng.integers(0, 4, 40_000)
    p = 1 / (1 + np.exp(-(-4.5 + 1.1 * tier + rng.normal(0, 0.35, len(tier)))))
    y = (rng.random(len(p)) < p).astype(int)
    table = slice_table(y, p, pd.DataFrame({"tier": tier.astype(str)})).set_index("group")
    book_auc = float(roc_auc_score(y, p))
    assert (book_auc - table["auc"] > 0.1).all()  # every tier far under the book ...
    assert not table["flag"].any(), flagged(table.reset_index())  # ... as its scores expect
    assert (table["expected_auc"] - table["auc"]).abs().max() < 0.05
