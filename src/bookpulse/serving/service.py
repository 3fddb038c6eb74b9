"""The real-time scoring API for the CRM (BentoML).

    bentoml serve bookpulse.serving.service:Scoring        (or `bookpulse serve`, `make serve`)

Routes (all POST, JSON; every /v1 route needs the header X-API-Key):
    /v1/customers/score           {"customer_ids": [...]}   1 to 1,000 ids from the online store
    /v1/cards/score               {"card_ids": [...]}       likewise, for new unused cards
    /v1/customers/score-features  {"customers": [{...}]}    features the CRM holds (fresher)
    /v1/cards/score-features      {"cards": [{...}]}
    /v1/admin/reload              {}                        admin key: load the champions again
BentoML adds /healthz, /livez, /readyz and /metrics.

Each result carries the probabilities, percentile and decile in the batch month, tier, top-3
reasons, the playbook's suggested action, the model versions and the features' as_of. An id
not in the store gets status "not_found" in its own entry. Settings come from BOOKPULSE_*
variables (bookpulse.config): home, online store URL, API keys (or a key file).
"""

from __future__ import annotations

import gc
import hmac
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BadInput
from pydantic import Field, ValidationError

from bookpulse.config import get_settings
from bookpulse.serving.api import Scorer

logger = logging.getLogger("bookpulse.serving")
MAX_IDS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
KEY_HEADER = b"x-api-key"


def _keys(inline: str | None, file: Path | None) -> list[bytes]:
    keys = [k.strip() for k in (inline or "").split(",") if k.strip()]
    if file is not None and Path(file).is_file():
        keys += [k.strip() for k in Path(file).read_text().splitlines() if k.strip()]
    return [k.encode() for k in keys]


def _allowed(given: bytes | None, keys: list[bytes]) -> bool:
    """Constant-time comparison against every key (no early exit on the first match)."""
    ok = False
    for k in keys:
        ok |= given is not None and hmac.compare_digest(given, k)
    return ok


class Guard:
    """ASGI middleware: API key on /v1 routes (admin key on /v1/admin), and a body limit.
    Answers 401 / 413 itself, with no customer data in the reply."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body
        s = get_settings()
        self.keys = _keys(s.api_keys, s.api_keys_file)
        self.admin = _keys(s.admin_keys, s.admin_keys_file)
        if not self.keys:
            logger.warning("no API keys configured (BOOKPULSE_API_KEYS): every /v1 call gets 401")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        keys = self.admin if scope["path"].startswith("/v1/admin/") else self.keys
        if not _allowed(headers.get(KEY_HEADER), keys):
            return await _reply(send, 401, b'{"error":"missing or invalid API key (X-API-Key)"}')
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _reply(send, 413, b'{"error":"request body too large"}')
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BadInput("request body too large")
            return message

        return await self.app(scope, limited, send)


async def _reply(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _NoInputsInLogs(logging.Filter):
    """BentoML logs a failed request's exception; a pydantic error would quote the input
    (customer data). Keep the locations and error types, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadInput):  # our own message: field names only, no traceback
            record.msg = f"{record.getMessage()}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        elif isinstance(exc, ValidationError):
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            record.msg = f"{record.getMessage()}: invalid fields {fields} (values withheld)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


for _name in ("bentoml", "bentoml._internal.server.http_app", "bentoml.access"):
    logging.getLogger(_name).addFilter(_NoInputsInLogs())


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


def _ids(value: list[int]) -> list[int]:
    bad = [i for i, v in enumerate(value) if v < 0]
    if bad:
        raise BadInput(f"ids must be positive integers (positions {bad[:10]})")
    return value


IdList = Annotated[list[int], Field(min_length=1, max_length=MAX_IDS)]
Rows = Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_IDS)]


@bentoml.service(
    name="bookpulse",
    traffic={"timeout": 30, "max_concurrency": 64},
    workers=1,
    http={"port": 3000},
)
class Scoring:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scorer = build_scorer()
        # Everything loaded so far (MLflow, pandas, LightGBM, the models) lives as long as the
        # process: move it out of the collector's way, so a full collection does not pause
        # requests for the whole heap's walk.
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.scorer.store.as_of() is not None

    def _validated(self, entity: str, rows: list[dict]) -> list[dict]:
        model = self.scorer.payload_model(entity)
        out = []
        for i, row in enumerate(rows):
            try:
                out.append(model.model_validate(row).model_dump())
            except ValidationError as exc:
                where = "; ".join(
                    f"{entity}s[{i}].{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_input=False)[:20]
                )
                raise BadInput(f"invalid request: {where}") from None
        return out

    def _response(self, results: list[dict]) -> dict:
        return {
            "as_of": self.scorer.store.as_of(),
            "models": self.scorer.versions(),
            "results": results,
        }

    # Plain (sync) routes: BentoML runs them on its thread pool, off the event loop, so a
    # campaign screen of 1,000 ids does not hold up the CRM's single-customer pages. (Scoring
    # inline on the loop, or through anyio threads, measured worse under load.)
    @bentoml.api(route="/v1/customers/score")
    def score_customers(self, customer_ids: IdList) -> dict:
        """Scores, reasons and actions for customers in the online store, by id."""
        return self._response(self.scorer.score_ids("customer", _ids(customer_ids)))

    @bentoml.api(route="/v1/cards/score")
    def score_cards(self, card_ids: IdList) -> dict:
        """Activation score, reasons and action for new unused cards, by id."""
        return self._response(self.scorer.score_ids("card", _ids(card_ids)))

    @bentoml.api(route="/v1/customers/score-features")
    def score_customer_features(self, customers: Rows) -> dict:
        """Scores for feature vectors the CRM sends, every feature named (null if unknown)."""
        rows = self._validated("customer", customers)
        return self._response(self.scorer.score_rows("customer", rows))

    @bentoml.api(route="/v1/cards/score-features")
    def score_card_features(self, cards: Rows) -> dict:
        rows = self._validated("card", cards)
        return self._response(self.scorer.score_rows("card", rows))

    @bentoml.api(route="/v1/admin/reload")
    def reload(self) -> dict:
        """Load the champions again; a model that fails to load or run is not put in service."""
        with self._lock:
            before = self.scorer.versions()
            try:
                fresh = build_scorer()
            except Exception as exc:  # keep serving what works
                logger.error("reload refused: %s", type(exc).__name__)
                return {
                    "reloaded": False,
                    "models": before,
                    "error": f"the new models failed to load or run ({type(exc).__name__}); "
                    "still serving the versions listed",
                }
            self.scorer = fresh
            return {"reloaded": True, "models": fresh.versions(), "previous": before}


Scoring.add_asgi_middleware(Guard)
