"""Action lists: per branch and per RM, the customers (or cards) to work this month.

The list-driven method (DOMAIN.md section 6): each RM gets a ranked list with the reason and
a suggested action from the playbook (models/playbook.yaml), no longer than the part of the
RM's monthly capacity the list may take. Pure: frames in, frames out; the same function runs
on the whole book (local engine) or on one group of RMs at a time (Spark).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bookpulse.specs import ActionList

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
    "model",
    "model_version",
]


def rm_caps(rms: pd.DataFrame, lst: ActionList) -> pd.Series:
    """How many rows each RM's list may hold: their capacity times the list's share (at
    least one), indexed by rm_id."""
    cap = np.maximum(np.floor(rms["capacity"].to_numpy(float) * lst.share_of_capacity), 1)
    return pd.Series(cap.astype(np.int64), index=rms["rm_id"].to_numpy())


def _selected(
    lst: ActionList, scored: pd.DataFrame, prefix: str, key: str, rms: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of the list and their rank within their RM: the list's deciles, ordered by
    probability (then id: a total order), cut at each RM's cap."""
    p, decile = scored[f"{prefix}_probability"], scored[f"{prefix}_decile"]
    if lst.rank == "highest_first":
        rows = scored.loc[p.notna() & (decile <= lst.max_decile)]
        ascending = False
    else:
        rows = scored.loc[p.notna() & (decile >= 11 - lst.max_decile)]
        ascending = True
    rows = rows.sort_values(
        ["rm_id", f"{prefix}_probability", key], ascending=[True, ascending, True], kind="stable"
    )
    rank = rows.groupby("rm_id", sort=False).cumcount().to_numpy() + 1
    caps = rm_caps(rms, lst).reindex(rows["rm_id"].to_numpy()).fillna(0).to_numpy()
    keep = rank <= caps
    return rows.loc[keep], rank[keep]


def list_inputs(prefix: str, key: str) -> list[str]:
    """The columns of a score table `action_list` reads."""
    scores = ["probability", "percentile", "decile", "reason1_sentence", "reason2_sentence"]
    scores += ["model", "model_version"]
    context = ["customer_id", "as_of", "branch_id", "rm_id", "segment", "tier"]
    return [*dict.fromkeys([key, *context]), *(f"{prefix}_{c}" for c in scores)]


def list_candidates(
    lst: ActionList, scored: pd.DataFrame, prefix: str, key: str, rms: pd.DataFrame
) -> pd.DataFrame:
    """The rows of `scored` that could make the list (only the columns the list reads):
    those it would hold if `scored` were the whole book. Rows of the book outside a part's
    candidates can only rank below them in their RM's list, so `action_list` on the
    candidates of every part (merged as they come: `list_candidates(pd.concat([so_far,
    part's]))` stays as small as the list) is the list of the whole book. How the streaming
    engines build lists without holding the book."""
    return _selected(lst, scored[list_inputs(prefix, key)], prefix, key, rms)[0]


def action_list(
    name: str,
    lst: ActionList,
    scored: pd.DataFrame,
    prefix: str,
    key: str,
    rms: pd.DataFrame,
    branches: pd.DataFrame,
) -> pd.DataFrame:
    """The list `name` from scored rows (the `key` id and customer_id, branch_id, rm_id,
    segment, tier and the `<prefix>_*` score columns), ranked within each RM and cut at the
    RM's cap."""
    col = lambda c: f"{prefix}_{c}"  # noqa: E731
    rows, rank = _selected(lst, scored, prefix, key, rms)
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
            "model": rows[col("model")].to_numpy(object),
            "model_version": rows[col("model_version")].to_numpy(object),
        },
        columns=LIST_COLUMNS,
    )
    out["card_id"] = out["card_id"].astype("Int64")
    return out.sort_values(["branch_id", "rm_id", "rank"], kind="stable").reset_index(drop=True)
