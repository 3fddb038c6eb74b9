"""The month's scoring, pure: feature frames in, score tables and action lists out.

`score_rows` scores each entity's rows with every champion of that entity (each on its own
population: `scored_population`), `add_ranks` places each probability in the book, and
`build_lists` cuts each playbook list per RM. The local engine runs them on the whole month;
the Spark engine on partitions of customers. No model is named here: each one's entity, id
column, column prefix, population and list come from its spec.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from bookpulse.domain import ENTITY_CONTEXT, ENTITY_KEYS
from bookpulse.errors import ScoringError
from bookpulse.labels import in_population
from bookpulse.model.core import Champion, percentile_and_decile, rank_in_book, score_frame
from bookpulse.model.lists import action_list
from bookpulse.model.uplift import ASSET_FEATURE, effect_columns
from bookpulse.specs import ActionList, FeatureSpec, ModelSpec, Playbook, UpliftSpec

CHUNK_ROWS = 100_000
CUSTOMER_BASE = ["customer_id", "as_of", "branch_id", "rm_id", "segment", "tier"]
CARD_BASE = ["card_id", "customer_id", "as_of", "branch_id", "rm_id", "segment", "tier"]

Progress = Callable[[int], None]  # called with the rows just scored


def require_features(champions: dict[str, Champion], made: dict[str, list[str]]) -> None:
    """Refuse a model needing features the pipeline does not make (`made`: per entity, the
    feature frame's columns, or the catalog's features: the pipeline makes those)."""
    for champ in champions.values():
        have = set(made[champ.spec.target.entity])
        models = [(champ.spec, champ.model.features, champ.version)]
        models += [(u.spec, u.model.features, u.version) for u in champ.uplifts]
        for spec, features, version in models:
            missing = [f for f in features if f not in have]
            if missing:
                raise ScoringError(
                    f"{spec.registered_name} version {version} needs features the feature "
                    f"pipeline no longer makes: {', '.join(missing)}. Retrain it (`bookpulse "
                    f"train {spec.name}`) and promote the new version."
                )


def _prefixed(scores: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    body = scores.drop(columns=["as_of"]).set_index(key)
    return body.add_prefix(f"{prefix}_")


def _score_chunked(
    champ: Champion, frame: pd.DataFrame, catalog, progress: Progress | None
) -> pd.DataFrame:
    parts = []
    for start in range(0, len(frame), CHUNK_ROWS):
        chunk = frame.iloc[start : start + CHUNK_ROWS]
        parts.append(score_frame(champ, chunk, catalog))
        if progress:
            progress(len(chunk))
    if not parts:
        return score_frame(champ, frame, catalog)
    return pd.concat(parts, ignore_index=True)


def score_rows(
    champions: dict[str, Champion],
    catalogs: dict[str, dict[str, FeatureSpec]],
    customers: pd.DataFrame,
    cards: pd.DataFrame,
    static: pd.DataFrame,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer rows and card rows, each with its context (branch, RM, segment, tier) and
    the `<prefix>_*` columns of every champion of its entity, scored on that champion's
    population (NaN elsewhere): every score column but percentile and decile.

    `customers` and `cards` are feature frames as of one month; `static` is the book's
    customers table (branch and RM)."""
    where = static.set_index("customer_id")[["branch_id", "rm_id"]]
    out = []
    for entity, features in (("customer", customers), ("card", cards)):
        key = ENTITY_KEYS[entity]
        tier, segment = ENTITY_CONTEXT[entity]
        table = features[list(dict.fromkeys([key, "customer_id", "as_of"]))].copy()
        table[["branch_id", "rm_id"]] = where.reindex(table["customer_id"]).to_numpy()
        table["segment"] = features[segment].astype("string").to_numpy()
        table["tier"] = features[tier].astype("string").to_numpy()
        table = table.set_index(key)
        for champ in champions.values():
            if champ.spec.entity != entity:
                continue
            frame = scored_population(champ.spec, features)
            scores = _score_chunked(champ, frame, catalogs[entity], progress)
            table = table.join(_prefixed(scores, key, champ.spec.prefix), how="left")
            for uc in champ.uplifts:  # what each action would change, on the same rows
                effects = effect_columns(uc, frame, entity)
                effects.index = frame[key].to_numpy()
                table = table.join(effects, how="left")
        out.append(table.reset_index())
    return out[0], out[1]


