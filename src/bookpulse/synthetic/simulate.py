"""A vectorised, seed-deterministic simulator of a retail bank's customer book.

The mechanics follow DOMAIN.md; every number below is a choice, documented in the README
("The synthetic book"). In short, each customer has

* static traits: segment, age, branch and RM, household wealth, share of wallet (how much of
  it sits here), balance volatility, a hidden loyalty, an employer if paid through us;
* a hidden engagement state E that moves month by month through
  engaged (0) -> cooling (1) -> leaving (2) -> attrited, with transition odds set by the
  retention drivers (product lines with a sharp step at 4+, payroll, value-added services,
  RM care, share of wallet, tenure, tier, attrition among linked customers, loyalty);
  cooling and leaving customers show the warning signs: fewer logins and transactions,
  complaints, stopped payroll, money moving out;
* in-bank assets on the log scale, x = mu + u + season, where mu is the level the customer
  tends to, u a mean-reverting AR(1) wobble and season the segment's calendar (growers' spring
  dip and post-harvest inflow, merchants' new-year cash need, year-end bonuses). Engaged
  customers sometimes consolidate part of their external assets here (mu jumps), more often
  when the gap to their household wealth is wide and the RM is close; leaving customers drain;
* product lines that come and go; engaged customers take up a wealth product with monthly odds
  (``_wealth_take_up``) that rise with the tier (effective and mid above all, potential low),
  the assets held elsewhere, an RM contact in the month just ended, value-added services,
  payroll, mobile banking and the segment (business owners, elderly, women).

The truth (``truth/``) is the probability of each labelled event given the customer's true
state at the month-end, computed from the same transition law: churn by running the
engagement chain three months ahead; tier upgrade by summing over the chain's paths the normal
probability that x crosses the next tier boundary (AR(1) terms exact, one consolidation at
most); wealth take-up (``p_wealth_3m``, for customers without a wealth product) as one minus
the chance of no take-up in any month the chain spends engaged, the first month with the RM
contacts just seen and the later ones averaged over their Poisson draws; card activation from
the card's own activation propensity and first-use delay. The slowly changing drivers (product
lines, payroll, services, the tier and the gap for take-up) are held at their month-end values
over the window; that is the one approximation. The contagion of linked attritions known at
the month-end ages out over the window as it does in the simulation (`_ahead`). With
campaigns, the truth includes the responses in force and, for the treated rows of the lists
just drawn up, reach x effect (`synthetic.campaigns`).

Shocks (``BookSpec.shocks``) change the world from a given month on, for the monitoring and the
review to catch: a deposit-rate cut (``rate_cut``) drains effective- and mid-tier balances over
four months (the money goes to other institutions) and makes those customers far likelier to
leave, above all suddenly, which no warning sign announces; a card-issuance campaign
(``card_campaign``) pushes several times the usual number of cards for a quarter, mostly in bulk,
that activate much less than like cards did before. A shock is unforeseeable: it changes nothing
dated before its month, and the truth takes it into account from its month-end on (the truth
at the month-end just before it still describes the world without it). Its random draws come
from its own generator, so the book's own stream is untouched until the shock changes the
customers' paths.

The book is simulated in blocks of at most ``BookSpec.block_size`` customers, one after the
other, so memory depends on the block size and not on the book. Customers are laid out branch by
branch (customer ids run through the branches, the people of a branch in random order), and a
block is a run of consecutive customer ids. Households and market streets are cut from
consecutive customers of a block, so they stay within it. Friends are people near in that order,
and a business owner's two partners are merchants or business owners anywhere among the
customers simulated so far: in the block or in the blocks before it (a friend who would sit in a
later block is taken as far the other way). For every customer of a finished block the book
keeps a compact record: the month of attrition, month by month whether they were a live customer
of the high-end tier or above, and the onboarding date. A later customer linked to them reads
it, so contagion (a linked customer's attrition raising churn) and the pull of high-tier links
act across blocks as within one, but one way: the earlier customer's months are already written
when the later one attrites. Each block draws from its own random stream
``[seed, BLOCK_STREAM, block]``; a book of a single block draws from the seed's stream and is,
file for file and byte for byte, what the simulator wrote before blocks.

Every monthly file and the customers, relationships and cards tables are sorted by customer id
(snapshots and truth: one row per customer; cards and card spend: by customer, then card id,
except in a book of a single block, whose card tables keep the order of card ids as before), in
row groups of at most ``parts.ROW_GROUP_ROWS`` rows with statistics, so a reader asking for a
range of customers reads only the row groups that hold it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import expit, logit, ndtr

from bookpulse import __version__
from bookpulse.book import io
from bookpulse.domain import (
    ACTIVATION_WINDOW_DAYS,
    AREA_TYPES,
    CARD_CHANNELS,
    CARD_PRODUCTS,
    ONBOARD_CHANNELS,
    REGIONS,
    RELATIONSHIP_KINDS,
    SEGMENTS,
    TIER_LOWER_BOUNDS,
    TOP_TIER,
    tier_index,
)
from bookpulse.synthetic import campaigns as cmp
from bookpulse.synthetic.parts import ROW_GROUP_ROWS, PartFiles

GENERATOR = "bookpulse.synthetic.simulate"
# what books made before the package was layered say they were made by
GENERATORS = (GENERATOR, "bookpulse.book.simulate")

# Blocks: the most customers simulated at once (memory grows with it, not with the book: peak
# RSS 0.9 GiB for 1M customers x 24 months in blocks of 500,000, 1.15 GiB for 10M), and the
# smallest block a book may be cut into.
BLOCK_SIZE = 500_000
MIN_BLOCK_SIZE = 1_000
BLOCK_STREAM = 0xB10C  # a block's random stream is [seed, BLOCK_STREAM, block]
NEVER = np.iinfo(np.int16).max  # "no attrition" in the book's record of finished blocks
SPILL_DIR = ".spill"  # in the book's temporary folder: rows waiting for the end of the run

BO, ELD, MER, WOM, GRO, MAS = range(6)  # segment codes, in SEGMENTS order
BRANCH, ONLINE, TELE, BULK = range(4)  # card channel codes, in CARD_CHANNELS order

# --- mechanics (see module docstring and README) -------------------------------------------
SEG_SHARE_BY_AREA = np.array(
    # business_owner, elderly, merchant, women, grower, mass
    [
        [0.10, 0.14, 0.12, 0.18, 0.01, 0.45],  # urban
        [0.07, 0.16, 0.12, 0.15, 0.12, 0.38],  # county
        [0.03, 0.20, 0.06, 0.10, 0.40, 0.21],  # rural
    ]
)
LOG_WEALTH_MEAN = np.array([12.4, 10.8, 10.9, 10.1, 9.7, 9.6])  # household wealth, log CNY
SHARE_OF_WALLET_MEAN = np.array([0.22, 0.55, 0.35, 0.35, 0.50, 0.32])
VOLATILITY = np.array([0.12, 0.07, 0.20, 0.09, 0.13, 0.10])  # monthly sd of log AUM
PAYROLL_RATE = np.array([0.30, 0.05, 0.05, 0.40, 0.02, 0.45])
LOGINS_PER_MONTH = np.array([16.0, 4.0, 18.0, 20.0, 6.0, 24.0])
MOBILE_BANKING_RATE = np.array([0.80, 0.35, 0.75, 0.80, 0.45, 0.80])
BRANCH_VISITS = np.array([0.3, 1.5, 1.0, 0.4, 0.8, 0.3])
TXN_PER_MONTH = np.array([60.0, 18.0, 90.0, 42.0, 24.0, 36.0])
LOAN_RATE = np.array([0.35, 0.03, 0.40, 0.15, 0.05, 0.15])
SEGMENT_CHURN = np.array([0.15, -0.35, 0.20, 0.0, -0.10, 0.0])
# Seasonal component of log AUM by calendar month (Jan..Dec), per segment.
SEASON = np.zeros((6, 12))
SEASON[GRO] = [0.05, -0.05, -0.25, -0.45, -0.35, -0.15, 0.0, 0.05, 0.20, 0.40, 0.35, 0.20]
SEASON[MER] = [0.10, -0.20, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05]
SEASON -= SEASON.mean(axis=1, keepdims=True)
PAYROLL_BONUS = np.array([0.06, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.06])

RHO = 0.85  # AR(1) persistence of the log-AUM wobble
LOYALTY_SD = 0.2  # hidden loyalty, on the logit of cooling
DRAIN = 0.35  # log AUM leaving each month a customer is in the leaving state
DRAIN_COOLING = 0.0  # and in the cooling state
TIER_CARE = np.array([0.05, 0.15, 0.5, 1.2, 2.5])  # RM contacts per month by tier
REL_WEIGHT = np.array([1.0, 0.5, 0.7])  # contagion by relationship kind: family, friend, business
# Engagement chain: 0 engaged, 1 cooling, 2 leaving; attrition absorbs.
CHURN_BASE = -2.7  # logit of P(engaged -> cooling) for a driver score of 0
LEAVE_BASE = logit(0.20)  # logit of P(cooling -> leaving)
RECOVER_COOLING = 0.15
RECOVER_LEAVING = 0.25
EXIT_LEAVING = 0.20
SUDDEN_EXIT = np.array(
    [0.05, 0.05, 0.15, 0.10, 0.10]
)  # share of cooling odds that leave at once, by tier
CONSOLIDATE_BASE = -4.8  # logit of the monthly chance to move external assets here
# Wealth-product take-up: the logit of the monthly chance that an engaged customer without a
# wealth product buys one (cooling and leaving customers do not), from the state at the last
# month-end (README, "The synthetic book"; DOMAIN.md sections 1-3 and 6).
WEALTH_BASE = -5.1
WEALTH_TIER = np.array([-2.2, 0.0, 0.4, -0.2, -0.8])  # cross-selling targets effective and mid
WEALTH_SEGMENT = np.array([0.5, 0.6, 0.2, 0.3, 0.0, 0.0])  # in SEGMENTS order
WEALTH_GAP = 0.35  # per unit of log(external / in-bank assets), counted from 0 to 4
WEALTH_CONTACT = 0.7  # per RM contact in the month just ended, up to WEALTH_CONTACT_CAP
WEALTH_CONTACT_CAP = 2
WEALTH_VAS = 0.5
WEALTH_PAYROLL = 0.3
WEALTH_MOBILE = 0.3
# Windfalls (a bonus, a maturing deposit elsewhere, a house sale) reach anyone, unforeseeably;
# their size is normal on the log scale. Everyone spends a little each month.
WINDFALL_RATE = 0.016
WINDFALL_MEAN = 1.0
WINDFALL_SD = 0.5
SPENDING = 0.012
LOGIN_MULT = np.array([1.0, 0.3, 0.1])
TXN_MULT = np.array([1.0, 0.4, 0.2])
COMPLAINTS = np.array([0.01, 0.20, 0.35])
CARD_USE_MULT = np.array([1.0, 0.6, 0.3])
# Card activation: propensity logit by channel and mean first-use delay in days.
ACTIVATION_BASE = np.array([1.0, 1.3, -0.2, -3.6])
FIRST_USE_DELAY = np.array([12.0, 8.0, 20.0, 35.0])

# --- shocks ----------------------------------------------------------------------------------
SHOCK_KINDS: tuple[str, ...] = ("rate_cut", "card_campaign")
# strength: rate_cut scales the cut's effects (1 = the cut described below); card_campaign is the
# number of new cards in a campaign month as a multiple of the usual number.
SHOCK_DEFAULT_STRENGTH = {"rate_cut": 1.0, "card_campaign": 6.0}
SHOCK_STRENGTH_RANGE = {"rate_cut": (0.0, 5.0), "card_campaign": (1.0, 50.0)}  # (above, at most)
# Deposit-rate cut: customers in the effective and mid tiers (rate-sensitive savers) move part of
# their assets elsewhere over four months and are likelier to leave from then on.
RATE_CUT_TIERS = (1, 2)
RATE_CUT_MONTHS = 4  # months over which the money moves out
RATE_CUT_DRAIN = 1.5  # log AUM moved out over those months, times a Beta(2, 2) sensitivity
RATE_CUT_HAZARD = math.log(2.0)  # added to the churn driver score (the logit of cooling)
RATE_CUT_SUDDEN = 4.0  # and sudden exits (savers moving everything at once) this many times more
# Card campaign: a quarter of push issuance, mostly bulk, nobody managing activation.
CAMPAIGN_MONTHS = 3
CAMPAIGN_CHANNEL_P = np.array([0.0, 0.0, 0.2, 0.8])  # branch, online, telemarketing, bulk
CAMPAIGN_ACTIVATION = -1.0  # on the activation propensity logit, beside the channel's own
_SHOCK_RE = re.compile(
    r"(?P<kind>[a-z_]+)@(?P<month>\d{4}-(?:0[1-9]|1[0-2]))(?::(?P<strength>.+))?"
)
SHOCK_FORMAT = "KIND@YYYY-MM[:STRENGTH]"


@dataclass(frozen=True)
class Shock:
    """A change in the world from month `from_month` ('YYYY-MM') on; see the module docstring.

    `strength` defaults to the kind's usual size (SHOCK_DEFAULT_STRENGTH): for `rate_cut` a
    scale of the cut's effects (1.0), for `card_campaign` the month's new cards as a multiple of
    the usual number (6.0)."""

    kind: str
    from_month: str
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SHOCK_KINDS:
            raise ValueError(
                f"unknown shock kind {self.kind!r}: use one of {', '.join(SHOCK_KINDS)}"
            )
        if not (
            isinstance(self.from_month, str)
            and re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", self.from_month)
        ):
            raise ValueError(
                f"shock month {self.from_month!r} is not a month: write it as YYYY-MM, e.g. 2026-05"
            )
        strength = SHOCK_DEFAULT_STRENGTH[self.kind] if self.strength is None else self.strength
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise ValueError(f"shock strength {strength!r} is not a number") from None
        low, high = SHOCK_STRENGTH_RANGE[self.kind]
        if not low < strength <= high:  # also refuses nan
            what = "a multiple of the usual new cards, " if self.kind == "card_campaign" else ""
            raise ValueError(
                f"{self.kind} strength must be {what}above {low:g} and at most {high:g}, "
                f"not {strength:g}"
            )
        object.__setattr__(self, "strength", strength)

    @classmethod
    def parse(cls, text: str) -> Shock:
        """'rate_cut@2026-05' or 'card_campaign@2026-06:8' -> Shock. ValueError says why not."""
        m = _SHOCK_RE.fullmatch(text.strip())
        if m is None:
            raise ValueError(
                f"{text!r} is not a shock: write {SHOCK_FORMAT} with KIND one of "
                f"{', '.join(SHOCK_KINDS)}, e.g. rate_cut@2026-05 or card_campaign@2026-06:8"
            )
        strength = m["strength"]
        if strength is not None:
            try:
                strength = float(strength)
            except ValueError:
                raise ValueError(
                    f"{text!r}: the strength after ':' must be a number, e.g. {m['kind']}@"
                    f"{m['month']}:{SHOCK_DEFAULT_STRENGTH.get(m['kind'], 1.0):g}"
                ) from None
        try:
            return cls(m["kind"], m["month"], strength)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc} (write {SHOCK_FORMAT})") from None

    def __str__(self) -> str:
        return f"{self.kind}@{self.from_month}:{self.strength:g}"


@dataclass(frozen=True)
class BookSpec:
    """What to generate. `end_month` is the last month-end in the book ('YYYY-MM').

    `block_size`: the most customers simulated at once (module docstring). A book of more
    customers is cut into the fewest blocks of at most that many, of near-equal size; the
    blocks shape the book, so the same spec (block size included) gives the same files. A book
    of one block does not depend on it (and book.json does not record it).

    `campaigns`: the bank works its lists each month with randomised hold-outs and records the
    contacts (`synthetic.campaigns`); False gives a book without a contacts table."""

    customers: int = 20_000
    months: int = 24
    seed: int = 42
    end_month: str = "2026-10"
    shocks: tuple[Shock, ...] = ()
    block_size: int = BLOCK_SIZE
    campaigns: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "shocks", tuple(self.shocks))

    def block_bounds(self) -> list[tuple[int, int]]:
        """[(first, end)) positions of the customers of each block, in customer-id order."""
        k = max(1, -(-self.customers // self.block_size))
        ends = [self.customers * (b + 1) // k for b in range(k)]
        return list(zip([0, *ends[:-1]], ends, strict=True))

    def month_keys(self) -> list[str]:
        end = pd.Period(self.end_month, freq="M")
        return [str(p) for p in pd.period_range(end - (self.months - 1), end, freq="M")]


def _days(values) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[D]")


def _dict_array(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int8)), pa.array(list(names), pa.string())
    )


def _date_array(days: np.ndarray) -> pa.Array:
    mask = np.isnat(days)
    return pa.array(days.astype("datetime64[D]"), type=pa.date32(), mask=mask)


def _money(x: np.ndarray) -> np.ndarray:
    return np.round(np.maximum(x, 0.0), 2)


class _ShockState:
    """One shock during a run: when it starts (a month index), its own random generator and
    what it draws per customer of the block (`block` None: the book is one block)."""

    def __init__(
        self, shock: Shock, index: int, spec: BookSpec, start: int, n: int, block: int | None
    ):
        self.kind, self.strength, self.start = shock.kind, float(shock.strength), start
        kind_code = SHOCK_KINDS.index(shock.kind)
        stream = [spec.seed, 0x5EC7, index, kind_code]
        self.rng = np.random.default_rng(stream if block is None else [*stream, block])
        # rate_cut: how much of their money a customer moves when the rate is cut
        self.sensitivity = self.rng.beta(2.0, 2.0, size=n) if shock.kind == "rate_cut" else None
        # card_campaign: who has had a campaign card already
        self.reached = np.zeros(n, dtype=bool)

    def drain(self, month: int, tier: np.ndarray) -> np.ndarray:
        """Log AUM a rate cut moves out in month `month` (0 outside the drain months)."""
        if self.kind != "rate_cut" or not self.start <= month < self.start + RATE_CUT_MONTHS:
            return np.zeros(tier.size)
        hit = np.isin(tier, RATE_CUT_TIERS)
        return hit * self.sensitivity * (self.strength * RATE_CUT_DRAIN / RATE_CUT_MONTHS)


class _Book:
    """What the blocks share: the calendar, branches and RMs, where each block's customers sit
    in the branch order, and the compact record of the customers of finished blocks that later
    blocks' links read (a few bytes a customer). Used only by `generate_book`."""

    def __init__(self, spec: BookSpec):
        self.spec = spec
        self.n = spec.customers
        self.bounds = spec.block_bounds()
        self.single = len(self.bounds) == 1
        self.rng = np.random.default_rng(spec.seed)
        self.months = spec.month_keys()
        self.month_ends = _days([io.month_end(m) for m in self.months])
        self.month_starts = _days([pd.Period(m, freq="M").start_time for m in self.months])
        self.cal = np.array([pd.Period(m, freq="M").month for m in self.months]) - 1
        self.ref_year = pd.Period(spec.end_month, freq="M").year
        self._make_branches()
        self.n_cards = 0  # cards issued by the finished blocks
        self.snapshot_rows = 0
        if self.single:
            return  # the block draws its customers' branches as the book did before blocks
        # How many customers each branch has: customers are laid out branch by branch.
        p_branch = self.branch_size / self.branch_size.sum()
        self.branch_ends = np.cumsum(self.rng.multinomial(self.n, p_branch))
        # The record of finished blocks' customers, by position (customer id - 100,001).
        m = len(self.months)
        self.exit_month = np.full(self.n, NEVER, dtype=np.int16)
        self.high = np.zeros((self.n, -(-m // 8)), dtype=np.uint8)  # bit t: live, tier >= 3
        self.onboard_day = np.zeros(self.n, dtype=np.int32)  # days since 1970-01-01
        self.partner_pool: list[np.ndarray] = []  # positions of business owners and merchants
        # relationship rows of earlier blocks' customers made by later blocks' links
        self.reverse_rel: list[list[dict[str, np.ndarray]]] = [[] for _ in self.bounds]

    def _make_branches(self) -> None:
        rng, n = self.rng, self.n
        nb = max(4, round(n / 2000))
        area = rng.choice(3, size=nb, p=[0.5, 0.3, 0.2])
        area[0], area[1] = 0, 2  # at least one urban and one rural branch
        self.branch_area = area
        self.branch_region = rng.integers(0, len(REGIONS), size=nb)
        self.branch_size = rng.lognormal(0.0, 0.4, size=nb)
        rms_per_branch = max(2, round(n / nb / 300))
        self.rm_branch = np.repeat(np.arange(nb), rms_per_branch)
        self.rm_diligence = rng.lognormal(0.0, 0.35, size=self.rm_branch.size)
        opened = _days("1990-01-01") + rng.integers(0, 25 * 365, size=nb)
        self.branches = pa.table(
            {
                "branch_id": pa.array(np.arange(1, nb + 1, dtype=np.int32)),
                "branch_name": pa.array(
                    [
                        f"{REGIONS[r].title()} {AREA_TYPES[a]} branch {i + 1:03d}"
                        for i, (r, a) in enumerate(zip(self.branch_region, area, strict=True))
                    ]
                ),
                "region": _dict_array(self.branch_region, REGIONS),
                "area_type": _dict_array(area, AREA_TYPES),
                "opened_date": _date_array(opened),
            }
        )
        nr = self.rm_branch.size
        hired = _days("2005-01-01") + rng.integers(0, 20 * 365, size=nr)
        capacity = rng.integers(40, 81, size=nr).astype(np.int16)
        self.rms = pa.table(
            {
                "rm_id": pa.array(np.arange(1, nr + 1, dtype=np.int32)),
                "branch_id": pa.array((self.rm_branch + 1).astype(np.int32)),
                "rm_name": pa.array([f"RM {i + 1:05d}" for i in range(nr)]),
                "capacity": pa.array(capacity),
                "hired_date": _date_array(hired),
            }
        )
        self.rm_capacity = capacity.astype(float)

    def record(self, sim: _Simulation) -> None:
        """Keep what later blocks' links read of the finished block `sim`."""
        self.n_cards = sim.n_cards
        if self.single:
            return
        lo, hi = sim.lo, sim.hi
        self.exit_month[lo:hi] = np.minimum(sim.exit_idx, NEVER)
        self.high[lo:hi] = np.packbits(sim.high_months, axis=1)
        self.onboard_day[lo:hi] = sim.onboard_date.astype(np.int64)
        pool = np.flatnonzero((sim.seg == BO) | (sim.seg == MER)) + lo
        self.partner_pool.append(pool.astype(np.int32))

    def high_months(self, positions: np.ndarray) -> np.ndarray:
        """(positions x months) bool: a live customer of the high-end tier or above."""
        m = len(self.months)
        return np.unpackbits(self.high[positions], axis=1, count=m).astype(bool)

    def block_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted([hi for _, hi in self.bounds], positions, side="right")

    def keep_relationships(
        self, out: Path, block: int, rel: dict[str, np.ndarray], n_earlier: int
    ) -> None:
        """Set aside a finished block's relationship rows (book positions), whose last
        `n_earlier` link its customers to earlier blocks' customers: the rows of the block's
        customers go to a spill file, the mirror rows of those links wait in memory for the
        earlier customers' turn in `write_relationships`."""
        spill = out / SPILL_DIR / f"relationships-{block:05d}.npz"
        spill.parent.mkdir(parents=True, exist_ok=True)
        np.savez(spill, **rel)
        if n_earlier:
            mirror = {
                "src": rel["dst"][-n_earlier:],
                "dst": rel["src"][-n_earlier:],
                "kind": rel["kind"][-n_earlier:],
                "since": rel["since"][-n_earlier:],
            }
            owner = self.block_of(mirror["src"])
            for b in np.unique(owner):
                mine = owner == b
                self.reverse_rel[b].append(
                    {
                        "src": mirror["src"][mine].astype(np.int32),
                        "dst": mirror["dst"][mine].astype(np.int32),
                        "kind": mirror["kind"][mine],
                        "since": mirror["since"][mine],
                    }
                )

    def write_relationships(self, out: Path, writer: _Writer) -> None:
        """relationships.parquet, block by block: each block's customers' rows, sorted."""
        for b in range(len(self.bounds)):
            spill = out / SPILL_DIR / f"relationships-{b:05d}.npz"
            with np.load(spill) as kept:
                parts = [{k: kept[k] for k in kept.files}, *self.reverse_rel[b]]
            spill.unlink()
            self.reverse_rel[b] = []
            rel = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
            writer.write([(_relationship_table(rel), out / "relationships.parquet")])
        writer.wait()
        (out / SPILL_DIR).rmdir()


class _Simulation:
    """The state of the customers of one block as the months go by (module docstring). Used
    only by `generate_book`."""

    def __init__(self, book: _Book, block: int):
        spec = book.spec
        self.spec, self.book, self.block = spec, book, block
        self.lo, self.hi = book.bounds[block]
        self.n = self.hi - self.lo
        self.single = book.single
        self.rng = (
            book.rng if book.single else np.random.default_rng([spec.seed, BLOCK_STREAM, block])
        )
        self.months = book.months
        self.month_ends, self.month_starts = book.month_ends, book.month_starts
        self.cal, self.ref_year = book.cal, book.ref_year
        self.branch_area, self.branch_region = book.branch_area, book.branch_region
        self.branch_size = book.branch_size
        self.rm_branch, self.rm_diligence = book.rm_branch, book.rm_diligence
        self._make_customers()
        self._make_relationships()
        self._init_state()
        self.card_parts: list[dict[str, np.ndarray]] = []
        self.card_truth_parts: list[pd.DataFrame] = []
        self.n_cards = book.n_cards  # card ids go on from the blocks before
        self.issued: list[int] = []  # new cards each month (before any campaign's)
        # month by month: a live customer of the high-end tier or above (read by later blocks)
        self.high_months = None if book.single else np.zeros((self.n, len(self.months)), bool)
        month0 = pd.Period(self.months[0], freq="M")
        self.shocks = [
            _ShockState(
                sh,
                i,
                spec,
                (pd.Period(sh.from_month, freq="M") - month0).n,
                self.n,
                None if book.single else block,
            )
            for i, sh in enumerate(spec.shocks)
        ]

    # --- the population ------------------------------------------------------------------
    def _make_customers(self) -> None:
        rng, n, m = self.rng, self.n, len(self.months)
        nb = self.branch_area.size
        if self.single:
            p_branch = self.branch_size / self.branch_size.sum()
            branch = np.sort(rng.choice(nb, size=n, p=p_branch))
        else:  # the branches of the block's run of the book's branch order
            positions = np.arange(self.lo, self.hi)
            branch = np.searchsorted(self.book.branch_ends, positions, side="right")
        # Segment by the branch's area type (growers in the countryside, merchants in town).
        u = rng.random(n)
        cdf = np.cumsum(SEG_SHARE_BY_AREA, axis=1)[self.branch_area[branch]]
        seg = (u[:, None] > cdf).sum(axis=1).clip(0, 5)
        # Shuffle customers within branches so that neighbours in this order are random
        # people of the same branch; households and market streets are cut from it.
        order = np.lexsort((rng.random(n), branch))
        self.branch, self.seg = branch[order], seg[order]
        branch, seg = self.branch, self.seg
        rms_per = np.bincount(self.rm_branch, minlength=nb)
        first_rm = np.concatenate([[0], np.cumsum(rms_per)[:-1]])
        self.rm = first_rm[branch] + rng.integers(0, rms_per[branch])

        age = np.where(
            seg == ELD,
            rng.integers(60, 89, size=n),
            np.where(seg == GRO, rng.integers(28, 71, size=n), rng.triangular(21, 33, 66, n)),
        ).astype(int)
        age = np.where(seg == BO, rng.integers(30, 66, size=n), age)
        self.age = age
        self.birth_year = (self.ref_year - age).astype(np.int16)
        male_p = np.where(seg == BO, 0.7, np.where(seg == WOM, 0.0, 0.5))
        self.gender = (rng.random(n) < male_p).astype(np.int8)  # 0 F, 1 M

        self.payroll_enrolled = rng.random(n) < PAYROLL_RATE[seg] * (age < 62)
        n_employers = max(4, self.book.n // 80)  # the book's employers, a few per branch
        per_branch = max(1, n_employers // nb)
        self.employer = np.where(
            self.payroll_enrolled, branch * per_branch + rng.integers(0, per_branch, size=n), -1
        )
        # Households: consecutive blocks of 1-3 people in the shuffled branch order.
        sizes = rng.choice([1, 2, 3], size=n, p=[0.80, 0.14, 0.06])
        ends = np.cumsum(sizes)
        ends = ends[ends <= n]
        if ends.size == 0 or ends[-1] != n:
            ends = np.append(ends, n)
        starts = np.concatenate([[0], ends[:-1]])
        self.household = np.repeat(np.arange(starts.size), ends - starts)
        household_level = rng.normal(0.0, 0.9, size=starts.size)[self.household]

        # Wealth: household wealth and the share of it held here.
        log_wealth = LOG_WEALTH_MEAN[seg] + household_level + rng.normal(0.0, 1.5, size=n)
        sow_mean = SHARE_OF_WALLET_MEAN[seg]
        share = rng.beta(2.5 * sow_mean, 2.5 * (1 - sow_mean)).clip(0.005, 0.995)
        self.mu = log_wealth + np.log(share) + 0.3 * self.payroll_enrolled
        self.ext = log_wealth + np.log1p(-share)
        self.sigma = VOLATILITY[seg] + 0.08 * (self.mu < np.log(10_000))
        self.loyalty = rng.normal(0.0, LOYALTY_SD, size=n)
        self.consolidate_fraction = rng.beta(2.0, 4.0, size=n)
        self.income = np.where(
            self.payroll_enrolled,
            rng.lognormal(np.log(7000), 0.5, size=n) * (1 + 2 * (seg == BO)),
            0.0,
        )
        self.ext_noise = rng.lognormal(0.0, 0.3, size=n)

        # Onboarding: most customers predate the book; about 0.8% of the book joins each month.
        new = rng.random(n) < min(0.3, 0.008 * m)
        tenure = np.minimum(1 + rng.exponential(70.0, size=n), 360).astype(int)
        self.onboard_idx = np.where(new, rng.integers(0, m, size=n), -tenure)
        # Market streets: merchants of a branch join in clusters, on the same day.
        self.cluster = -np.ones(n, dtype=np.int64)
        mer = np.flatnonzero(seg == MER)
        if mer.size:
            cl_sizes = rng.integers(5, 16, size=mer.size)
            cl_ends = np.cumsum(cl_sizes)
            cl_id = np.searchsorted(cl_ends, np.arange(mer.size), side="right")
            in_cluster = rng.random(cl_id.max() + 1)[cl_id] < 0.6
            self.cluster[mer[in_cluster]] = cl_id[in_cluster]
            firsts = np.unique(cl_id[in_cluster], return_index=True)[1]
            lead = np.full(cl_id.max() + 1, -1)
            lead[cl_id[in_cluster][firsts]] = mer[in_cluster][firsts]
            members = mer[in_cluster]
            self.onboard_idx[members] = self.onboard_idx[lead[cl_id[in_cluster]]]
        month0 = pd.Period(self.months[0], freq="M")
        first_day = _days([(month0 + int(k)).start_time for k in np.unique(self.onboard_idx)])
        lookup = dict(zip(np.unique(self.onboard_idx), first_day, strict=True))
        start_day = np.array([lookup[k] for k in self.onboard_idx], dtype="datetime64[D]")
        day = rng.integers(0, 28, size=n)
        if mer.size:
            cm = self.cluster >= 0
            day[cm] = (self.cluster[cm] * 7) % 28
        self.onboard_date = start_day + day

        ch = np.empty(n, dtype=np.int8)
        pick = {
            BO: ([7, 1, 2, 0], [0.4, 0.2, 0.3, 0.1]),
            ELD: ([4, 2, 0], [0.45, 0.3, 0.25]),
            MER: ([0, 2], [0.6, 0.4]),
            WOM: ([2, 3, 0], [0.45, 0.3, 0.25]),
            GRO: ([6, 0], [0.6, 0.4]),
            MAS: ([3, 0, 2], [0.45, 0.4, 0.15]),
        }
        for s, (chans, probs) in pick.items():
            idx = np.flatnonzero(seg == s)
            ch[idx] = rng.choice(chans, size=idx.size, p=probs)
        ch[self.cluster >= 0] = ONBOARD_CHANNELS.index("market_cluster")
        payroll_deal = self.payroll_enrolled & (rng.random(n) < 0.8)
        ch[payroll_deal] = ONBOARD_CHANNELS.index("payroll_deal")
        self.channel = ch
        self.customer_id = np.arange(self.lo + 1, self.hi + 1, dtype=np.int64) + 100_000

    def _make_relationships(self) -> None:
        """Links of the block's customers, among themselves and to earlier blocks' customers.
        Positions below are the book's (customer id - 100,001): `src` in the block, `dst` in the
        block or before it."""
        rng, n, first = self.rng, self.n, self.lo
        src, dst, kind = [], [], []
        # family: every pair within a household
        hh = self.household
        same_next = hh[1:] == hh[:-1]
        a = np.flatnonzero(same_next) + first
        src += [a]
        dst += [a + 1]
        kind += [np.zeros(a.size, dtype=np.int8)]
        same_next2 = hh[2:] == hh[:-2]
        a2 = np.flatnonzero(same_next2) + first
        src += [a2]
        dst += [a2 + 2]
        kind += [np.zeros(a2.size, dtype=np.int8)]
        # business: merchants of a market street link to the next two; business owners to
        # two partners among merchants and business owners anywhere.
        for gap in (1, 2):
            c = self.cluster
            k = np.flatnonzero((c[:-gap] >= 0) & (c[:-gap] == c[gap:])) + first
            src += [k]
            dst += [k + gap]
            kind += [np.full(k.size, 2, dtype=np.int8)]
        bo = np.flatnonzero(self.seg == BO) + first
        pool = np.flatnonzero((self.seg == BO) | (self.seg == MER)) + first
        if not self.single:  # anywhere among the customers simulated so far
            pool = np.concatenate([*self.book.partner_pool, pool])
        if bo.size and pool.size:
            for _ in range(2):
                src += [bo]
                dst += [rng.choice(pool, size=bo.size)]
                kind += [np.full(bo.size, 2, dtype=np.int8)]
        # friends: about 0.3 links per customer, to someone near in the branch order
        f = np.flatnonzero(rng.random(n) < 0.3) + first
        g = np.clip(f + rng.integers(-60, 61, size=f.size), 0, self.book.n - 1)
        # someone in a later block (not simulated yet): the one as far the other way
        ahead = g >= self.hi
        g[ahead] = 2 * f[ahead] - g[ahead]
        src += [f]
        dst += [g]
        kind += [np.ones(f.size, dtype=np.int8)]
        s, d, k = np.concatenate(src), np.concatenate(dst), np.concatenate(kind)
        keep = s != d
        s, d, k = s[keep], d[keep], k[keep]
        lo, hi = np.minimum(s, d), np.maximum(s, d)
        pair = lo * self.book.n + hi
        _, once = np.unique(pair, return_index=True)
        lo, hi, k = lo[once], hi[once], k[once]  # hi is in the block, lo in it or before it
        since = np.maximum(self._onboard_dates(lo), self.onboard_date[hi - first])
        end = self.month_ends[-1]
        since = np.minimum(since + rng.integers(0, 60, size=lo.size), end)
        inside = lo >= first
        lo_in, hi_in, k_in = lo[inside] - first, hi[inside] - first, k[inside]
        self.rel_src = np.concatenate([lo_in, hi_in])
        self.rel_dst = np.concatenate([hi_in, lo_in])
        self.rel_kind = np.concatenate([k_in, k_in])
        self.rel_weight = REL_WEIGHT[self.rel_kind]
        self.rel_since = np.tile(since[inside], 2)
        # links to earlier blocks: this block's customer (local) -> the earlier one (book)
        out = ~inside
        self.x_src, self.x_dst, self.x_kind = hi[out] - first, lo[out], k[out]
        self.x_since = since[out]
        self.x_weight = REL_WEIGHT[self.x_kind]
        if self.x_src.size:  # what the earlier customers did, month by month (all known)
            self.x_exit = self.book.exit_month[self.x_dst]
            self.x_high = self.book.high_months(self.x_dst)

    def _onboard_dates(self, positions: np.ndarray) -> np.ndarray:
        """Onboarding dates of customers of this block or of earlier blocks."""
        here = positions >= self.lo
        if here.all():
            return self.onboard_date[positions - self.lo]
        earlier = self.book.onboard_day[np.where(here, 0, positions)].astype("datetime64[D]")
        return np.where(here, self.onboard_date[np.where(here, positions - self.lo, 0)], earlier)

    def _init_state(self) -> None:
        rng, n = self.rng, self.n
        seg = self.seg
        self.u = rng.normal(0.0, 1.0, size=n) * self.sigma / np.sqrt(1 - RHO**2)
        self.x = self._log_aum(0)
        tier = tier_index(np.expm1(self.x))
        self.engagement = rng.choice(3, size=n, p=[0.92, 0.05, 0.03]).astype(np.int8)
        self.engagement[self.onboard_idx >= 0] = 0
        self.exit_idx = np.full(n, 10**6)  # month index of attrition
        self.closed = np.zeros(n, dtype=bool)  # attrition by closing every account
        self.prev_aum = np.expm1(self.x).clip(0)
        tier_p = lambda ps: np.asarray(ps)[tier]  # noqa: E731
        self.flags = {
            "has_time_deposit": rng.random(n) < tier_p([0.20, 0.40, 0.60, 0.70, 0.70]),
            "has_wealth": rng.random(n) < tier_p([0.03, 0.15, 0.45, 0.70, 0.80]),
            "has_funds": rng.random(n) < tier_p([0.02, 0.08, 0.30, 0.55, 0.70]),
            "has_insurance": rng.random(n) < tier_p([0.05, 0.12, 0.25, 0.40, 0.50]),
            "has_credit_card": np.zeros(n, dtype=bool),
            "has_mobile_banking": rng.random(n) < MOBILE_BANKING_RATE[seg] * (self.age < 75),
            "has_payroll": self.payroll_enrolled.copy(),
            "has_loan": np.zeros(n, dtype=bool),
        }
        self.weights = rng.dirichlet([3.0, 2.0, 2.0, 1.5, 1.0], size=n) * np.array(
            [1.0, 1.0, 1.0, 1.0, 1.0]
        )
        self.mortgage = np.where(
            (rng.random(n) < LOAN_RATE[seg] * 0.5) & (seg != GRO),
            rng.lognormal(np.log(600_000), 0.6, size=n),
            0.0,
        )
        self.consumer_loan = np.where(
            rng.random(n) < LOAN_RATE[seg] * 0.5, rng.lognormal(np.log(30_000), 0.7, size=n), 0.0
        )
        self.business_loan_size = np.where(
            np.isin(seg, [BO, MER, GRO]) & (rng.random(n) < np.where(seg == GRO, 0.6, 0.4)),
            rng.lognormal(np.log(80_000), 0.7, size=n) * np.where(seg == BO, 5.0, 1.0),
            0.0,
        )
        self.vas = rng.random(n) < tier_p([0.05, 0.12, 0.30, 0.50, 0.60]) * np.where(
            seg == WOM, 1.5, 1.0
        )
        self.login_base = rng.lognormal(np.log(LOGINS_PER_MONTH[seg]), 0.5)
        self.txn_base = rng.lognormal(np.log(TXN_PER_MONTH[seg]), 0.5)
        self.ticket = rng.lognormal(np.log(300.0), 0.6, size=n) * (1 + 0.3 * tier)
        self.visit_base = BRANCH_VISITS[seg] * rng.lognormal(0.0, 0.4, size=n)
        self.first_card_idx = np.full(n, 10**6)  # month index of the first card's issue
        self.contacts = np.zeros(n, dtype=np.int64)  # RM contacts in the last snapshot's month
        self.contacts_month = -1  # and which month that was
        self._init_campaigns()

    def _init_campaigns(self) -> None:
        """The campaign state (`synthetic.campaigns`), drawn from the contacts' own stream."""
        self.campaigns = self.spec.campaigns
        if not self.campaigns:
            return
        n = self.n
        stream = [self.spec.seed, cmp.CONTACT_STREAM]
        self.crng = np.random.default_rng(stream if self.single else [*stream, self.block])
        self.averse = cmp.call_averse(
            self.crng, self.age, self.flags["has_mobile_banking"], self.visit_base
        )
        self.receptive = self.crng.normal(0.0, cmp.RECEPTIVENESS_SD, size=n)
        # the response in force: up to which month, and how strong
        self.call_until = np.full(n, -1)
        self.call_m = np.ones(n)
        self.offer_until = np.full(n, -1)
        self.offer_shift = np.zeros(n)
        # each RM's capacity for this block's customers: a branch may span two blocks
        book = self.book
        if self.single:
            share = np.ones(book.branch_area.size)
        else:
            total = np.diff(book.branch_ends, prepend=0)
            here = np.bincount(self.branch, minlength=total.size)
            share = here / np.maximum(total, 1)
        self.rm_capacity = book.rm_capacity * share[book.rm_branch]

    # --- mechanics -----------------------------------------------------------------------
    def _log_aum(self, t: int) -> np.ndarray:
        return self.mu + self.u + SEASON[self.seg, self.cal[t]]

    def _products(self) -> np.ndarray:
        return 1 + sum(f.astype(np.int8) for f in self.flags.values())

    def _drivers(self, t: int, live: np.ndarray) -> dict[str, np.ndarray]:
        """Monthly transition odds from the state at month-end t (used for t -> t+1 and truth)."""
        tier = tier_index(np.expm1(self.x))
        products = self._products()
        care = self.rm_diligence[self.rm] * TIER_CARE[tier]
        gap = self.ext - self.x
        contagion = self._contagion(t - 2, t)
        high = (tier >= 3) & live
        high_linked = (
            np.bincount(
                self.rel_src,
                weights=high[self.rel_dst].astype(float),
                minlength=self.x.size,
            )
            > 0
        )
        if self.high_months is not None:
            self.high_months[:, t] = high
        if self.x_src.size:  # links to earlier blocks' customers, from the book's record
            high_linked |= (
                np.bincount(self.x_src, weights=self.x_high[:, t].astype(float), minlength=self.n)
                > 0
            )
        tenure = t - self.onboard_idx
        f = self.flags
        z = (
            -0.30 * (products == 3)
            - 1.30 * (products >= 4)
            - 0.50 * f["has_payroll"]
            - 0.45 * self.vas
            - 0.8 * np.minimum(care, 2.0)
            - 0.25 * f["has_mobile_banking"]
            + 0.35 * np.clip(gap - 1.0, 0.0, 4.0)
            + 1.6 * np.minimum(contagion, 2.0)
            + 0.50 * (tenure < 12)
            + 0.30 * (tier == 2)
            + 0.20 * (tier == 0)
            + SEGMENT_CHURN[self.seg]
            - self.loyalty
        )
        a = expit(CHURN_BASE + z)
        consolidate = expit(
            CONSOLIDATE_BASE
            + 0.45 * np.clip(gap, 0.0, 5.0)
            + 0.30 * np.minimum(care, 2.0)
            + 0.40 * self.vas
            + 0.40 * high_linked
            + 0.30 * (self.seg == BO)
            + 0.25 * f["has_payroll"]
            - 0.20 * (tier == 0)
        )
        return {
            "tier": tier,
            "cool": a,
            # households and partners often leave together
            "sudden": a * SUDDEN_EXIT[tier] * (1 + 2 * np.minimum(contagion, 1.0)),
            "leave": expit(LEAVE_BASE + 0.5 * z),
            "consolidate": consolidate,
            "jump": np.log1p(self.consolidate_fraction * np.exp(np.minimum(gap, 30.0))),
        }

    def _contagion(self, first: int, last: int) -> np.ndarray:
        """Per customer, the weighted count of linked customers who attrited in months
        first..last (links within the block and, from the book's record, to earlier blocks)."""
        gone = ((self.exit_idx <= last) & (self.exit_idx >= first)).astype(float)
        out = np.bincount(
            self.rel_src, weights=self.rel_weight * gone[self.rel_dst], minlength=self.n
        )
        if self.x_src.size:
            x_gone = ((self.x_exit <= last) & (self.x_exit >= first)).astype(float)
            out += np.bincount(self.x_src, weights=self.x_weight * x_gone, minlength=self.n)
        return out

    def _ahead(self, t: int, d: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
        """The transition odds of month t+step from the state at month-end t: as `d` (the
        drivers at t), but with the contagion of the linked attritions known at t aged by
        step-1 months (it lasts three months; later attritions are not known at t)."""
        if step == 1:
            return d
        now = np.minimum(self._contagion(t - 2, t), 2.0)
        then = np.minimum(self._contagion(t + step - 3, t), 2.0)
        dz = 1.6 * (then - now)
        if not dz.any():
            return d
        cool = expit(logit(d["cool"]) + dz)
        ratio = (1 + 2 * np.minimum(then, 1.0)) / (1 + 2 * np.minimum(now, 1.0))
        return {
            **d,
            "cool": cool,
            "sudden": d["sudden"] * cool / d["cool"] * ratio,
            "leave": expit(logit(d["leave"]) + 0.5 * dz),
        }

    def _wealth_take_up(self, tier: np.ndarray, contacts: np.ndarray | int) -> np.ndarray:
        """Monthly chance that an engaged customer without a wealth product takes one up, from
        the state at a month-end (tier, share-of-wallet gap, services, payroll, mobile banking)
        and the RM contacts in the month that ended. The one formula for _step and _truth."""
        f = self.flags
        z = (
            WEALTH_BASE
            + WEALTH_TIER[tier]
            + WEALTH_SEGMENT[self.seg]
            + WEALTH_GAP * np.clip(self.ext - self.x, 0.0, 4.0)
            + WEALTH_VAS * self.vas
            + WEALTH_PAYROLL * f["has_payroll"]
            + WEALTH_MOBILE * f["has_mobile_banking"]
            + WEALTH_CONTACT * np.minimum(contacts, WEALTH_CONTACT_CAP)
        )
        return expit(z)

    def _shocked(self, d: dict[str, np.ndarray], known_by: int) -> dict[str, np.ndarray]:
        """The transition odds under the rate cuts started by month `known_by` (d if none).

        A cut adds to the churn driver score z of effective- and mid-tier customers: cooling
        (and sudden exit with it) on the logit, leaving at half weight, as z does; and sudden
        exits, which no warning sign announces, rise RATE_CUT_SUDDEN times more."""
        cuts = [sh for sh in self.shocks if sh.kind == "rate_cut" and sh.start <= known_by]
        if not cuts:
            return d
        hit = np.isin(d["tier"], RATE_CUT_TIERS)
        strength = hit * sum(sh.strength for sh in cuts)
        dz = strength * RATE_CUT_HAZARD
        cool = expit(logit(d["cool"]) + dz)
        sudden = d["sudden"] * cool / d["cool"] * RATE_CUT_SUDDEN**strength
        scale = np.minimum(1.0, 0.98 / (cool + sudden))  # keep P(engaged -> engaged) >= 2%
        return {
            **d,
            "cool": cool * scale,
            "sudden": sudden * scale,
            "leave": expit(logit(d["leave"]) + 0.5 * dz),
        }

    def _in_force(self, month: int, rows: np.ndarray | slice = slice(None)):
        """(call multiplier, offer shift) of customers `rows` in month `month`: the response
        of the campaign contacts in force then (1 and 0 for the others)."""
        m = np.where(self.call_until[rows] >= month, self.call_m[rows], 1.0)
        shift = np.where(self.offer_until[rows] >= month, self.offer_shift[rows], 0.0)
        return m, shift

    @staticmethod
    def _responding(d: dict[str, np.ndarray], m, shift) -> dict[str, np.ndarray]:
        """The transition odds `d` of customers responding to campaign contacts: churn hazards
        times `m` (recovery from cooling divided by it), consolidation logit plus `shift`
        (`synthetic.campaigns`)."""
        cool, sudden = d["cool"] * m, d["sudden"] * m
        scale = np.minimum(1.0, 0.98 / (cool + sudden))  # keep P(engaged -> engaged) >= 2%
        return {
            **d,
            "cool": cool * scale,
            "sudden": sudden * scale,
            "leave": np.minimum(d["leave"] * m, 0.95),
            "recover": np.minimum(RECOVER_COOLING / m, cmp.RECOVER_MAX),
            "consolidate": expit(logit(d["consolidate"]) + shift),
        }

    def _drain_ahead(self, t: int, tier: np.ndarray) -> np.ndarray:
        """Log AUM the rate cuts known at month-end t move out over months t+1 .. t+3."""
        total = np.zeros(tier.size)
        for sh in self.shocks:
            if sh.start <= t:
                for k in range(1, 4):
                    total += sh.drain(t + k, tier)
        return total

    @staticmethod
    def _transition(d: dict[str, np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
        """Non-zero transition odds (from, to) over engaged 0, cooling 1, leaving 2, attrited 3.

        Each entry is one probability per customer (or a scalar shared by all)."""
        recover = d.get("recover", RECOVER_COOLING)
        leave = d["leave"] * (1 - recover)
        return {
            (0, 0): 1 - d["cool"] - d["sudden"],
            (0, 1): d["cool"],
            (0, 3): d["sudden"],
            (1, 0): recover,
            (1, 1): 1 - recover - leave,
            (1, 2): leave,
            (2, 1): RECOVER_LEAVING,
            (2, 2): 1 - RECOVER_LEAVING - EXIT_LEAVING,
            (2, 3): EXIT_LEAVING,
        }

    def _truth(self, t: int, d: dict[str, np.ndarray], active: np.ndarray) -> pd.DataFrame:
        """P(churn within 3 months), P(tier up at T+3) and P(wealth take-up) given the true
        state at month-end t and the campaign responses in force; with campaigns, the change of
        the first two if a call or an offer reached the customer next month, and the chance to
        reach them (`synthetic.campaigns`)."""
        idx = np.flatnonzero(active)
        # the transition odds of months t+1 .. t+3: contagion ageing, responses in force
        dj = [
            {k: v[idx] for k, v in self._shocked(self._ahead(t, d, j), t).items()}
            for j in (1, 2, 3)
        ]
        di = dj[0]
        if self.campaigns:
            steps = [self._in_force(t + j, idx) for j in (1, 2, 3)]
            base = [self._responding(x, m, shift) for x, (m, shift) in zip(dj, steps, strict=True)]
        else:
            base = dj
        tms = [self._transition(x) for x in base]
        e = self.engagement[idx]
        p_churn, stay = self._chain(tms, [x["consolidate"] for x in base], e)
        p_up = self._upgrade(t, d["tier"], idx, di["jump"], stay)
        out = {
            "customer_id": self.customer_id[idx],
            "p_churn_3m": p_churn.astype(np.float32),
            "p_upgrade_3m": p_up.astype(np.float32),
            "p_wealth_3m": self._wealth_truth(t, d, idx, tms).astype(np.float32),
        }
        if self.campaigns:
            tier, gap = di["tier"], self.ext[idx] - self.x[idx]
            averse, receptive = self.averse[idx], self.receptive[idx]
            call_m = np.exp(cmp.call_effect(tier, gap, averse, receptive))
            called = [
                self._transition(self._responding(x, call_m, s))
                for x, (_, s) in zip(dj, steps, strict=True)
            ]
            p_called, _ = self._chain(called, [x["consolidate"] for x in base], e)
            shift = cmp.offer_effect(tier, gap, averse, receptive)
            offered = expit(logit(di["consolidate"]) + shift)
            _, stay_offered = self._chain(tms, [offered] * 3, e)
            p_offered = self._upgrade(t, d["tier"], idx, di["jump"], stay_offered)
            out["effect_call_3m"] = (p_called - p_churn).astype(np.float32)
            out["reach_call"] = cmp.reach_probability(
                np.where(tier >= 2, cmp.RM_CALL, cmp.PHONE), e
            ).astype(np.float32)
            out["effect_offer_3m"] = (p_offered - p_up).astype(np.float32)
            out["reach_offer"] = cmp.reach_probability(
                np.where(tier >= 2, cmp.RM_CALL, cmp.BRANCH), e
            ).astype(np.float32)
        return pd.DataFrame(out)

    @staticmethod
    def _chain(tms: list[dict], consolidate: list[np.ndarray], e: np.ndarray):
        """Run the engagement chain from states `e` through the monthly transition odds `tms`.

        Returns P(attrition within the months) and the probability mass of the paths that stay,
        by (months leaving, months cooling, consolidated yet): a customer engaged after a
        month's transition consolidates that month with odds `consolidate[month]` (once at most
        counts)."""
        dist = {(s, 0, 0, 0): (e == s).astype(float) for s in range(3)}
        p_churn = np.zeros(e.size)
        for tm, pj in zip(tms, consolidate, strict=True):
            new: dict[tuple[int, int, int, int], np.ndarray] = {}
            for (s, k, n1, c), mass in dist.items():
                for (a, b), p in tm.items():
                    if a != s:
                        continue
                    if b == 3:
                        p_churn += mass * p
                        continue
                    key = (b, k + (b == 2), n1 + (b == 1))
                    flow = mass * p
                    if b == 0 and not c:
                        _add(new, (*key, 1), flow * pj)
                        flow = flow * (1 - pj)
                    _add(new, (*key, c), flow)
            dist = new
        stay: dict[tuple[int, int, int], np.ndarray] = {}
        for (_, k, n1, c), mass in dist.items():
            _add(stay, (k, n1, c), mass)
        return p_churn, stay

    def _upgrade(self, t: int, tier_all, idx, jump, stay) -> np.ndarray:
        """P(tier up at t+3) of customers `idx` from the paths `stay` of `_chain`: the normal
        probability that log AUM crosses the next tier's bound (NaN in the top tier)."""
        tier = tier_all[idx]
        below_top = tier < TOP_TIER
        bound = np.log1p(TIER_LOWER_BOUNDS[np.minimum(tier, TOP_TIER - 1)])
        cal3 = (self.cal[t] + 3) % 12
        mean = (
            self.mu[idx] + RHO**3 * self.u[idx] + SEASON[self.seg[idx], cal3] - 3 * SPENDING - bound
        )
        if self.shocks:
            mean = mean - self._drain_ahead(t, tier_all)[idx]
        var = self.sigma[idx] ** 2 * (1 + RHO**2 + RHO**4)
        sd, sd_w = np.sqrt(var), np.sqrt(var + WINDFALL_SD**2)
        p_wind = 1 - (1 - WINDFALL_RATE) ** 3

        def cross(shift: np.ndarray | float) -> np.ndarray:
            return (1 - p_wind) * ndtr((mean + shift) / sd) + p_wind * ndtr(
                (mean + shift + WINDFALL_MEAN) / sd_w
            )

        crossed: dict[tuple[float, int], np.ndarray] = {}  # paths share their shifts
        p_up = np.zeros(idx.size)
        for (k, n1, c), w in stay.items():
            shift = -DRAIN * k - DRAIN_COOLING * n1
            if (shift, c) not in crossed:
                crossed[(shift, c)] = cross(shift + jump) if c else cross(shift)
            p_up += w * crossed[(shift, c)]
        return np.where(below_top, p_up, np.nan)

    def _wealth_truth(self, t: int, d, idx: np.ndarray, tms: list[dict]) -> np.ndarray:
        """P(holding a wealth product at a month-end in (t, t+3]) for customers `idx` without
        one at t (NaN for holders): 1 - P(no take-up in any month the chain spends engaged,
        month by month through the transition odds `tms`). Take-up in a month needs the
        customer engaged after that month's transition (as in _step). The first month's hazard
        uses the RM contacts of month t's snapshot; the later months' average over their
        Poisson draws at month t's care."""
        if self.contacts_month != t:
            raise RuntimeError("the truth of month t needs month t's snapshot first")
        tier = d["tier"]
        first = self._wealth_take_up(tier, self.contacts)[idx]
        care = self.rm_diligence[self.rm[idx]] * TIER_CARE[tier[idx]]
        later = np.zeros(idx.size)
        below_cap = np.zeros(idx.size)
        for c in range(WEALTH_CONTACT_CAP):
            pc = np.exp(-care) * care**c / math.factorial(c)
            later += pc * self._wealth_take_up(tier, c)[idx]
            below_cap += pc
        later += (1 - below_cap) * self._wealth_take_up(tier, WEALTH_CONTACT_CAP)[idx]
        e = self.engagement[idx]
        mass = {s: (e == s).astype(float) for s in range(3)}  # paths with no take-up yet
        p_wealth = np.zeros(idx.size)
        for h, tm in zip((first, later, later), tms, strict=True):
            new: dict[int, np.ndarray] = {}
            for (a, b), p in tm.items():
                if b == 3:
                    continue
                flow = mass[a] * p
                if b == 0:
                    p_wealth += flow * h
                    flow = flow * (1 - h)
                new[b] = new[b] + flow if b in new else flow
            mass = new
        return np.where(self.flags["has_wealth"][idx], np.nan, p_wealth)

    def _step(self, t: int, d: dict[str, np.ndarray], live: np.ndarray) -> np.ndarray:
        """Move live customers from month-end t-1 to t. Returns who attrited in month t."""
        rng, n = self.rng, self.x.size
        d = self._shocked(d, t)
        if self.campaigns:  # customers reached by a call or an offer respond
            d = self._responding(d, *self._in_force(t))
        tm = self._transition(d)
        # wealth take-up odds from the state at month-end t-1, before this month moves it
        wealth = self._wealth_take_up(d["tier"], self.contacts)
        u = rng.random(n)
        eng = self.engagement
        nxt = eng.astype(np.int8).copy()
        for s in range(3):
            here = eng == s
            cum = np.zeros(n)
            for (a, b), p in tm.items():
                if a != s:
                    continue
                lower = cum.copy()
                cum = cum + p
                nxt[here & (u >= lower) & (u < cum)] = b
        exits = live & (nxt == 3)
        moved = live & ~exits
        self.engagement = np.where(moved, nxt, self.engagement).astype(np.int8)
        eng = self.engagement
        # Consolidation (engaged), windfalls (anyone) and drain (leaving) move the level for
        # good; everyone spends a little.
        jump = moved & (eng == 0) & (rng.random(n) < d["consolidate"])
        windfall = moved & (rng.random(n) < WINDFALL_RATE)
        wind_size = rng.normal(WINDFALL_MEAN, WINDFALL_SD, size=n)
        drain = np.where(eng == 2, DRAIN, np.where(eng == 1, DRAIN_COOLING, 0.0))
        self.mu = np.where(
            moved,
            self.mu + jump * d["jump"] + windfall * wind_size - drain - SPENDING,
            self.mu,
        )
        self.ext = np.where(jump, self.ext + np.log1p(-self.consolidate_fraction), self.ext)
        for sh in self.shocks:
            # a rate cut: the money goes to other institutions (external assets grow)
            out = sh.drain(t, d["tier"]) * moved
            if out.any():
                gone = out > 0
                moved_out = self.mu + np.log(-np.expm1(-np.where(gone, out, 1.0)))
                self.ext = np.where(gone, np.logaddexp(self.ext, moved_out), self.ext)
                self.mu = self.mu - out
        self.u = np.where(moved, RHO * self.u + self.sigma * rng.normal(size=n), self.u)
        self.x = np.where(moved, self._log_aum(t), self.x)
        # Slow drivers: product lines come and go, payroll stops, services enrol.
        tier = tier_index(np.expm1(self.x))
        f = self.flags
        drop = np.array([0.003, 0.05, 0.15])[eng]
        for name, adopt in (
            ("has_time_deposit", np.array([0.004, 0.008, 0.012, 0.012, 0.012])[tier]),
            ("has_wealth", wealth),
            ("has_funds", np.array([0.001, 0.003, 0.008, 0.012, 0.012])[tier]),
            ("has_insurance", np.array([0.001, 0.003, 0.005, 0.008, 0.008])[tier]),
        ):
            r = rng.random(n)
            add = moved & ~f[name] & (eng == 0) & (r < adopt)
            rem = moved & f[name] & (r < drop)
            f[name] = (f[name] | add) & ~rem
        mb = rng.random(n) < np.where(self.seg == ELD, 0.003, 0.01)
        f["has_mobile_banking"] |= moved & mb & (eng == 0)
        stop = rng.random(n) < np.where(eng == 2, 0.7, 0.004)
        f["has_payroll"] &= ~(moved & stop)
        r = rng.random(n)
        self.vas = (self.vas | (moved & (eng == 0) & (r < 0.005 * (1 + (tier >= 2))))) & ~(
            moved & (eng >= 1) & (r > 0.97)
        )
        self.mortgage *= 0.995
        self.consumer_loan *= 0.97
        new_consumer = moved & (rng.random(n) < 0.002)
        self.consumer_loan = np.where(
            new_consumer, rng.lognormal(np.log(30_000), 0.7, size=n), self.consumer_loan
        )
        self.exit_idx = np.where(exits, t, self.exit_idx)
        # Who closes everything and who fades into dormancy: the potential tier drifts away.
        p_dormant = np.array([0.8, 0.4, 0.1, 0.1, 0.1])[d["tier"]]
        self.closed |= exits & (rng.random(n) >= p_dormant)
        return exits

    # --- month-end tables ----------------------------------------------------------------
    def _snapshot(self, t: int, rows: np.ndarray) -> pa.Table:
        """Observable month-end snapshot for customers `rows` (onboarded, not closed before t)."""
        rng = self.rng
        n = rows.size
        eng = self.engagement[rows]
        exited = self.exit_idx[rows] <= t
        closing = exited & self.closed[rows]
        dormant = exited & ~closing
        live = ~exited
        seg = self.seg[rows]
        cal = self.cal[t]
        aum = np.expm1(self.x[rows]).clip(0)
        aum = np.where(dormant, rng.uniform(0, 99, size=n), aum)
        aum = np.where(closing, 0.0, aum)
        f = {k: v[rows] & live for k, v in self.flags.items()}
        f["has_credit_card"] = (self.first_card_idx[rows] <= t) & live
        grower_loan = (seg == GRO) & (cal >= 2) & (cal <= 9)
        business = self.business_loan_size[rows] * np.where(seg == GRO, grower_loan, 1.0)
        loans = {
            "loan_mortgage": np.where(live, self.mortgage[rows], 0.0),
            "loan_consumer": np.where(
                live & (self.consumer_loan[rows] > 500), self.consumer_loan[rows], 0.0
            ),
            "loan_business": np.where(live, business, 0.0),
        }
        f["has_loan"] = (
            loans["loan_mortgage"] + loans["loan_consumer"] + loans["loan_business"]
        ) > 0
        w = self.weights[rows] * np.column_stack(
            [
                np.ones(n),
                f["has_time_deposit"],
                f["has_wealth"] * (1 + 2 * (aum > 50_000)),
                f["has_funds"],
                f["has_insurance"],
            ]
        )
        parts = _money(aum[:, None] * w / w.sum(axis=1, keepdims=True))
        total = parts.sum(axis=1)
        products = (1 + sum(v.astype(np.int8) for v in f.values())).astype(np.int8)
        products = np.where(closing, 0, products).astype(np.int8)
        payroll = np.where(
            f["has_payroll"],
            self.income[rows] * (1 + PAYROLL_BONUS[cal] * 10) * rng.lognormal(0, 0.05, n),
            0.0,
        )
        delta = total - np.where(self.onboard_idx[rows] == t, 0.0, self.prev_aum[rows])
        gross = aum * 0.03 * rng.lognormal(0.0, 0.8, size=n) * live
        transfer_in = np.maximum(delta - payroll, 0.0) + gross
        transfer_out = np.maximum(payroll - delta, 0.0) + gross
        self.prev_aum[rows] = total
        txn = np.where(live, 1 + rng.poisson(self.txn_base[rows] * TXN_MULT[eng]), 0)
        txn_amount = txn * self.ticket[rows] * rng.lognormal(0.0, 0.3, size=n)
        logins = np.where(
            f["has_mobile_banking"], rng.poisson(self.login_base[rows] * LOGIN_MULT[eng]), 0
        )
        visits = np.where(live, rng.poisson(self.visit_base[rows] * (1 - 0.2 * eng)), 0)
        care = self.rm_diligence[self.rm[rows]] * TIER_CARE[tier_index(aum)]
        contacts = np.where(live, rng.poisson(care), 0)
        self.contacts = np.zeros(self.x.size, dtype=np.int64)
        self.contacts[rows] = contacts
        self.contacts_month = t
        vas_used = np.where(live & self.vas[rows], rng.poisson(1.3, size=n), 0)
        complaints = np.where(live, rng.poisson(COMPLAINTS[eng]), 0)
        ext_est = np.round(
            np.exp(np.minimum(self.ext[rows], 25.0))
            * self.ext_noise[rows]
            * rng.lognormal(0.0, 0.05, size=n),
            -3,
        )
        status = np.where(closing, 1, 0)
        cols: dict[str, pa.Array] = {
            "customer_id": pa.array(self.customer_id[rows]),
            "status": _dict_array(status, ("open", "closed")),
        }
        for i, name in enumerate(
            ("aum_current", "aum_time_deposit", "aum_wealth", "aum_funds", "aum_insurance")
        ):
            cols[name] = pa.array(parts[:, i])
        cols["aum_total"] = pa.array(np.round(total, 2))
        for name, v in loans.items():
            cols[name] = pa.array(_money(v))
        for name, v in f.items():
            cols[name] = pa.array(v)
        cols["products_held"] = pa.array(products)
        cols["payroll_inflow"] = pa.array(_money(payroll))
        cols["txn_count"] = pa.array(txn.astype(np.int32))
        cols["txn_amount"] = pa.array(_money(txn_amount))
        cols["transfer_in"] = pa.array(_money(transfer_in))
        cols["transfer_out"] = pa.array(_money(transfer_out))
        cols["digital_logins"] = pa.array(logins.astype(np.int16))
        cols["branch_visits"] = pa.array(visits.astype(np.int16))
        cols["rm_contacts"] = pa.array(contacts.astype(np.int16))
        cols["vas_used"] = pa.array(vas_used.astype(np.int16))
        cols["complaints"] = pa.array(complaints.astype(np.int16))
        cols["external_assets_est"] = pa.array(np.maximum(ext_est, 0.0))
        return pa.table(cols)

    # --- cards ---------------------------------------------------------------------------
    def _issue_cards(self, t: int, live: np.ndarray, d: dict[str, np.ndarray]) -> None:
        """Cards issued during month t: asked-for cards and, some months, a bulk enrolment."""
        rng, n = self.rng, self.x.size
        no_card = live & (self.first_card_idx > t)
        f = self.flags
        p = 0.035 * (1 + 1.5 * f["has_mobile_banking"]) * (1 + 0.3 * np.minimum(d["tier"], 3))
        asked = (no_card & (rng.random(n) < p)) | (live & ~no_card & (rng.random(n) < 0.008))
        chan = np.where(
            self.age < 40,
            rng.choice([BRANCH, ONLINE, TELE], size=n, p=[0.25, 0.55, 0.20]),
            rng.choice([BRANCH, ONLINE, TELE], size=n, p=[0.55, 0.15, 0.30]),
        )
        issue_day = np.maximum(
            self.month_starts[t] + rng.integers(0, 28, size=n), self.onboard_date
        )
        holders = np.flatnonzero(asked)
        chans = chan[holders]
        days = issue_day[holders]
        # Bulk corporate enrolment: a team signs up a whole company on one day.
        if rng.random() < 0.4:
            employers = np.unique(self.employer[self.employer >= 0])
            if employers.size:
                picked = rng.choice(employers, size=min(3, employers.size), replace=False)
                bulk = np.flatnonzero(no_card & ~asked & np.isin(self.employer, picked))
                holders = np.concatenate([holders, bulk])
                chans = np.concatenate([chans, np.full(bulk.size, BULK)])
                day = self.month_starts[t] + rng.integers(0, 28)
                days = np.concatenate([days, np.maximum(day, self.onboard_date[bulk])])
        self._add_cards(t, holders, chans, days, d)
        self.issued.append(holders.size)
        for sh in self.shocks:
            if sh.kind == "card_campaign" and sh.start <= t < sh.start + CAMPAIGN_MONTHS:
                self._campaign_cards(sh, t, live, d)

    def _campaign_cards(self, sh: _ShockState, t: int, live, d) -> None:
        """A month of a card campaign: (strength - 1) x the usual new cards (the monthly mean
        of the three months before it) pushed to live customers not reached by it yet (those
        without a card three times as likely), mostly in bulk; they activate less than like
        cards (CAMPAIGN_ACTIVATION)."""
        rng = sh.rng
        usual = np.mean(self.issued[max(sh.start - 3, 0) : sh.start])
        pool = np.flatnonzero(live & ~sh.reached)
        k = min(round((sh.strength - 1) * usual), pool.size)
        if k == 0:
            return
        w = np.where(self.first_card_idx[pool] > t, 3.0, 1.0)
        holders = np.sort(rng.choice(pool, size=k, replace=False, p=w / w.sum()))
        chans = rng.choice(CAMPAIGN_CHANNEL_P.size, size=k, p=CAMPAIGN_CHANNEL_P)
        days = np.maximum(
            self.month_starts[t] + rng.integers(0, 28, size=k), self.onboard_date[holders]
        )
        sh.reached[holders] = True
        self._add_cards(t, holders, chans, days, d, rng=rng, boost=CAMPAIGN_ACTIVATION)

    def _add_cards(self, t, holders, chans, days, d, rng=None, boost: float = 0.0) -> None:
        """Issue cards; `rng` (a shock's generator) and `boost` (on the activation logit) are
        for campaign cards."""
        rng = self.rng if rng is None else rng
        k = holders.size
        if k == 0:
            return
        f = self.flags
        tier = d["tier"][holders]
        age = self.age[holders]
        propensity = (
            ACTIVATION_BASE[chans]
            + 0.8 * f["has_payroll"][holders]
            + 0.5 * f["has_mobile_banking"][holders]
            + 0.25 * np.log1p(self.login_base[holders] * f["has_mobile_banking"][holders])
            + 0.15 * (self._products()[holders] - 3)
            - 0.02 * np.clip(age - 35, 0, None)
            - 0.6 * (self.engagement[holders] >= 1)
        )
        if boost:
            propensity = propensity + boost
        pi = expit(propensity)
        delay_mean = FIRST_USE_DELAY[chans] * np.where(tier >= 2, 0.8, 1.0)
        used = rng.random(k) < pi
        delay = np.ceil(rng.exponential(delay_mean)).astype(int)
        first_use = np.where(used, days + delay, np.datetime64("NaT"))
        product = np.where(
            age < 28,
            CARD_PRODUCTS.index("youth"),
            np.where(
                age >= 60,
                CARD_PRODUCTS.index("senior"),
                np.select([tier >= 3, tier == 2], [2, 1], 0),
            ),
        )
        limit = np.round(
            np.array([10_000, 30_000, 100_000, 8_000, 10_000])[product]
            * rng.lognormal(0.0, 0.3, size=k),
            -3,
        ).clip(1000)
        self.card_parts.append(
            {
                "card_id": np.arange(self.n_cards, self.n_cards + k) + 9_000_001,
                "holder": holders,
                "issue_date": days.astype("datetime64[D]"),
                "issue_idx": np.full(k, t),
                "channel": chans.astype(np.int8),
                "product": product.astype(np.int8),
                "credit_limit": limit.astype(float),
                "first_use_date": first_use.astype("datetime64[D]"),
                "use_rate": rng.beta(3.0, 2.0, size=k) * np.where(chans == BULK, 0.5, 1.0),
            }
        )
        self.n_cards += k
        self.first_card_idx[holders] = np.minimum(self.first_card_idx[holders], t)
        if t >= 0:
            month_end = self.month_ends[t]
            elapsed = (month_end - days).astype(int)
            unused = ~(first_use <= month_end)
            mean = delay_mean
            f_a = 1 - np.exp(-elapsed / mean)
            f_b = 1 - np.exp(-(elapsed + ACTIVATION_WINDOW_DAYS) / mean)
            p = pi * (f_b - f_a) / (1 - pi * f_a)
            truth = {
                "card_id": self.card_parts[-1]["card_id"][unused],
                "as_of": pd.to_datetime(np.full(unused.sum(), month_end)),
                "p_activate_30d": p[unused].astype(np.float32),
            }
            if self.campaigns:
                h = holders[unused]
                wakes, channel = self._follow_up_terms(t, h, days[unused], chans[unused])
                effect = cmp.follow_up_effect(
                    p[unused], wakes, self.averse[h], ACTIVATION_WINDOW_DAYS
                )
                truth["effect_follow_up_30d"] = effect.astype(np.float32)
                truth["reach_follow_up"] = cmp.reach_probability(
                    channel, self.engagement[h]
                ).astype(np.float32)
            self.card_truth_parts.append(pd.DataFrame(truth))

    def _follow_up_terms(self, t: int, holders, issued, channels):
        """For new cards at month-end t: P(a reached follow-up wakes the card), and the
        follow-up's channel (a message to holders with mobile banking, a phone call else)."""
        mobile = self.flags["has_mobile_banking"][holders]
        wakes = cmp.follow_up_wakes(
            (self.month_ends[t] - issued).astype(int),
            channels == BULK,
            self.engagement[holders] >= 1,
            mobile,
        )
        return wakes, np.where(mobile, cmp.MESSAGE, cmp.PHONE)

    # --- campaigns ----------------------------------------------------------------------
    def _work_lists(self, t: int, d: dict[str, np.ndarray], truth: pd.DataFrame) -> pa.Table:
        """The bank works its lists of month-end t during month t+1 (`synthetic.campaigns`):
        the contacts, and the responses of the reached customers set in motion."""
        rng, tier = self.crng, d["tier"]
        idx = np.searchsorted(self.customer_id, truth["customer_id"].to_numpy())
        list_end = self.month_ends[t]
        tables = []
        for name, action, share, list_share in cmp.LISTS:
            card_id = None
            if action == "call":
                rows, p = idx, truth["p_churn_3m"].to_numpy(float)
                in_truth = np.arange(idx.size)
                channel = np.where(tier[rows] >= 2, cmp.RM_CALL, cmp.PHONE)
                score = logit(np.clip(p, 1e-6, 1 - 1e-6))
            elif action == "offer":
                p = truth["p_upgrade_3m"].to_numpy(float)
                keep = ~np.isnan(p)
                rows, p, in_truth = idx[keep], p[keep], np.flatnonzero(keep)
                channel = np.where(tier[rows] >= 2, cmp.RM_CALL, cmp.BRANCH)
                score = logit(np.clip(p, 1e-6, 1 - 1e-6))
            else:  # the month's new cards not used by its end; least likely to wake up first
                new = []  # this month's parts: the last ones (campaign shocks add theirs)
                for part in reversed(self.card_truth_parts):
                    if len(part) and part["as_of"].iloc[0] != list_end:
                        break
                    new.insert(0, part)
                if not any(len(part) for part in new):
                    continue
                cards = pd.concat(new, ignore_index=True)
                in_truth = np.arange(len(cards))
                c = self.cards_now
                at = np.searchsorted(c["card_id"], cards["card_id"].to_numpy())
                rows, card_id = c["holder"][at], cards["card_id"].to_numpy()
                p = cards["p_activate_30d"].to_numpy(float)
                wakes, channel = self._follow_up_terms(
                    t, rows, c["issue_date"][at], c["channel"][at]
                )
                score = -logit(np.clip(p, 1e-6, 1 - 1e-6))
            reach = cmp.reach_probability(channel, self.engagement[rows])
            worked = cmp.work_list(
                rng, score, self.rm[rows], self.rm_capacity, share, list_share, reach
            )
            hit = worked.rows[worked.reached]
            self._expect_response(truth if card_id is None else new, action, in_truth, worked)
            if action == "call":
                who = rows[hit]
                delta = cmp.call_effect(
                    tier[who], self.ext[who] - self.x[who], self.averse[who], self.receptive[who]
                )
                self.call_until[who], self.call_m[who] = t + cmp.EFFECT_MONTHS, np.exp(delta)
            elif action == "offer":
                who = rows[hit]
                self.offer_until[who] = t + cmp.EFFECT_MONTHS
                self.offer_shift[who] = cmp.offer_effect(
                    tier[who], self.ext[who] - self.x[who], self.averse[who], self.receptive[who]
                )
            else:
                self._follow_up(t, at[hit], wakes[hit], self.averse[rows[hit]])
            tables.append(
                cmp.contacts_table(
                    self.customer_id[rows[worked.rows]],
                    None if card_id is None else card_id[worked.rows],
                    list_end,
                    name,
                    action,
                    channel[worked.rows],
                    worked,
                    (self.rm[rows[worked.rows]] + 1).astype(np.int32),
                )
            )
        table = pa.concat_tables(tables)
        return table.sort_by([("customer_id", "ascending"), ("card_id", "ascending")])

    @staticmethod
    def _expect_response(truth, action: str, at: np.ndarray, worked: cmp.Worked) -> None:
        """The truth's probability of the treated rows of a worked list takes in the expected
        response (reach x effect): the truth is the probability given everything the month-end
        knows, the bank's list decisions included. Only the list's own outcome: what a call
        does to a customer's wealth take-up or tier is left out of those truths. `truth`: the
        month's customer truth, or its new cards' truth parts (in the order their rows were
        concatenated); `at`: each eligible row's position in it."""
        column = {"call": "churn_3m", "offer": "upgrade_3m", "follow_up": "activate_30d"}[action]
        effect, reach = f"effect_{action}_{column.split('_')[-1]}", f"reach_{action}"
        parts = truth if isinstance(truth, list) else [truth]
        sizes = np.cumsum([0, *(len(part) for part in parts)])
        treated = at[worked.rows[worked.treated]]
        for k, part in enumerate(parts):
            mine = treated[(treated >= sizes[k]) & (treated < sizes[k + 1])] - sizes[k]
            p = part[f"p_{column}"].to_numpy(copy=True)
            p[mine] += part[reach].to_numpy()[mine] * part[effect].to_numpy()[mine]
            part[f"p_{column}"] = p

    def _follow_up(self, t: int, at: np.ndarray, wakes: np.ndarray, averse: np.ndarray) -> None:
        """Reached follow-ups on the cards at positions `at` of `cards_now`: a card that would
        not have been used within the window wakes with odds `wakes`; a sleeping dog leaves a
        card that would have been used in the drawer (`synthetic.campaigns`)."""
        rng, c = self.crng, self.cards_now
        end = self.month_ends[t]
        window = end + np.timedelta64(ACTIVATION_WINDOW_DAYS, "D")
        first = c["first_use_date"][at]
        in_window = first <= window  # NaT compares False
        call = end + rng.integers(1, cmp.FOLLOW_CALL_DAYS + 1, size=at.size).astype("m8[D]")
        woken = call + np.ceil(rng.exponential(cmp.FOLLOW_DELAY, size=at.size)).astype("m8[D]")
        draw = rng.random(at.size)
        wake = ~averse & ~in_window & (draw < wakes)
        drop = averse & in_window & (draw < cmp.FOLLOW_AVERSE)
        new = np.where(wake, np.where(np.isnat(first), woken, np.minimum(first, woken)), first)
        new = np.where(drop, np.datetime64("NaT"), new).astype("datetime64[D]")
        # the same change in the part the card was issued in (cards_now is rebuilt from them)
        firsts = np.array([part["card_id"][0] for part in self.card_parts])
        ids = c["card_id"][at]
        part_of = np.searchsorted(firsts, ids, side="right") - 1
        for k in np.unique(part_of):
            mine = part_of == k
            part = self.card_parts[k]
            part["first_use_date"][ids[mine] - part["card_id"][0]] = new[mine]
        c["first_use_date"][at] = new

    def _initial_cards(self, d: dict[str, np.ndarray]) -> None:
        """Cards held before the book starts, issued between onboarding and month 0."""
        rng, n = self.rng, self.x.size
        pre = self.onboard_idx < 0
        p = 0.25 * (1 + self.flags["has_mobile_banking"]) * (1 + 0.3 * np.minimum(d["tier"], 3)) / 2
        holders = np.flatnonzero(pre & (rng.random(n) < p))
        start = self.onboard_date[holders]
        span = (self.month_starts[0] - start).astype(int).clip(1)
        days = start + (rng.random(holders.size) * span).astype(int)
        chans = rng.choice(4, size=holders.size, p=[0.45, 0.3, 0.15, 0.10])
        self._add_cards(-1, holders, chans, days, d)

    def _card_spend(self, t: int, live: np.ndarray) -> pa.Table:
        c = self.cards_now
        month_end = self.month_ends[t]
        active = (c["first_use_date"] <= month_end) & live[c["holder"]]
        first_month = (c["first_use_date"] >= self.month_starts[t]) & active
        eng = self.engagement[c["holder"]]
        p = c["use_rate"] * CARD_USE_MULT[eng]
        used = active & ((self.rng.random(p.size) < p) | first_month)
        k = int(used.sum())
        txn = 1 + self.rng.poisson(4.0 * c["use_rate"][used])
        amount = txn * self.rng.lognormal(np.log(250.0), 0.6, size=k)
        spend = pa.table(
            {
                "card_id": pa.array(c["card_id"][used]),
                "txn_count": pa.array(txn.astype(np.int16)),
                "amount": pa.array(_money(amount)),
            }
        )
        if not self.single:  # by customer, then card (card ids run in order of issue)
            spend = spend.take(np.argsort(c["holder"][used], kind="stable"))
        return spend

    def _stack_cards(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in self.card_parts]) for k in self.card_parts[0]}

    # --- the run ------------------------------------------------------------------------
    def run(self, out: Path, writer: _Writer, progress: Callable[[int], None]) -> None:
        """Simulate the block's months, handing each month's tables to `writer`; then its
        static tables. `progress(months done)` after each month."""
        m = len(self.months)
        d0 = self._drivers(0, self.onboard_idx <= 0)
        self._initial_cards(d0)
        d = d0
        for t in range(m):
            onboarded = self.onboard_idx <= t
            if t > 0:
                live_prev = (self.onboard_idx <= t - 1) & (self.exit_idx > t - 1)
                self._step(t, d, live_prev)
            live = onboarded & (self.exit_idx > t)
            d = self._drivers(t, live)
            self._issue_cards(t, live, d)
            self.cards_now = self._stack_cards()
            present = onboarded & ~((self.exit_idx < t) & self.closed)
            rows = np.flatnonzero(present)
            month = self.months[t]
            snapshot = self._snapshot(t, rows)  # first: the truth reads its RM contacts
            truth = self._truth(t, d, live)
            tables = [
                (snapshot, io.monthly_path(out, "snapshots", month)),
                (self._card_spend(t, live), io.monthly_path(out, "card_spend", month)),
                (truth, io.truth_monthly_path(out, month)),
            ]
            if self.campaigns and t + 1 < m:
                contacts = self._work_lists(t, d, truth)
                tables.append((contacts, io.monthly_path(out, "contacts", self.months[t + 1])))
            writer.write(tables)
            self.book.snapshot_rows += rows.size
            progress(t + 1)
        self._write_static(out, writer)

    def _write_static(self, out: Path, writer: _Writer) -> None:
        """The block's rows of the static tables (its relationships: `_Book.relationships`)."""
        customers = pa.table(
            {
                "customer_id": pa.array(self.customer_id),
                "segment": _dict_array(self.seg, SEGMENTS),
                "birth_year": pa.array(self.birth_year),
                "gender": _dict_array(self.gender, ("F", "M")),
                "region": _dict_array(self.branch_region[self.branch], REGIONS),
                "branch_id": pa.array((self.branch + 1).astype(np.int32)),
                "rm_id": pa.array((self.rm + 1).astype(np.int32)),
                "onboard_date": _date_array(self.onboard_date),
                "onboard_channel": _dict_array(self.channel, ONBOARD_CHANNELS),
                "payroll_enrolled": pa.array(self.payroll_enrolled),
            }
        )
        tables = [(customers, out / "customers.parquet")]
        rel = {
            "src": np.concatenate([self.rel_src + self.lo, self.x_src + self.lo]),
            "dst": np.concatenate([self.rel_dst + self.lo, self.x_dst]),
            "kind": np.concatenate([self.rel_kind, self.x_kind]),
            "since": np.concatenate([self.rel_since, self.x_since]),
        }
        if self.single:
            tables.append((_relationship_table(rel), out / "relationships.parquet"))
        else:
            self.book.keep_relationships(out, self.block, rel, self.x_src.size)
        c = self.cards_now
        end = self.month_ends[-1]
        # A first use after the book's last month-end, or after the holder attrited, is not
        # known to the bank: it stays empty.
        holder_exit = np.where(
            self.exit_idx[c["holder"]] < len(self.months),
            self.month_ends[np.minimum(self.exit_idx[c["holder"]], len(self.months) - 1)],
            np.datetime64("NaT"),
        )
        first_use = c["first_use_date"]
        unknown = (first_use > end) | (holder_exit < first_use)
        first_use = np.where(unknown, np.datetime64("NaT"), first_use)
        cards = pa.table(
            {
                "card_id": pa.array(c["card_id"].astype(np.int64)),
                "customer_id": pa.array(self.customer_id[c["holder"]]),
                "issue_date": _date_array(c["issue_date"]),
                "channel": _dict_array(c["channel"], CARD_CHANNELS),
                "product": _dict_array(c["product"], CARD_PRODUCTS),
                "credit_limit": pa.array(c["credit_limit"]),
                "first_use_date": _date_array(first_use.astype("datetime64[D]")),
            }
        )
        if not self.single:  # by customer, then card (card ids run in order of issue)
            cards = cards.take(np.argsort(c["holder"], kind="stable"))
        tables.append((cards, out / "cards.parquet"))
        if self.card_truth_parts:
            truth_cards = pd.concat(self.card_truth_parts, ignore_index=True)
            tables.append((truth_cards, out / io.TRUTH_DIR / "cards.parquet"))
        writer.write(tables)


def _add(bucket: dict, key, mass: np.ndarray) -> None:
    bucket[key] = bucket[key] + mass if key in bucket else mass


def _relationship_table(rel: dict[str, np.ndarray]) -> pa.Table:
    """Relationship rows (book positions) as the table, by customer then related customer."""
    table = pa.table(
        {
            "customer_id": pa.array(rel["src"] + 100_001),
            "related_customer_id": pa.array(rel["dst"] + 100_001),
            "kind": _dict_array(rel["kind"], RELATIONSHIP_KINDS),
            "since": _date_array(rel["since"]),
        }
    )
    return table.sort_by([("customer_id", "ascending"), ("related_customer_id", "ascending")])


class _Writer:
    """One thread writing the book's files, in the order handed to it: Parquet encoding
    releases the GIL, so it overlaps the simulation of the next month. At most one batch of
    tables waits to be written."""

    def __init__(self, files: PartFiles):
        self.files = files
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future | None = None

    def write(self, tables: list[tuple[pa.Table | pd.DataFrame, Path]]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, tables)

    def _write(self, tables: list[tuple[pa.Table | pd.DataFrame, Path]]) -> None:
        for table, path in tables:
            self.files.write(path, table)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Write what waits and complete every file."""
        self.wait()
        self._pool.shutdown()
        self.files.close()

    def abandon(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self.files.abandon()


def _generate(
    spec: BookSpec,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Simulate the book block by block into the folder `out`; return its metadata."""
    book = _Book(spec)
    m, blocks = len(book.months), len(book.bounds)
    writer = _Writer(PartFiles(ROW_GROUP_ROWS, one_part=book.single))
    try:
        writer.write([(book.branches, out / "branches.parquet"), (book.rms, out / "rms.parquet")])
        for b in range(blocks):
            sim = _Simulation(book, b)

            def step(done: int, b: int = b) -> None:
                if progress:
                    progress(b * m + done, blocks * m)

            sim.run(out, writer, step)
            book.record(sim)
            del sim  # the next block's state takes its place
        writer.wait()
        if not book.single:
            book.write_relationships(out, writer)
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    fields = asdict(spec)
    if book.single:
        del fields["block_size"]  # a book of one block does not depend on it
    meta = {
        "generator": GENERATOR,
        "generator_version": __version__,
        **fields,
        "months": book.months,
        "start_month": book.months[0],
        "snapshot_rows": int(book.snapshot_rows),
        "cards": int(book.n_cards),
    }
    if not book.single:
        meta["blocks"] = blocks
    (out / io.META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def generate_book(
    spec: BookSpec,
    out: Path,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate a book into `out`, published atomically. Returns its metadata (book.json).

    `progress(done, total)` after each month of each block: total is blocks x months (a book
    of one block: months, as before blocks)."""
    if spec.customers < 100:
        raise ValueError("a book needs at least 100 customers")
    if not 4 <= spec.months <= 120:
        raise ValueError("months must be between 4 and 120")
    if not (isinstance(spec.block_size, int) and spec.block_size >= MIN_BLOCK_SIZE):
        raise ValueError(f"block_size must be a whole number of at least {MIN_BLOCK_SIZE:,}")
    first = spec.month_keys()[0]
    for shock in spec.shocks:
        if not isinstance(shock, Shock):
            raise ValueError(f"shocks must be Shock objects, not {shock!r}")
        if shock.from_month <= first:
            raise ValueError(
                f"shock {shock} starts at or before the book's first month ({first}): "
                "a shock must start after it, so the book shows the world before and after"
            )
    with io.publishing(Path(out), replace=force) as tmp:
        meta = _generate(spec, tmp, progress)
    return meta
