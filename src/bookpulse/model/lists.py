"""Action lists: per branch and per RM, the customers (or cards) to work this month.

The list-driven method (DOMAIN.md section 6): each RM gets a ranked list with the reason and
a suggested action from the playbook (models/playbook.yaml), no longer than the part of the
RM's monthly capacity the list may take. Pure: frames in, frames out; the same function runs
on the whole book (local engine) or on one group of RMs at a time (Spark).

A list whose playbook entry names an uplift model with a champion is ranked, within the same
deciles of the score, by the expected value of the action: the change it makes in the
outcome's probability (in the direction it aims at) times what is at stake; each row says so
in a sentence. Every list holds out a share of each RM's rows at random (`assignment`:
control, not to be contacted), decided by a hash of the list, the month and the id, so every
engine and every rerun holds out the same rows.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from bookpulse.specs import ActionList, UpliftSpec

LIST_COLUMNS = [
    "list",
    "as_of",
    "branch_id",
    "branch_name",
    "rm_id",
    "rm_name",
    "rank",
    "customer_id",
    "card_id",
    "segment",
    "tier",
    "probability",
    "percentile",
    "decile",
    "reason",
    "second_reason",
    "suggested_action",
    "assignment",
    "expected_effect",
    "effect",
    "at_stake",
    "expected_value",
    "model",
    "model_version",
]
UPLIFT_COLUMNS = ("effect", "benefit", "at_stake", "value")


def rm_caps(rms: pd.DataFrame, lst: ActionList) -> pd.Series:
    """How many rows each RM's list may hold: their capacity times the list's share (at
    least one), indexed by rm_id."""
    cap = np.maximum(np.floor(rms["capacity"].to_numpy(float) * lst.share_of_capacity), 1)
    return pd.Series(cap.astype(np.int64), index=rms["rm_id"].to_numpy())


def uplift_prefix(uplift: UpliftSpec | None, scored: pd.DataFrame) -> str | None:
    """The uplift columns' prefix when the list is ranked by expected value this month."""
    if uplift is None or f"{uplift.prefix}_value" not in scored:
        return None
    return uplift.prefix


