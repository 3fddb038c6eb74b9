"""What the API answers, independent of the web framework: score records for ids found in the
online store, or for feature payloads the CRM sends. Both go through the batch's scoring core,
so a customer scored by id with the same champion gets the batch's numbers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model

from bookpulse.domain import ENTITY_CONTEXT, ENTITY_KEYS
from bookpulse.labels import in_population
from bookpulse.model.batch import stored_features
from bookpulse.model.core import Champion, model_versions, percentile_arrays, score_records
from bookpulse.model.lists import effect_sentences
from bookpulse.model.uplift import ASSET_FEATURE, effect_arrays
from bookpulse.specs import FeatureSpec, Playbook


@dataclass
class Scorer:
    """The champions, the online store, the playbook and the catalog: everything a response
    needs. Built once at start-up (and again on reload)."""

    champions: dict[str, Champion]
    store: Any  # adapters.store.OnlineStore
    playbook: Playbook
    catalogs: dict[str, dict[str, FeatureSpec]]
    _payload_models: dict[str, type[BaseModel]] = field(default_factory=dict)

    def versions(self) -> dict[str, str]:
        """Registered model -> version, for the scoring models and their uplift models."""
        return model_versions(self.champions)

    def of(self, entity: str) -> list[Champion]:
        """The champions that score this entity, in the specs' order."""
        return [c for c in self.champions.values() if c.spec.entity == entity]

    def features(self, entity: str) -> list[str]:
        """Every feature the entity's champions and their uplift models use or their
        populations read, in a fixed order."""
        return stored_features(self.champions, entity)

    # --- by id ------------------------------------------------------------------------
    def score_ids(self, entity: str, ids: list[int]) -> list[dict]:
        """One result per id, in the order asked; unknown ids get status not_found."""
        docs = self.store.get(entity, list(dict.fromkeys(ids)))
        found = list(dict.fromkeys(i for i in ids if i in docs))
        results = dict(
            zip(found, self.score_rows(entity, [{"id": i, **docs[i]} for i in found]), strict=True)
        )
        return [results.get(i, {"id": i, "status": "not_found"}) for i in ids]

    # --- from a payload ---------------------------------------------------------------
    def payload_model(self, entity: str) -> type[BaseModel]:
        """A pydantic model with one field per feature: numbers (finite, or null when
        unknown) and categories limited to the levels the models were trained on."""
        if entity not in self._payload_models:
            self._payload_models[entity] = payload_model(
                entity, self.features(entity), self.catalogs[entity], self.champions
            )
        return self._payload_models[entity]

    # --- shared -----------------------------------------------------------------------
    def score_rows(self, entity: str, records: list[dict]) -> list[dict]:
        """Results for feature rows: stored vectors, or the CRM's own validated values."""
        tier_key, segment_key = ENTITY_CONTEXT[entity]
        out = []
        for r in records:
            tier = r.get("tier") if r.get("tier") is not None else r.get(tier_key)
            segment = r.get("segment") if r.get("segment") is not None else r.get(segment_key)
            out.append(
                {
                    "id": r.get("id"),
                    "status": "ok",
                    "as_of": _date(r.get("as_of")),
                    "tier": tier,
                    "segment": segment,
                    "scores": {},
                }
            )
        tiers = np.array([o["tier"] for o in out], dtype=object)
        for champ in self.of(entity):
            # each model's own population (the batch's rule: e.g. the top tier has no upgrade)
            keep = in_population(
                champ.spec.target.scored,
                tiers,
                lambda f: np.array([_number(r.get(f)) for r in records], dtype=float),
            )
            rows = np.flatnonzero(keep).tolist()
            if not rows:
                continue
            scored = score_records(champ, [records[i] for i in rows], self.catalogs[entity])
            probs = np.array([x["probability"] for x in scored])
            prefix = champ.spec.prefix
            pct, dec = _ranks(probs, self.store.distribution(prefix))
            found = self.playbook.list_for(champ.name)
            lst = found[1] if found else None
            for j, i in enumerate(rows):
                action = (
                    lst.action_for(out[i]["segment"] or "", out[i]["tier"] or "") if lst else None
                )
                out[i]["scores"][prefix] = {
                    "probability": scored[j]["probability"],
                    "percentile": pct[j],
                    "decile": dec[j],
                    "reasons": scored[j]["reasons"],
                    "suggested_action": action,
                    "model": scored[j]["model"],
                    "model_version": scored[j]["model_version"],
                    "run_id": scored[j]["run_id"],
                }
            chosen = [records[i] for i in rows]  # an absent feature is missing, as in the core
            for uc in champ.uplifts:
                self._add_action(uc, entity, chosen, rows, probs, out)
        for o in out:
            o["next_best_action"] = next_best_action(o.get("actions", {}))
        return out

    @staticmethod
    def _add_action(uc, entity: str, records: list[dict], rows, probs, out) -> None:
        """What the uplift model's action would change for each row (`actions`)."""
        log_assets = None
        if uc.spec.uplift.at_stake == "assets":
            asset = ASSET_FEATURE[entity]
            log_assets = np.array([_number(r.get(asset), np.nan) for r in records], dtype=float)
        cols = effect_arrays(uc, uc.model.effect_of_records(records), log_assets)
        p = uc.prefix
        noun = "card" if entity == "card" else "customer"
        said = effect_sentences(uc.spec, noun, probs, cols[f"{p}_effect"], cols[f"{p}_at_stake"])
        for j, i in enumerate(rows):
            out[i].setdefault("actions", {})[p] = {
                "list": uc.spec.uplift.list,
                "action": uc.spec.uplift.action,
                "effect": float(cols[f"{p}_effect"][j]),
                "at_stake": float(cols[f"{p}_at_stake"][j]),
                "expected_value": float(cols[f"{p}_value"][j]),
                "expected_effect": said[j],
                "model": uc.spec.registered_name,
                "model_version": uc.version,
            }


