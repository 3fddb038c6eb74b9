"""The real-time scoring API for the CRM (BentoML).

    bentoml serve bookpulse.serving.service:Scoring        (or `bookpulse serve`, `make serve`)

BentoML runs the worker and answers /healthz, /livez, /readyz and /metrics; the /v1 contract
(routes, models, errors, keys, limits, request ids) is `serving.http.Api`, put in front of
BentoML's own routes by an ASGI middleware, with its OpenAPI at /docs.json:
    POST /v1/customers/score           {"customer_ids": [...]}   1 to 1,000 ids
    POST /v1/cards/score               {"card_ids": [...]}
    POST /v1/customers/score-features  {"customers": [{...}]}    features the CRM holds
    POST /v1/cards/score-features      {"cards": [{...}]}
    GET  /v1/served                                              month and versions served
    POST /v1/admin/reload              {}                        admin key
Settings come from BOOKPULSE_* variables (bookpulse.config): home, online store URL, API keys
(or key files), limits (serving.http.Limits).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from datetime import UTC, datetime

import bentoml

from bookpulse.config import get_settings
from bookpulse.serving.api import Scorer
from bookpulse.serving.http import CONTRACT, Api, Keys

logger = logging.getLogger("bookpulse.serving")


def build_scorer() -> Scorer:
    """Champions from the registry, the online store, the playbook and the catalog."""
    from bookpulse.adapters import tracking
    from bookpulse.adapters.champions import available_champions
    from bookpulse.adapters.store import open_store
    from bookpulse.specs import load_feature_catalog, load_model_specs, load_playbook

    s = get_settings()
    tracking.configure(s.home)
    champions, missing = available_champions(list(load_model_specs().values()), threads=1)
    for why in missing.values():
        logger.warning("not served: %s", why)
    catalog = load_feature_catalog()
    scorer = Scorer(
        champions=champions,
        store=open_store(s.home, s.online_store),
        playbook=load_playbook(),
        catalogs={e: catalog.for_entity(e) for e in ("customer", "card")},
    )
    smoke_test(scorer)
    return scorer


def smoke_test(scorer: Scorer) -> None:
    """Score one all-missing row per entity: compiles the tree walk and proves the models
    load and run before they are put in service."""
    for entity in ("customer", "card"):
        scorer.score_rows(entity, [{"id": 0}])


class Backend:
    """What the /v1 routes ask of the service: one Scorer at a time, swapped whole on
    reload (a call in progress finishes with the one it started with)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.loaded_at = _now()
        self._lock = threading.Lock()

    def served(self) -> dict:
        sc = self.scorer
        return {
            "month": sc.store.as_of(),
            "models": sc.versions(),
            "loaded_at": self.loaded_at,
            "contract": CONTRACT,
        }

    def payload_model(self, entity: str):
        return self.scorer.payload_model(entity)

    def score_ids(self, entity: str, ids: list[int]):
        sc = self.scorer
        return sc.store.as_of(), sc.versions(), sc.score_ids(entity, ids)

    def score_rows(self, entity: str, rows: list[dict]):
        sc = self.scorer
        return sc.store.as_of(), sc.versions(), sc.score_rows(entity, rows)

    def reload(self) -> dict:
        """Load the champions again; a model that fails to load or run is not put in service."""
        with self._lock:
            before = self.scorer
            try:
                fresh = build_scorer()
            except Exception as exc:  # keep serving what works
                logger.error("reload refused: %s", type(exc).__name__)
                return {
                    "reloaded": False,
                    "month": before.store.as_of(),
                    "models": before.versions(),
                    "previous": before.versions(),
                    "error": f"the new models failed to load or run ({type(exc).__name__}); "
                    "still serving the versions listed",
                }
            self.scorer, self.loaded_at = fresh, _now()
            return {
                "reloaded": True,
                "month": fresh.store.as_of(),
                "models": fresh.versions(),
                "previous": before.versions(),
                "error": None,
            }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_backend: Backend | None = None  # the worker's, set when BentoML starts the service
# worker processes: one a core (each holds the models, ~0.3 GiB; limits are per worker)
WORKERS = int(os.environ.get("BOOKPULSE_API_WORKERS", "2"))


class Front:
    """ASGI middleware: /v1 and /docs.json go to the contract (`serving.http.Api`), the rest
    (health, readiness, metrics) to BentoML."""

    def __init__(self, app) -> None:
        self.app = app
        self.api: Api | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not _is_ours(scope["path"]):
            return await self.app(scope, receive, send)
        if self.api is None:
            if _backend is None:  # BentoML starts the service before it takes requests
                return await self.app(scope, receive, send)
            s = get_settings()
            self.api = Api(
                _backend,
                Keys(s.api_keys, s.api_keys_file),
                Keys(s.admin_keys, s.admin_keys_file),
            )
            if not self.api.keys.all:
                logger.warning("no API keys configured (BOOKPULSE_API_KEYS): every call gets 401")
        await self.api(scope, receive, send)


def _is_ours(path: str) -> bool:
    return path.startswith("/v1/") or path in ("/v1", "/docs.json")


@bentoml.service(name="bookpulse", workers=WORKERS, http={"port": 3000}, traffic={"timeout": 60})
class Scoring:
    def __init__(self) -> None:
        global _backend
        self.backend = _backend = Backend(build_scorer())
        # Everything loaded so far (MLflow, pandas, LightGBM, the models) lives as long as the
        # process: move it out of the collector's way, so a full collection does not pause
        # requests for the whole heap's walk.
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.backend.scorer.store.as_of() is not None


Scoring.add_asgi_middleware(Front)