def scored_population(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a feature frame of the spec's entity that the model scores: its target's
    population rule (`bookpulse.labels.in_population`), the one that decides who is labelled."""
    rule = spec.target.scored
    if not (rule.exclude_tiers or rule.without_products):
        return frame
    tier = frame[ENTITY_CONTEXT[spec.entity][0]].astype("string").to_numpy(object)
    return frame.loc[in_population(rule, tier, lambda f: frame[f].to_numpy(float, na_value=0))]


def population_columns(spec: ModelSpec) -> list[str]:
    """The feature columns the population rule reads (kept in the online store for the API)."""
    rule = spec.target.scored
    tier = [ENTITY_CONTEXT[spec.entity][0]] if rule.exclude_tiers else []
    return [*tier, *rule.without_products]


def add_ranks(
    table: pd.DataFrame,
    prefix: str,
    below: pd.Series | None = None,
    n: int | None = None,
    inplace: bool = False,
) -> pd.DataFrame:
    """Insert `<prefix>_percentile` and `<prefix>_decile` after `<prefix>_probability` (into
    `table` itself with `inplace`, else into a copy).

    From the table itself, or, for a part of the book, from each row's count of strictly
    lower probabilities in the book (`below`) and the book's count (`n`)."""
    p = table[f"{prefix}_probability"]
    scored = p.notna()
    ranks = pd.DataFrame(index=table.index, columns=["percentile", "decile"], dtype=float)
    if below is None:
        got = rank_in_book(p.loc[scored])
    else:
        got = percentile_and_decile(below.loc[scored].to_numpy(float), int(n or 0), p.index[scored])
    ranks.loc[scored, "percentile"] = got["percentile"]
    ranks.loc[scored, "decile"] = got["decile"]
    out = table if inplace else table.copy()
    at = out.columns.get_loc(f"{prefix}_probability") + 1
    out.insert(at, f"{prefix}_percentile", ranks["percentile"].astype("float64"))
    out.insert(at + 1, f"{prefix}_decile", ranks["decile"].astype("Int8"))
    return out


def add_book_ranks(
    table: pd.DataFrame, prefix: str, book: np.ndarray, inplace: bool = False
) -> pd.DataFrame:
    """`add_ranks` for a part of the book, against `book`: the sorted probabilities of every
    row of the book the model scored. Equal to ranking the whole book at once."""
    p = table[f"{prefix}_probability"].to_numpy(np.float64)
    below = pd.Series(np.searchsorted(book, p, side="left"), index=table.index)
    return add_ranks(table, prefix, below, len(book), inplace)


def uplift_specs(champions: dict[str, Champion]) -> dict[str, UpliftSpec]:
    """The uplift models the champions carry, by name."""
    return {u.spec.name: u.spec for c in champions.values() for u in c.uplifts}


def planned_lists(
    playbook: Playbook,
    specs: dict[str, ModelSpec],
    columns: dict[str, list[str]],
    uplifts: dict[str, UpliftSpec] | None = None,
) -> list[tuple[str, ActionList, ModelSpec, UpliftSpec | None]]:
    """The playbook's lists whose model scored this month: (list name, list, its model's
    spec, the uplift model that ranks it or None), given each entity's score-table
    `columns` and the uplift models that scored this month (`uplifts`, by name)."""
    out = []
    for name, lst in playbook.lists.items():
        spec = specs.get(lst.model)
        if spec is not None and f"{spec.prefix}_probability" in columns[spec.entity]:
            uplift = (uplifts or {}).get(lst.uplift) if lst.uplift else None
            if uplift is not None and f"{uplift.prefix}_value" not in columns[spec.entity]:
                uplift = None
            out.append((name, lst, spec, uplift))
    return out


def build_lists(
    customers: pd.DataFrame,
    cards: pd.DataFrame,
    rms: pd.DataFrame,
    branches: pd.DataFrame,
    playbook: Playbook,
    specs: dict[str, ModelSpec],
    uplifts: dict[str, UpliftSpec] | None = None,
) -> dict[str, pd.DataFrame]:
    """Each playbook list whose model scored this month, from its entity's score table."""
    tables = {"customer": customers, "card": cards}
    columns = {e: list(t.columns) for e, t in tables.items()}
    return {
        name: action_list(
            name, lst, tables[spec.entity], spec.prefix, spec.id_column, rms, branches, uplift
        )
        for name, lst, spec, uplift in planned_lists(playbook, specs, columns, uplifts)
    }


def stored_features(champions: dict[str, Champion], entity: str) -> list[str]:
    """The features an entity's answers need, sorted: what its champions and their uplift
    models use, the population rules read and the assets an action's stake is counted in."""
    used = set()
    for c in champions.values():
        if c.spec.entity != entity:
            continue
        used |= {*c.model.features, *population_columns(c.spec)}
        for u in c.uplifts:
            used |= set(u.model.features)
            if u.spec.uplift.at_stake == "assets":
                used.add(ASSET_FEATURE[entity])
    return sorted(used)


def online_rows(
    champions: dict[str, Champion], entity: str, features: pd.DataFrame, table: pd.DataFrame
) -> pd.DataFrame:
    """One entity's rows for the online store (one document each): the id, `as_of`, the
    features the champions use and the row's context (branch, RM, segment, tier) from its
    score `table`. The Spark engine builds the same rows in its tasks."""
    key = ENTITY_KEYS[entity]
    used = stored_features(champions, entity)
    context = ["customer_id", "branch_id", "rm_id", "segment", "tier"]
    ctx = table[[key, *[c for c in context if c != key]]].set_index(key)
    feats = features[[key, "as_of", *[f for f in used if f not in ctx.columns]]]
    return feats.set_index(key).join(ctx, how="left").reset_index()
