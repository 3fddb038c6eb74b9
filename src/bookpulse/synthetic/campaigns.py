"""The bank's own campaign practice in the simulator, and the true effects of its actions.

Each month-end T the bank draws up three lists from its own earlier scorecard (a noisy view of
the true risk: the logit of the simulator's truth plus normal noise of sd BANK_SCORE_NOISE), per
RM: the RM's top fifth of eligible customers by that score (the half of the month's new cards
least likely to be used, for the activation list). The RM works part of the list within
capacity: at most `capacity x share` rows (shares as the playbook's), picked at random from the
list, since RMs work a list in their own order.
Each picked row is held out at random with probability HOLD_OUT (the control group: never
contacted); the rest are treated, contacted during month T+1 and reached with a probability that
depends on the channel and on how engaged the customer still is. Campaign contacts are recorded
in `contacts/` only; the snapshots' `rm_contacts` keep counting the RM's ordinary care.

A reached customer responds for the three months T+1 .. T+3 (the outcome window of month T's
labels):

* retention call: the monthly hazards of cooling, sudden exit and leaving are multiplied by
  exp(delta), and the chance of recovering from cooling divided by it. delta is CALL_BASE, more
  for liquid effective- and mid-tier customers with assets elsewhere (CALL_LIQUID at a gap of
  e^3 or more between external and in-bank assets), a third of it in the potential tier, plus a
  customer's own receptiveness; customers already leaving (drifting into dormancy) do not
  respond at all; call-averse customers ("sleeping dogs", CALL_AVERSE_RATE, most among young
  digital customers who rarely see a branch) respond with +CALL_AVERSE: the call pushes them
  away.
* upgrade offer: OFFER_BASE + OFFER_GAP x (gap up to e^4) is added to the logit of the monthly
  chance of consolidating external assets here (half of it in the potential tier); call-averse
  customers consolidate less (OFFER_AVERSE).
* activation follow-up (new cards not used by the month-end of their issue): a card that would
  not have been used within the 30-day window is used after the call with probability
  `expit(FOLLOW_BASE + ...)`, highest for cards in their first two weeks, lowest for bulk
  enrolments and for holders who are cooling or leaving; a call-averse holder leaves a card that
  would have been used in the drawer with probability FOLLOW_AVERSE.

The truth gives, per customer (per new card), the effect on the outcome's probability if the
action reaches them, and the chance to reach them: `effect_call_3m` and `reach_call` (churn in
3 months), `effect_offer_3m` and `reach_offer` (tier up at T+3), `effect_follow_up_30d` and
`reach_follow_up` (first use within 30 days). The effect of being put in the treated arm
(intention to treat) is their product. The truth's probabilities (`p_churn_3m`, ...) are given
everything the month-end knows, the bank's decisions included: responses still in force, and
for the treated rows of the lists just drawn up, reach x effect. The campaigns draw from their
own random stream, so a book is drawn as without campaigns until the first response changes a
customer's path; the draws after it differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import expit

from bookpulse.domain import ASSIGNMENTS, CONTACT_ACTIONS, CONTACT_CHANNELS

CONTACT_STREAM = 0xCA11  # the contacts' random stream: [seed, CONTACT_STREAM(, block)]
EFFECT_MONTHS = 3  # a reached customer responds in the three months after the list's month-end

BANK_SCORE_NOISE = 1.0  # sd of the noise on the logit of the true probability
LIST_SHARE = 0.2  # an RM's list: the top fifth of the RM's eligible customers
HOLD_OUT = 0.10  # the randomised hold-out share of every worked list

RM_CALL, BRANCH, PHONE, MESSAGE = (CONTACT_CHANNELS.index(c) for c in CONTACT_CHANNELS)
REACH_BY_CHANNEL = np.array([0.90, 0.70, 0.80, 0.90])  # in CONTACT_CHANNELS order
REACH_BY_ENGAGEMENT = np.array([1.0, 0.85, 0.6])  # engaged, cooling, leaving

CALL_BASE = -0.8  # on the log of the churn hazards
CALL_LIQUID = -1.2  # more for liquid effective/mid customers with assets elsewhere
CALL_POTENTIAL = 1 / 3  # share of the effect left in the potential tier
CALL_AVERSE = 0.6  # a sleeping dog's hazards rise
CALL_AVERSE_RATE = (0.5, 0.01)  # young digital customers rarely in a branch / the others
RECEPTIVENESS_SD = 0.1  # a customer's own response: a lognormal factor on the effect
RECOVER_MAX = 0.6  # the most a call can raise the chance of recovering from cooling

OFFER_BASE = 0.5  # on the logit of consolidating external assets here
OFFER_GAP = 1.5  # at a gap of e^4 or more
OFFER_AVERSE = -0.8

FOLLOW_BASE = -2.0  # on the logit of a call waking a card that would have stayed unused
FOLLOW_FIRST_WEEKS = 1.2  # a card issued 14 days or less before the month-end
FOLLOW_BULK = -3.0
FOLLOW_DISENGAGED = -2.0  # a holder cooling or leaving
FOLLOW_MOBILE = 0.5  # a holder with mobile banking (binding the card in the app)
FOLLOW_AVERSE = 0.3  # the share of would-be first uses a sleeping dog drops
FOLLOW_CALL_DAYS = 7  # the call comes 1..7 days after the month-end
FOLLOW_DELAY = 3.0  # mean days from the call to the first use

# The bank's lists: (list, action, share of the RM's capacity, the share of the RM's eligible
# rows on the list, best first)
LISTS: tuple[tuple[str, str, float, float], ...] = (
    ("retention", "call", 0.40, LIST_SHARE),
    ("upgrade", "offer", 0.25, LIST_SHARE),
    ("activation", "follow_up", 0.15, 0.5),
)


def call_averse(rng: np.random.Generator, age, mobile, visits) -> np.ndarray:
    """Who a call annoys: mostly young customers with mobile banking who rarely visit."""
    young_digital = (age < 35) & mobile & (visits < 0.5)
    return rng.random(age.size) < np.where(young_digital, *CALL_AVERSE_RATE)


def call_effect(tier, gap, averse, receptive) -> np.ndarray:
    """delta, the log multiplier of the churn hazards of a reached customer (module doc)."""
    liquid = np.isin(tier, (1, 2)) * np.clip(gap, 0.0, 3.0) / 3.0
    delta = (CALL_BASE + CALL_LIQUID * liquid) * np.where(tier == 0, CALL_POTENTIAL, 1.0)
    return np.where(averse, CALL_AVERSE, delta * np.exp(receptive))


def offer_effect(tier, gap, averse, receptive) -> np.ndarray:
    """The shift of the consolidation logit of a reached customer (module doc)."""
    shift = (OFFER_BASE + OFFER_GAP * np.clip(gap, 0.0, 4.0) / 4.0) * np.where(tier == 0, 0.5, 1.0)
    return np.where(averse, OFFER_AVERSE, shift * np.exp(receptive))


def follow_up_wakes(days_since_issue, bulk, disengaged, mobile) -> np.ndarray:
    """P(a reached follow-up wakes a card that would have stayed unused in the window)."""
    z = (
        FOLLOW_BASE
        + FOLLOW_FIRST_WEEKS * (days_since_issue <= 14)
        + FOLLOW_BULK * bulk
        + FOLLOW_DISENGAGED * disengaged
        + FOLLOW_MOBILE * mobile
    )
    return expit(z)


def follow_up_in_window(window_days: int) -> float:
    """P(the first use a follow-up brings falls within the window after the month-end): the call
    comes 1..FOLLOW_CALL_DAYS days after it (uniform), the first use ceil(Exp) days later."""
    offsets = np.arange(1, FOLLOW_CALL_DAYS + 1)
    return float(np.mean(1 - np.exp(-np.maximum(window_days - offsets, 0) / FOLLOW_DELAY)))


def follow_up_effect(p_activate, wakes, averse, window_days: int) -> np.ndarray:
    """The change of P(first use within the window) if a follow-up reaches the holder."""
    gain = (1 - p_activate) * wakes * follow_up_in_window(window_days)
    return np.where(averse, -FOLLOW_AVERSE * p_activate, gain)


def reach_probability(channel, engagement) -> np.ndarray:
    return REACH_BY_CHANNEL[channel] * REACH_BY_ENGAGEMENT[engagement]


@dataclass
class Worked:
    """One list worked in a month: the rows picked (positions into the eligible rows), their
    assignment (True: treated) and whether the contact reached them."""

    rows: np.ndarray
    treated: np.ndarray
    reached: np.ndarray


def work_list(
    rng: np.random.Generator,
    score: np.ndarray,
    rm: np.ndarray,
    capacity: np.ndarray,
    share: float,
    list_share: float,
    reach: np.ndarray,
) -> Worked:
    """The bank's practice on one list (module doc). `score` (higher: first on the list) and
    `rm` (0-based) per eligible row; `capacity[rm]`: the contacts each RM may give this list
    (already scaled to the RM's customers in this block); `reach`: per eligible row."""
    n = score.size
    noisy = score + rng.normal(0.0, BANK_SCORE_NOISE, size=n)
    order = np.lexsort((-noisy, rm))  # by RM, best first
    rm_sorted = rm[order]
    counts = np.bincount(rm, minlength=capacity.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[rm_sorted]
    on_list = np.zeros(n, dtype=bool)
    on_list[order] = rank < np.ceil(list_share * counts[rm_sorted])
    # the RM picks at random from the list, up to capacity
    listed = np.flatnonzero(on_list)
    order = listed[np.lexsort((rng.random(listed.size), rm[listed]))]
    counts = np.bincount(rm[order], minlength=capacity.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(order.size) - starts[rm[order]]
    limit = np.floor(capacity * share + rng.random(capacity.size)).astype(int)  # unbiased
    rows = np.sort(order[rank < limit[rm[order]]])
    treated = rng.random(rows.size) >= HOLD_OUT
    reached = treated & (rng.random(rows.size) < reach[rows])
    return Worked(rows, treated, reached)


def contacts_table(
    customer_id: np.ndarray,
    card_id: np.ndarray | None,
    list_month_end: np.datetime64,
    list_name: str,
    action: str,
    channel: np.ndarray,
    worked: Worked,
    rm_id: np.ndarray,
) -> pa.Table:
    """The `contacts` rows of one worked list (customer order, then card)."""
    k = worked.rows.size
    order = np.lexsort((card_id if card_id is not None else np.zeros(k, np.int64), customer_id))
    cards = pa.nulls(k, pa.int64()) if card_id is None else pa.array(card_id[order], pa.int64())

    def text(codes: np.ndarray | int, names: tuple[str, ...]) -> pa.Array:
        return pa.array(np.broadcast_to(np.asarray(names, dtype=object)[codes], (k,)), pa.string())

    return pa.table(
        {
            "customer_id": pa.array(customer_id[order], pa.int64()),
            "card_id": cards,
            "list_month": pa.array(
                np.full(k, pd.Timestamp(list_month_end).as_unit("us").to_datetime64())
            ),
            "list": text(0, (list_name,)),
            "action": text(CONTACT_ACTIONS.index(action), CONTACT_ACTIONS),
            "channel": text(channel[order], CONTACT_CHANNELS),
            "assignment": text(np.where(worked.treated[order], 0, 1), ASSIGNMENTS),
            "reached": pa.array(worked.reached[order]),
            "rm_id": pa.array(rm_id[order], pa.int32()),
        }
    )