def _selected(
    lst: ActionList,
    scored: pd.DataFrame,
    prefix: str,
    key: str,
    rms: pd.DataFrame,
    uplift: UpliftSpec | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of the list and their rank within their RM: the list's deciles, ordered by
    probability, or by the expected value of the action when an uplift model scored them
    (only rows it is expected to help), then id (a total order), cut at each RM's cap."""
    p, decile = scored[f"{prefix}_probability"], scored[f"{prefix}_decile"]
    if lst.rank == "highest_first":
        rows = scored.loc[p.notna() & (decile <= lst.max_decile)]
        ascending = False
    else:
        rows = scored.loc[p.notna() & (decile >= 11 - lst.max_decile)]
        ascending = True
    by = uplift_prefix(uplift, scored)
    order = f"{by}_value" if by else f"{prefix}_probability"
    if by:
        ascending = False  # the most value first, whatever the score's direction
        # nobody the action is expected to leave worse off (or unchanged) is put on the list
        rows = rows.loc[rows[order] > 0]
    rows = rows.sort_values(
        ["rm_id", order, key], ascending=[True, ascending, True], kind="stable", na_position="last"
    )
    rank = rows.groupby("rm_id", sort=False).cumcount().to_numpy() + 1
    caps = rm_caps(rms, lst).reindex(rows["rm_id"].to_numpy()).fillna(0).to_numpy()
    keep = rank <= caps
    return rows.loc[keep], rank[keep]


def list_inputs(prefix: str, key: str, uplift: str | None = None) -> list[str]:
    """The columns of a score table `action_list` reads (`uplift`: the uplift columns'
    prefix, when they rank the list)."""
    scores = ["probability", "percentile", "decile", "reason1_sentence", "reason2_sentence"]
    scores += ["model", "model_version"]
    context = ["customer_id", "as_of", "branch_id", "rm_id", "segment", "tier"]
    effects = [f"{uplift}_{c}" for c in UPLIFT_COLUMNS] if uplift else []
    return [*dict.fromkeys([key, *context]), *(f"{prefix}_{c}" for c in scores), *effects]


def list_candidates(
    lst: ActionList,
    scored: pd.DataFrame,
    prefix: str,
    key: str,
    rms: pd.DataFrame,
    uplift: UpliftSpec | None = None,
) -> pd.DataFrame:
    """The rows of `scored` that could make the list (only the columns the list reads):
    those it would hold if `scored` were the whole book. Rows of the book outside a part's
    candidates can only rank below them in their RM's list, so `action_list` on the
    candidates of every part (merged as they come: `list_candidates(pd.concat([so_far,
    part's]))` stays as small as the list) is the list of the whole book. How the streaming
    engines build lists without holding the book."""
    columns = list_inputs(prefix, key, uplift_prefix(uplift, scored))
    return _selected(lst, scored[columns], prefix, key, rms, uplift)[0]


def held_out(list_name: str, as_of, ids: np.ndarray, share: float) -> np.ndarray:
    """Which rows a list holds out: a hash of the list, the month and the id below `share`
    (uniform, unrelated to anything about the customer; the same in every engine and rerun)."""
    month = str(pd.Timestamp(as_of).to_period("M"))
    salt = np.uint64(int(hashlib.sha256(f"{list_name}|{month}".encode()).hexdigest()[:16], 16))
    # pandas mixes the bits of each 64-bit value (its hash_key applies to text only)
    h = pd.util.hash_array(np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ salt)
    return (h / 2.0**64) < share


def money(x: float) -> str:
    """An amount of CNY as an RM reads it: CNY 600, CNY 420k, CNY 1.2M."""
    if not np.isfinite(x):
        return "-"
    if x >= 1e6:
        return f"CNY {x / 1e6:,.1f}M"
    if x >= 1e4:
        return f"CNY {x / 1e3:,.0f}k"
    return f"CNY {x:,.0f}"


def effect_sentences(uplift: UpliftSpec, noun: str, p, effect, stake) -> list[str]:
    """'a call lowers this customer's 3-month churn risk from 18% to 9%; CNY 420k at stake'."""
    out = []
    for before, change, worth in zip(p, effect, stake, strict=True):
        if not (np.isfinite(before) and np.isfinite(change)):
            out.append("")
            continue
        after = min(max(before + change, 0.0), 1.0)
        verb = "lowers" if change < -5e-4 else "raises" if change > 5e-4 else "hardly changes"
        fmt = "{:.0%}" if round(before, 2) != round(after, 2) else "{:.1%}"
        out.append(
            f"{uplift.uplift.action_phrase} {verb} this {noun}'s {uplift.uplift.outcome_phrase} "
            f"from {fmt.format(before)} to {fmt.format(after)}; {money(worth)} at stake"
        )
    return out


def action_list(
    name: str,
    lst: ActionList,
    scored: pd.DataFrame,
    prefix: str,
    key: str,
    rms: pd.DataFrame,
    branches: pd.DataFrame,
    uplift: UpliftSpec | None = None,
) -> pd.DataFrame:
    """The list `name` from scored rows (the `key` id and customer_id, branch_id, rm_id,
    segment, tier and the `<prefix>_*` score columns, and the uplift model's columns when it
    ranks the list), ranked within each RM and cut at the RM's cap; a share held out."""
    col = lambda c: f"{prefix}_{c}"  # noqa: E731
    rows, rank = _selected(lst, scored, prefix, key, rms, uplift)
    by = uplift_prefix(uplift, scored)
    nan = np.full(len(rows), np.nan)
    effect = rows[f"{by}_effect"].to_numpy(float) if by else nan
    stake = rows[f"{by}_at_stake"].to_numpy(float) if by else nan
    value = rows[f"{by}_value"].to_numpy(float) if by else nan
    probability = rows[col("probability")].to_numpy(float)
    noun = "card" if key == "card_id" else "customer"
    sentences = (
        effect_sentences(uplift, noun, probability, effect, stake) if by else [""] * len(rows)
    )
    control = held_out(
        name, rows["as_of"].iloc[0] if len(rows) else "2000-01", rows[key], lst.hold_out
    )
    segment = rows["segment"].astype("string").fillna("").to_numpy(object)
    tier = rows["tier"].astype("string").fillna("").to_numpy(object)
    pairs = pd.Series(list(zip(segment, tier, strict=True)), dtype=object)
    actions = pairs.map({p: lst.action_for(*p) for p in set(pairs)}).to_numpy(object)
    rm_names = rms.set_index("rm_id")["rm_name"]
    branch_names = branches.set_index("branch_id")["branch_name"]
    out = pd.DataFrame(
        {
            "list": name,
            "as_of": rows["as_of"].to_numpy(),
            "branch_id": rows["branch_id"].to_numpy(),
            "branch_name": branch_names.reindex(rows["branch_id"].to_numpy()).to_numpy(object),
            "rm_id": rows["rm_id"].to_numpy(),
            "rm_name": rm_names.reindex(rows["rm_id"].to_numpy()).to_numpy(object),
            "rank": rank.astype(np.int32),
            "customer_id": rows["customer_id"].to_numpy(),
            "card_id": rows["card_id"].to_numpy() if key == "card_id" else pd.NA,
            "segment": segment,
            "tier": tier,
            "probability": rows[col("probability")].to_numpy(),
            "percentile": rows[col("percentile")].to_numpy(),
            "decile": rows[col("decile")].to_numpy(),
            "reason": rows[col("reason1_sentence")].to_numpy(object),
            "second_reason": rows[col("reason2_sentence")].to_numpy(object),
            "suggested_action": actions,
            "assignment": np.where(control, "control", "treated"),
            "expected_effect": np.asarray(sentences, dtype=object),
            "effect": effect,
            "at_stake": stake,
            "expected_value": value,
            "model": rows[col("model")].to_numpy(object),
            "model_version": rows[col("model_version")].to_numpy(object),
        },
        columns=LIST_COLUMNS,
    )
    out["card_id"] = out["card_id"].astype("Int64")
    return out.sort_values(["branch_id", "rm_id", "rank"], kind="stable").reset_index(drop=True)
