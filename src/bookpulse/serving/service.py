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
import time
from datetime import UTC, datetime

import bentoml

from bookpulse.adapters.store import MonthGone
from bookpulse.config import get_settings
from bookpulse.serving.api import Scorer
from bookpulse.serving.http import CONTRACT, Api, Keys, Refused, request_id

logger = logging.getLogger("bookpulse.serving")


def build_scorer(store=None) -> Scorer:
    """The live month of the online store, pinned (read as published, whatever comes after),
    and the models that scored it (the versions it records; the champions for a month
    published before versions were recorded), with the playbook and the catalog."""
    from bookpulse.adapters import tracking
    from bookpulse.adapters.champions import available_champions
    from bookpulse.adapters.store import open_store
    from bookpulse.specs import load_feature_catalog, load_model_specs, load_playbook

    s = get_settings()
    tracking.configure(s.home)
    store = store or open_store(s.home, s.online_store)
    view = store.pinned()
    versions = view.models if view is not None and view.models else None
    specs = list(load_model_specs().values())
    champions, missing = available_champions(specs, threads=1, versions=versions)
    for why in missing.values():
        logger.warning("not served: %s", why)
    catalog = load_feature_catalog()
    scorer = Scorer(
        champions=champions,
        store=view if view is not None else store,
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


RECHECK_SECONDS = 1.0  # how often a worker looks for a newly published month
RETRY_SECONDS = 60.0  # after a month's models failed to load, when to try again


class Backend:
    """What the /v1 routes ask of the service. It serves one published month with the models
    that scored it: when the batch publishes another (each worker looks at most once a
    second), the new month and its models are loaded beside the old, then swapped in whole;
    meanwhile the old month is still answered from its own copy (SQLite keeps the replaced
    file readable), or, where the store has dropped it (Redis), calls get 503 for the few
    seconds the swap takes. A month whose models fail to load is not put in service."""

    def __init__(self, scorer: Scorer, store, live: str | None) -> None:
        self.store = store
        self.scorer = scorer
        self.live = live  # the publication the scorer's month was, read before it was pinned
        self.loaded_at = _now()
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._failed: tuple[str | None, float] | None = None
        self._swapping = False

    def current(self) -> Scorer:
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            live = self.store.live_id()
            if live != self.live and not self._swapping and not self._gave_up(live, now):
                self._swapping = True
                threading.Thread(target=self._swap, name="take-up-month", daemon=True).start()
        return self.scorer

    def _gave_up(self, live, now: float) -> bool:
        return (
            self._failed is not None
            and self._failed[0] == live
            and (now - self._failed[1] < RETRY_SECONDS)
        )

    def _swap(self) -> dict:
        with self._lock:
            try:
                return self._take_up()
            finally:
                self._swapping = False

    def _take_up(self) -> dict:
        before = self.scorer
        live = self.store.live_id()
        try:
            fresh = build_scorer(self.store)
        except Exception as exc:  # keep serving what works
            self._failed = (live, time.monotonic())
            logger.error("month not taken up: %s", type(exc).__name__)
            return {
                "reloaded": False,
                "month": before.store.as_of(),
                "models": before.versions(),
                "previous": before.versions(),
                "error": f"the published month's models failed to load or run "
                f"({type(exc).__name__}); still serving the month and versions listed",
            }
        self.scorer, self.live, self.loaded_at = fresh, live, _now()
        self._failed = None
        return {
            "reloaded": True,
            "month": fresh.store.as_of(),
            "models": fresh.versions(),
            "previous": before.versions(),
            "error": None,
        }

    def served(self) -> dict:
        sc = self.current()
        return {
            "month": sc.store.as_of(),
            "models": sc.versions(),
            "loaded_at": self.loaded_at,
            "contract": CONTRACT,
        }

    def payload_model(self, entity: str):
        return self.current().payload_model(entity)

    def score_ids(self, entity: str, ids: list[int]):
        sc = self.current()
        try:
            return sc.store.as_of(), sc.versions(), sc.score_ids(entity, ids)
        except MonthGone:
            self._checked = 0.0  # look again on the next call
            raise Refused(
                503,
                "Service Unavailable",
                "a new month has just been published and is being taken up; retry shortly",
                headers=[(b"retry-after", b"5")],
            ) from None

    def score_rows(self, entity: str, rows: list[dict]):
        sc = self.current()
        return sc.store.as_of(), sc.versions(), sc.score_rows(entity, rows)

    def reload(self) -> dict:
        """Take up the latest published month and the models that scored it, now (each
        worker also does so by itself within a second of a publication)."""
        if self.store.live_id() == self.live:
            sc = self.scorer
            return {
                "reloaded": False,
                "month": sc.store.as_of(),
                "models": sc.versions(),
                "previous": sc.versions(),
                "error": None,
            }
        self._swapping = True
        return self._swap()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_backend: Backend | None = None  # the worker's, set when BentoML starts the service
# worker processes: one a core (each holds the models, ~0.5 GiB; limits are per worker)
WORKERS = int(os.environ.get("BOOKPULSE_API_WORKERS", "2"))


class Front:
    """ASGI middleware: /v1 and /docs.json go to the contract (`serving.http.Api`), the rest
    (health, readiness, metrics) to BentoML."""

    def __init__(self, app) -> None:
        self.app = app
        self.api: Api | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not _is_ours(scope["path"]):  # BentoML's own routes get a request id too
            rid = request_id(scope).encode()

            async def with_id(message) -> None:
                if message["type"] == "http.response.start":
                    headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                    message = {**message, "headers": [*headers, (b"x-request-id", rid)]}
                await send(message)

            return await self.app(scope, receive, with_id)
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


# BentoML's access log line and tracing span per request cost about a third of a call's CPU
# at 1,000 calls/s: off for /v1 unless asked for (the gateway in front keeps access logs;
# client errors are logged here with their request ids)
_ACCESS_LOG = os.environ.get("BOOKPULSE_API_ACCESS_LOG", "") in ("1", "true")
_TRACING = os.environ.get("BOOKPULSE_API_TRACING", "") in ("1", "true")


@bentoml.service(
    name="bookpulse",
    workers=WORKERS,
    http={"port": 3000},
    traffic={"timeout": 60},
    logging={"access": {"enabled": _ACCESS_LOG}},
    tracing={} if _TRACING else {"excluded_urls": ["/v1/", "/docs.json"]},
)
class Scoring:
    def __init__(self) -> None:
        global _backend
        from bookpulse.adapters.store import open_store

        s = get_settings()
        store = open_store(s.home, s.online_store)
        live = store.live_id()
        self.backend = _backend = Backend(build_scorer(store), store, live)
        # Everything loaded so far (MLflow, pandas, LightGBM, the models) lives as long as the
        # process: move it out of the collector's way, so a full collection does not pause
        # requests for the whole heap's walk.
        gc.collect()
        gc.freeze()
        # a request allocates a few thousand objects: collect the young generation every
        # 50,000 allocations instead of 700 (fewer pauses; the old generations as before)
        gc.set_threshold(50_000, 20, 100)

    def __is_ready__(self) -> bool:
        return self.backend.scorer.store.as_of() is not None


Scoring.add_asgi_middleware(Front)