def next_best_action(actions: dict[str, dict]) -> dict | None:
    """The action worth most to this customer (expected value: what it changes in the aimed
    direction times what is at stake), if any is worth anything; None: no call helps."""
    best = max(actions.values(), key=lambda a: a["expected_value"], default=None)
    if best is None or not best["expected_value"] > 0:
        return None
    keys = ("list", "action", "expected_effect", "expected_value", "effect", "at_stake")
    return {k: best[k] for k in keys}


def _ranks(probs: np.ndarray, dist: np.ndarray | None) -> tuple[list, list]:
    """Percentile and decile of each probability in the batch month's distribution: the same
    PERCENT_RANK the batch computed (a stored customer gets the batch's own figures)."""
    if dist is None or len(dist) == 0:
        return [None] * len(probs), [None] * len(probs)
    below = np.searchsorted(dist, probs, side="left").astype(float)
    pct, dec = percentile_arrays(below, len(dist))
    return [float(x) for x in pct], [int(x) for x in dec]


def _number(v, missing: float = 0.0) -> float:
    """A product flag as sent or stored (1, 0, true, false, null) as a number; unknown:
    `missing`."""
    try:
        return float(v) if v is not None else missing
    except (TypeError, ValueError):
        return missing


def _date(v) -> str | None:
    if v is None or v == "":
        return None
    try:
        stamp = pd.Timestamp(v)
    except (ValueError, TypeError, OverflowError):
        return None  # the CRM's own label, not a date: not echoed (it may be anything)
    return None if pd.isna(stamp) else stamp.strftime("%Y-%m-%d")


FLOAT32_MAX = 3.4028234663852886e38  # a float32 feature holds nothing larger
MAX_ID = 2**63 - 1


def whole(v: Any) -> Any:
    """JSON does not tell 7 from 7.0 (nor does the schema's `integer`): a number with no
    fraction, exact as a float, is that integer. Strings, booleans, fractions stay refused."""
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53:
        return int(v)
    return v


def payload_model(
    entity: str,
    features: list[str],
    catalog: dict[str, FeatureSpec],
    champions: dict[str, Champion],
) -> type[BaseModel]:
    """One field per feature, each required and nullable (null: unknown): numbers finite and
    within their type's range, categories one of the levels the models were trained on.
    Strict: no strings for numbers, no booleans, no unknown fields."""
    levels: dict[str, list[str]] = {}
    for c in champions.values():
        levels.update(c.model.categories)
    fields: dict[str, Any] = {
        "id": (
            Annotated[int, Strict(), Ge(0), Le(MAX_ID), BeforeValidator(whole)] | None,
            Field(default=None, description=f"your {ENTITY_KEYS[entity]}, echoed back"),
        ),
        "as_of": (str | None, Field(default=None, description="when the features were taken")),
    }
    for name in features:
        spec = catalog[name]
        if spec.dtype == "category" and name in levels:
            kind = Literal[tuple(levels[name])] | None  # type: ignore[valid-type]
        elif spec.dtype == "float32":
            kind = Annotated[float, Ge(-FLOAT32_MAX), Le(FLOAT32_MAX)] | None
        else:
            kind = float | None
        fields[name] = (kind, Field(..., description=spec.description))
    return create_model(
        f"{entity.capitalize()}Features",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False, strict=True),
        **fields,
    )
