"""Shocks in the simulator: a deposit-rate cut and a card campaign change the world from their
month on, and nothing before it."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bookpulse import labels
from bookpulse.book import io
from bookpulse.domain import is_attrited, tier_index
from bookpulse.specs import load_model_specs
from bookpulse.synthetic.simulate import SHOCK_KINDS, BookSpec, Shock, generate_book

SPEC = BookSpec(customers=4_000, months=16, seed=21, end_month="2026-10")  # 2025-07 .. 2026-10
SHOCK_MONTH = "2026-04"
STATIC = ("customers", "branches", "rms", "relationships")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _book(tmp: Path, name: str, *shocks: Shock, spec: BookSpec = SPEC) -> Path:
    out = tmp / name
    generate_book(BookSpec(**{**spec.__dict__, "shocks": shocks}), out)
    return out


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("shocks")
    return {
        "base": _book(tmp, "base"),
        "rate_cut": _book(tmp, "rate_cut", Shock("rate_cut", SHOCK_MONTH)),
        "card_campaign": _book(tmp, "card_campaign", Shock("card_campaign", SHOCK_MONTH)),
    }


def assert_same_before(a: Path, b: Path, month: str) -> None:
    """Everything dated before `month` is the same in books a and b (point in time)."""
    for name in STATIC:
        assert _digest(a / f"{name}.parquet") == _digest(b / f"{name}.parquet"), name
    months = io.read_meta(a)["months"]
    before = [m for m in months if m < month]
    for m in before:
        for path in (
            io.monthly_path(Path(), "snapshots", m),
            io.monthly_path(Path(), "card_spend", m),
            io.truth_monthly_path(Path(), m),
        ):
            assert _digest(a / path) == _digest(b / path), (str(path), m)
    start = pd.Timestamp(f"{month}-01")
    ca, cb = (io.read_static(x, "cards").set_index("card_id") for x in (a, b))
    ca, cb = (c.loc[c["issue_date"] < start] for c in (ca, cb))
    # a first use on or after the month may differ (the holder may leave before it)
    for c in (ca, cb):
        c.loc[c["first_use_date"] >= start, "first_use_date"] = pd.NaT
    pd.testing.assert_frame_equal(ca, cb)
    ta, tb = (pd.read_parquet(x / io.TRUTH_DIR / "cards.parquet") for x in (a, b))
    ta, tb = (t.loc[t["as_of"] < start].reset_index(drop=True) for t in (ta, tb))
    pd.testing.assert_frame_equal(ta, tb)


# --- no shock --------------------------------------------------------------------------------


def test_no_shock_is_the_same_book_as_a_shock_after_its_end(tmp_path: Path) -> None:
    spec = BookSpec(customers=3_000, months=18, seed=4, end_month="2026-10")
    plain = _book(tmp_path, "plain", spec=spec)
    late = _book(
        tmp_path,
        "late",
        Shock("rate_cut", "2026-11"),
        Shock("card_campaign", "2027-03", 9),
        spec=spec,
    )
    files = sorted(p.relative_to(plain) for p in plain.rglob("*.parquet"))
    assert files == sorted(p.relative_to(late) for p in late.rglob("*.parquet"))
    for f in files:
        assert _digest(plain / f) == _digest(late / f), str(f)
    meta_plain, meta_late = io.read_meta(plain), io.read_meta(late)
    assert meta_plain["shocks"] == []
    assert meta_late["shocks"][1] == {
        "kind": "card_campaign",
        "from_month": "2027-03",
        "strength": 9.0,
    }
    assert {k: v for k, v in meta_late.items() if k != "shocks"} == {
        k: v for k, v in meta_plain.items() if k != "shocks"
    }


# --- rate cut --------------------------------------------------------------------------------


def _snapshots(book: Path) -> pd.DataFrame:
    snaps = io.read_monthly(book, "snapshots", io.read_meta(book)["months"])
    snaps["attrited"] = is_attrited(
        snaps["status"], snaps["aum_total"], snaps["txn_count"], snaps["digital_logins"]
    )
    return snaps


def _monthly_churn(snaps: pd.DataFrame, ids: pd.Index | None = None) -> pd.Series:
    """Share of customers active at month-end t-1 who are attrited (or gone) at t."""
    if ids is not None:
        snaps = snaps.loc[snaps["customer_id"].isin(ids)]
    att = snaps.pivot(index="customer_id", columns="month", values="attrited")
    cols = list(att.columns)
    return pd.Series(
        {
            io.month_key(b): att.loc[att[a].eq(False), b].fillna(True).astype(bool).mean()
            for a, b in zip(cols[:-1], cols[1:], strict=True)
        }
    )


def test_rate_cut_changes_nothing_before_its_month(books: dict[str, Path]) -> None:
    assert_same_before(books["base"], books["rate_cut"], SHOCK_MONTH)
    snap = io.read_monthly(books["rate_cut"], "snapshots", [SHOCK_MONTH])
    base = io.read_monthly(books["base"], "snapshots", [SHOCK_MONTH])
    assert not snap["aum_total"].equals(base["aum_total"])  # and something from it on
    assert io.read_meta(books["rate_cut"])["shocks"] == [
        {"kind": "rate_cut", "from_month": SHOCK_MONTH, "strength": 1.0}
    ]


def test_rate_cut_drains_mid_tier_balances_and_raises_churn(books: dict[str, Path]) -> None:
    base, cut = _snapshots(books["base"]), _snapshots(books["rate_cut"])
    before = io.month_end(pd.Period(SHOCK_MONTH, freq="M") - 1)
    last = base.loc[base["month"] == before]
    middle = last.loc[np.isin(tier_index(last["aum_total"]), [1, 2]) & ~last["attrited"]]
    ids = pd.Index(middle["customer_id"])

    def cohort_aum(snaps: pd.DataFrame, month: pd.Timestamp) -> float:
        rows = snaps.loc[(snaps["month"] == month) & snaps["customer_id"].isin(ids)]
        return float(rows["aum_total"].sum())

    ratios = [
        cohort_aum(cut, io.month_end(pd.Period(SHOCK_MONTH, freq="M") + k))
        / cohort_aum(base, io.month_end(pd.Period(SHOCK_MONTH, freq="M") + k))
        for k in range(4)
    ]
    # the money leaves month after month: about half of it is gone after four months
    assert ratios[0] < 0.95 and ratios[3] < 0.7, ratios
    assert all(b < a for a, b in zip(ratios, ratios[1:], strict=False)), ratios

    after = [m for m in io.read_meta(books["base"])["months"] if m >= SHOCK_MONTH]
    churn_base, churn_cut = _monthly_churn(base), _monthly_churn(cut)
    # book-wide (the potential tier, over half the book, is untouched) and among the cut's targets
    assert churn_cut[after].mean() > 1.25 * churn_base[after].mean()
    mid_base, mid_cut = _monthly_churn(base, ids), _monthly_churn(cut, ids)
    assert mid_cut[after].mean() > 2.0 * mid_base[after].mean()


def test_rate_cut_truth_follows_the_shocked_world(books: dict[str, Path]) -> None:
    months = io.read_meta(books["base"])["months"]
    truth = {
        k: io.read_monthly(books[k] / io.TRUTH_DIR, "customer_month", months).groupby("month")[
            "p_churn_3m"
        ]
        for k in ("base", "rate_cut")
    }
    # labelled months from the shock on: the truth rises with the realised churn and matches it
    churn = load_model_specs()["churn"].target
    window = [m for m in labels.labelled_months(months, churn) if m >= SHOCK_MONTH]
    realised = np.mean(
        [
            labels.labels_for_month(books["rate_cut"], churn, m, months)["churned"].mean()
            for m in window
        ]
    )
    p_cut = truth["rate_cut"].mean().loc[[io.month_end(m) for m in window]].mean()
    p_base = truth["base"].mean().loc[[io.month_end(m) for m in window]].mean()
    assert p_cut > 1.3 * p_base
    assert abs(realised - p_cut) < 0.15 * p_cut, (realised, p_cut, p_base)


# --- card campaign ---------------------------------------------------------------------------


def _new_cards(book: Path) -> pd.DataFrame:
    cards = io.read_static(book, "cards")
    cards["month"] = cards["issue_date"].dt.to_period("M").astype(str)
    used = cards["first_use_date"] - cards["issue_date"]
    cards["used_30d"] = used.dt.days.le(30).fillna(False).astype(bool)
    return cards


def test_card_campaign_issues_many_bulk_cards_that_rarely_activate(
    books: dict[str, Path],
) -> None:
    assert_same_before(books["base"], books["card_campaign"], SHOCK_MONTH)
    cards = _new_cards(books["card_campaign"])
    months = sorted(cards["month"].unique())
    s = months.index(SHOCK_MONTH)
    before, during = months[s - 3 : s], months[s : s + 3]
    per_month = cards.groupby("month").size()
    assert per_month[during].min() > 4 * per_month[before].mean(), per_month
    bulk = cards.groupby("month")["channel"].apply(lambda c: (c == "bulk_corporate").mean())
    assert bulk[during].min() > 0.5 and bulk[before].max() < 0.35, bulk
    active = cards.groupby("month")["used_30d"].mean()
    assert active[during].mean() < 0.5 * active[before].mean(), active
    # after the quarter the campaign stops
    assert per_month[months[s + 3]] < 2 * per_month[before].mean()
    # the truth of the new cards follows: lower during the campaign, and close to what happened
    truth = pd.read_parquet(books["card_campaign"] / io.TRUTH_DIR / "cards.parquet")
    truth["month"] = truth["as_of"].dt.to_period("M").astype(str)
    p = truth.groupby("month")["p_activate_30d"].mean()
    assert p[during].mean() < 0.5 * p[before].mean()
    as_of = io.month_end(SHOCK_MONTH)
    issued = io.read_static(books["card_campaign"], "cards")
    realised = labels.first_use_labels(issued, as_of, 30, "activated")
    assert abs(realised["activated"].mean() - p[SHOCK_MONTH]) < 0.05


# --- any shock, any month: nothing before it changes ----------------------------------------

SMALL = BookSpec(customers=600, months=7, seed=13, end_month="2026-09")  # 2026-03 .. 2026-09


@pytest.fixture(scope="module")
def small_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _book(tmp_path_factory.mktemp("shocks_small"), "base", spec=SMALL)


@settings(max_examples=8, deadline=None)
@given(
    kind=st.sampled_from(SHOCK_KINDS),
    month=st.sampled_from(SMALL.month_keys()[1:]),
    strength=st.floats(1.5, 5.0),
)
def test_any_shock_leaves_every_earlier_month_alone(
    small_base: Path, kind: str, month: str, strength: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shocked = _book(Path(tmp), "shocked", Shock(kind, month, strength), spec=SMALL)
        assert_same_before(small_base, shocked, month)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate_cut@2026-05", Shock("rate_cut", "2026-05", 1.0)),
        ("card_campaign@2026-06:8", Shock("card_campaign", "2026-06", 8.0)),
        (" rate_cut@2026-05:0.5 ", Shock("rate_cut", "2026-05", 0.5)),
        ("card_campaign@2026-06", Shock("card_campaign", "2026-06", 6.0)),
    ],
)
def test_shock_parses(text: str, expected: Shock) -> None:
    assert Shock.parse(text) == expected
    assert Shock.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ratecut@2026-05", ["unknown shock kind", "rate_cut", "card_campaign"]),
        ("rate_cut", ["KIND@YYYY-MM[:STRENGTH]", "rate_cut", "card_campaign"]),
        ("rate_cut@2026-13", ["KIND@YYYY-MM[:STRENGTH]"]),
        ("rate_cut@05-2026", ["KIND@YYYY-MM[:STRENGTH]"]),
        ("card_campaign@2026-06:x", ["must be a number"]),
        ("card_campaign@2026-06:0.5", ["above 1"]),
        ("rate_cut@2026-06:-1", ["above 0"]),
        ("rate_cut@2026-06:nan", ["above 0"]),
    ],
)
def test_bad_shock_is_refused_with_a_clear_message(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        Shock.parse(text)
    for word in words:
        assert word in str(info.value)


@pytest.fixture
def cli(monkeypatch):
    from rich.console import Console

    from bookpulse import cli, cli_tables

    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=200))
        monkeypatch.setattr(module, "err", Console(width=200, stderr=True))
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.app, list(args), terminal_width=200)


GENERATE = ("book", "generate", "--customers", "300", "--months", "5", "--end-month", "2026-08")


def test_cli_generates_a_shocked_book(cli, tmp_path: Path) -> None:
    out = tmp_path / "book"
    res = cli(
        *GENERATE,
        "--out",
        str(out),
        "--shock",
        "rate_cut@2026-06",
        "--shock",
        "card_campaign@2026-07:8",
    )
    assert res.exit_code == 0, res.output
    assert "rate_cut@2026-06:1, card_campaign@2026-07:8" in res.output
    assert json.loads((out / "book.json").read_text())["shocks"] == [
        {"kind": "rate_cut", "from_month": "2026-06", "strength": 1.0},
        {"kind": "card_campaign", "from_month": "2026-07", "strength": 8.0},
    ]


@pytest.mark.parametrize(
    ("shock", "words"),
    [
        ("bonus@2026-06", ["rate_cut", "card_campaign", "KIND@YYYY-MM[:STRENGTH]"]),
        ("rate_cut@June", ["rate_cut", "card_campaign", "KIND@YYYY-MM[:STRENGTH]"]),
        ("card_campaign@2026-07:lots", ["must be a number"]),
        ("rate_cut@2026-04", ["first month (2026-04)"]),
        ("rate_cut@2025-01", ["first month (2026-04)"]),
    ],
)
def test_cli_refuses_a_bad_shock(cli, tmp_path: Path, shock: str, words: list[str]) -> None:
    res = cli(*GENERATE, "--out", str(tmp_path / "book"), "--shock", shock)
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)  # a message, no traceback
    assert "Traceback" not in res.output
    text = " ".join(res.output.replace("│", " ").split())
    for word in words:
        assert word in text, text
    assert not (tmp_path / "book").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left behind
