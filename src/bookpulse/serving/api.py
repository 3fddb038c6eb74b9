"""What the API answers, independent of the web framework: score records for ids found in the
online store, or for feature payloads the CRM sends. Both go through the batch's scoring core,
so a customer scored by id with the same champion gets the batch's numbers exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

from bookpulse.scoring.batch import PREFIX
from bookpulse.scoring.core import REASONS, Champion, percentile_and_decile, score_frame
from bookpulse.specs import FeatureSpec, Playbook

ENTITY_MODELS = {"customer": ("churn", "tier_upgrade"), "card": ("card_activation",)}
LIST_FOR = {"churn": "retention", "tier_upgrade": "upgrade", "card_activation": "activation"}
KEY = {"customer": "customer_id", "card": "card_id"}


@dataclass
class Scorer:
    """The champions, the online store, the playbook and the catalog: everything a response
    needs. Built once at start-up (and again on reload)."""

    champions: dict[str, Champion]
    store: Any  # serving.store.OnlineStore
    playbook: Playbook
    catalogs: dict[str, dict[str, FeatureSpec]]
    _payload_models: dict[str, type[BaseModel]] = field(default_factory=dict)

    def versions(self) -> dict[str, str]:
        return {c.spec.registered_name: c.version for c in self.champions.values()}

    def features(self, entity: str) -> list[str]:
        """Every feature the entity's champions use, in a fixed order."""
        names = {
            f
            for m in ENTITY_MODELS[entity]
            if m in self.champions
            for f in self.champions[m].model.features
        }
        return sorted(names)

    # --- by id ------------------------------------------------------------------------
    def score_ids(self, entity: str, ids: list[int]) -> list[dict]:
        """One result per id, in the order asked; unknown ids get status not_found."""
        docs = self.store.get(entity, list(dict.fromkeys(ids)))
        found = [i for i in ids if i in docs]
        results = {}
        if found:
            frame = pd.DataFrame([{KEY[entity]: i, **docs[i]} for i in dict.fromkeys(found)])
            for i, record in zip(frame[KEY[entity]], self._score(entity, frame), strict=True):
                results[int(i)] = record
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

    def score_rows(self, entity: str, rows: list[dict]) -> list[dict]:
        frame = pd.DataFrame(rows, columns=["id", "as_of", *self.features(entity)])
        frame[KEY[entity]] = frame["id"]
        for name in self.features(entity):
            if self.catalogs[entity][name].dtype != "category":
                frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        return self._score(entity, frame)

    # --- shared -----------------------------------------------------------------------
    def _score(self, entity: str, frame: pd.DataFrame) -> list[dict]:
        if "as_of" not in frame or frame["as_of"].isna().all():
            frame = frame.assign(as_of=None)
        frame = frame.assign(as_of=pd.to_datetime(frame["as_of"], errors="coerce"))
        for name in self.features(entity):
            if name not in frame:
                frame[name] = np.nan
        out = [
            {
                "id": _plain(frame[KEY[entity]].iloc[i]),
                "status": "ok",
                "as_of": _date(frame["as_of"].iloc[i]),
                "tier": _text(frame, "tier" if entity == "customer" else "holder_tier", i),
                "segment": _text(frame, "segment" if entity == "customer" else "holder_segment", i),
                "scores": {},
            }
            for i in range(len(frame))
        ]
        for name in ENTITY_MODELS[entity]:
            champ = self.champions.get(name)
            if champ is None:
                continue
            eligible = np.ones(len(frame), dtype=bool)
            if name == "tier_upgrade":  # the top tier has nowhere to go
                eligible = (frame["tier"].astype("string") != "private").fillna(True).to_numpy()
            rows = np.flatnonzero(eligible)
            if rows.size == 0:
                continue
            scored = score_frame(champ, frame.iloc[rows], self.catalogs[entity])
            probs = scored["probability"].to_numpy()
            dist = self.store.distribution(PREFIX[name])
            ranks = _ranks(probs, dist)
            lst = self.playbook.lists.get(LIST_FOR[name])
            for j, r in enumerate(rows):
                rec = scored.iloc[j]
                seg = out[r]["segment"] or ""
                tier = out[r]["tier"] or ""
                out[r]["scores"][PREFIX[name]] = {
                    "probability": float(rec["probability"]),
                    "percentile": ranks[0][j],
                    "decile": ranks[1][j],
                    "reasons": [
                        {
                            "feature": rec[f"reason{k}_feature"],
                            "direction": rec[f"reason{k}_direction"],
                            "contribution": float(rec[f"reason{k}_contribution"]),
                            "sentence": rec[f"reason{k}_sentence"],
                        }
                        for k in range(1, REASONS + 1)
                    ],
                    "suggested_action": lst.action_for(seg, tier) if lst else None,
                    "model": champ.spec.registered_name,
                    "model_version": champ.version,
                    "run_id": champ.run_id,
                }
        return out


def _ranks(probs: np.ndarray, dist: np.ndarray | None) -> tuple[list, list]:
    """Percentile and decile of each probability in the batch month's distribution: the same
    PERCENT_RANK the batch computed (a stored customer gets the batch's own figures)."""
    if dist is None or len(dist) == 0:
        return [None] * len(probs), [None] * len(probs)
    below = np.searchsorted(dist, probs, side="left").astype(float)
    r = percentile_and_decile(below, len(dist))
    return [float(x) for x in r["percentile"]], [int(x) for x in r["decile"]]


def _plain(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return None if math.isnan(v) else float(v)
    return v


def _date(v) -> str | None:
    return None if v is None or pd.isna(v) else pd.Timestamp(v).strftime("%Y-%m-%d")


def _text(frame: pd.DataFrame, col: str, i: int) -> str | None:
    if col not in frame:
        return None
    v = frame[col].iloc[i]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def payload_model(
    entity: str,
    features: list[str],
    catalog: dict[str, FeatureSpec],
    champions: dict[str, Champion],
) -> type[BaseModel]:
    levels: dict[str, list[str]] = {}
    for c in champions.values():
        levels.update(c.model.categories)
    fields: dict[str, Any] = {
        "id": (int | None, Field(default=None, description=f"your {KEY[entity]}, echoed back")),
        "as_of": (str | None, Field(default=None, description="when the features were taken")),
    }
    for name in features:
        spec = catalog[name]
        if spec.dtype == "category" and name in levels:
            kind = Literal[tuple(levels[name])] | None  # type: ignore[valid-type]
        else:
            kind = float | None
        fields[name] = (kind, Field(..., description=spec.description))
    return create_model(
        f"{entity.capitalize()}Features",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        **fields,
    )
