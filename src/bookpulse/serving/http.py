"""The CRM's HTTP contract under /v1, as one ASGI app (the BentoML service puts it in front of
its own routes): typed requests and replies, one error shape, keys, limits, request ids.

Every reply carries `X-Request-ID` (the caller's, when it sends a sane one). Every error is
RFC 9457 `application/problem+json`: {type, title, status, detail, request_id, errors: [{field,
problem}]}; field names only, never the values sent. Client errors are logged at INFO, server
errors at ERROR, with the request id and the route, never a body.

Overload is refused fast, never queued into a timeout:
- per key, a token bucket (`rate` requests a second, bursts of `burst`): 429 + Retry-After;
- the whole worker, a budget of ids in flight (a 1,000-id call costs 1,000): 503 +
  Retry-After. Calls of a few ids are scored on the event loop; larger ones on one worker
  thread, so a campaign screen of 1,000 ids never holds up the single-customer pages for long.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError

import bookpulse
from bookpulse.serving.api import MAX_ID, whole

logger = logging.getLogger("bookpulse.serving")

CONTRACT = "1.0"  # the /v1 contract's version (the package's is in info.x-bookpulse-version)
MAX_IDS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
INLINE_IDS = 16  # calls up to this many ids are scored on the event loop
KEY_HEADER = b"x-api-key"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
KEYS_RECHECK_SECONDS = 1.0
PROBLEM = "application/problem+json"
JSON = "application/json"


# --- the contract's models ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


CustomerId = Annotated[
    int, Strict(), Ge(1), Le(MAX_ID), BeforeValidator(whole), Field(description="a customer id")
]
CardId = Annotated[
    int, Strict(), Ge(1), Le(MAX_ID), BeforeValidator(whole), Field(description="a card id")
]


class CustomerIds(_Strict):
    customer_ids: list[CustomerId] = Field(min_length=1, max_length=MAX_IDS)


class CardIds(_Strict):
    card_ids: list[CardId] = Field(min_length=1, max_length=MAX_IDS)


class FieldProblem(BaseModel):
    field: str = Field(description="where in the body, e.g. customer_ids[3]")
    problem: str = Field(description="what is wrong with it (the value is never echoed)")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    request_id: str
    errors: list[FieldProblem] = Field(default_factory=list)


class Reason(BaseModel):
    feature: str
    direction: Literal["raises", "lowers"]
    contribution: float = Field(description="log-odds the feature adds to the score")
    sentence: str


class Score(BaseModel):
    probability: float = Field(ge=0, le=1)
    percentile: float | None = Field(description="in the month's book, 0-100 (null: no ranks)")
    decile: int | None = Field(description="1 = the highest tenth of the month's book")
    reasons: list[Reason]
    suggested_action: str | None
    model: str
    model_version: str
    run_id: str


class Action(BaseModel):
    list: str
    action: str
    effect: float = Field(description="change in the outcome's probability from the action")
    at_stake: float = Field(description="what the outcome is worth, CNY")
    expected_value: float = Field(description="effect in the aimed direction x at_stake, CNY")
    expected_effect: str
    model: str
    model_version: str


class NextBestAction(BaseModel):
    list: str
    action: str
    expected_effect: str
    expected_value: float
    effect: float
    at_stake: float


class Result(BaseModel):
    id: int | None
    status: Literal["ok", "not_found"]
    as_of: str | None = Field(default=None, description="the date of the features scored")
    tier: str | None = None
    segment: str | None = None
    scores: dict[str, Score] = Field(default_factory=dict, description="by model prefix")
    actions: dict[str, Action] = Field(default_factory=dict, description="by action prefix")
    next_best_action: NextBestAction | None = None


class Reply(BaseModel):
    request_id: str
    month: str | None = Field(description="the published month the scores are ranked in")
    models: dict[str, str] = Field(description="registered model -> version that scored")
    results: list[Result]


class Served(BaseModel):
    month: str | None
    models: dict[str, str]
    loaded_at: str
    contract: str


class Reloaded(BaseModel):
    reloaded: bool
    month: str | None
    models: dict[str, str]
    previous: dict[str, str]
    error: str | None = None


# --- keys, rates, admission -------------------------------------------------------------------


class Keys:
    """API keys from a comma-separated setting and/or a file of one key per line. The file is
    looked at again (at most once a second) and re-read when it changes, so a rotation is:
    add the new key, move callers over, remove the old one (both valid meanwhile)."""

    def __init__(self, inline: str | None, file: Path | None) -> None:
        self.inline = [k.strip().encode() for k in (inline or "").split(",") if k.strip()]
        self.file = Path(file) if file else None
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._from_file: list[bytes] = []
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.file is None or (not force and now - self._checked < KEYS_RECHECK_SECONDS):
            return
        self._checked = now
        try:
            st = self.file.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                lines = self.file.read_text().splitlines() if stamp else []
            except OSError:
                lines = []
            self._from_file = [k.strip().encode() for k in lines if k.strip()]

    @property
    def all(self) -> list[bytes]:
        self._refresh()
        return self.inline + self._from_file

    def allows(self, given: bytes | None) -> bool:
        """Constant-time comparison against every key (no early exit on the first match)."""
        import hmac

        ok = False
        for k in self.all:
            ok |= given is not None and hmac.compare_digest(given, k)
        return ok


@dataclass
class TokenBucket:
    rate: float  # tokens a second
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: dict[bytes, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: bytes) -> float:
        """0 when `key` may call now (a token is taken); else the seconds until it may."""
        now = self.clock()
        tokens, last = self._tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._tokens[key] = (tokens - 1, now)
            return 0.0
        self._tokens[key] = (tokens, now)
        return (1 - tokens) / self.rate


@dataclass
class Admission:
    """A budget of ids in flight in this worker; a call that would overrun it is refused."""

    capacity: int
    in_flight: int = 0

    def enter(self, cost: int) -> bool:
        if self.in_flight > 0 and self.in_flight + cost > self.capacity:
            return False
        self.in_flight += cost
        return True

    def leave(self, cost: int) -> None:
        self.in_flight -= cost


@dataclass(frozen=True)
class Limits:
    rate_per_key: float = 2000.0  # requests a second per API key
    burst_per_key: float = 4000.0
    ids_in_flight: int = 4000  # about 3 s of work on one core
    max_body: int = MAX_BODY_BYTES

    @classmethod
    def from_env(cls) -> Limits:
        def num(name: str, default: float) -> float:
            v = os.environ.get(name)
            return float(v) if v else default

        return cls(
            rate_per_key=num("BOOKPULSE_API_RATE", cls.rate_per_key),
            burst_per_key=num("BOOKPULSE_API_BURST", cls.burst_per_key),
            ids_in_flight=int(num("BOOKPULSE_API_IDS_IN_FLIGHT", cls.ids_in_flight)),
        )


# --- the app -------------------------------------------------------------------------------


class Refused(Exception):
    """A problem to answer with (status, title, detail, field problems, extra headers)."""

    def __init__(self, status, title, detail, errors=(), headers=()) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors, self.headers = list(errors), list(headers)


@dataclass(frozen=True)
class Route:
    method: str
    cost: Callable[[dict], int]  # ids (or rows) the call asks for
    admin: bool = False


def _ids_cost(key: str) -> Callable[[dict], int]:
    return lambda body: len(body.get(key) or []) if isinstance(body, dict) else 1


ROUTES: dict[str, Route] = {
    "/v1/customers/score": Route("POST", _ids_cost("customer_ids")),
    "/v1/cards/score": Route("POST", _ids_cost("card_ids")),
    "/v1/customers/score-features": Route("POST", _ids_cost("customers")),
    "/v1/cards/score-features": Route("POST", _ids_cost("cards")),
    "/v1/served": Route("GET", lambda body: 1),
    "/v1/admin/reload": Route("POST", lambda body: 1, admin=True),
}


class Api:
    """The /v1 routes and /docs.json. `backend` does the work (see serving.service):
    served() -> Served dict, payload_model(entity), score_ids(entity, ids),
    score_rows(entity, rows), reload() -> Reloaded dict; each score call returns
    (month, models, results) from one consistent month and set of models."""

    def __init__(self, backend, keys: Keys, admin: Keys, limits: Limits | None = None) -> None:
        self.backend = backend
        self.keys, self.admin = keys, admin
        self.limits = limits or Limits.from_env()
        self.buckets = TokenBucket(self.limits.rate_per_key, self.limits.burst_per_key)
        self.admission = Admission(self.limits.ids_in_flight)
        self.worker = anyio.CapacityLimiter(1)

    def handles(self, path: str) -> bool:
        return path.startswith("/v1/") or path == "/v1" or path == "/docs.json"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # run on its own (tests): nothing to start or stop
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        rid = request_id(scope)
        path, method = scope["path"], scope["method"]
        started = time.perf_counter()
        status = 500
        try:
            if path == "/docs.json" and method in ("GET", "HEAD"):
                status = 200
                return await _send(send, 200, JSON, self.openapi_bytes(), rid)
            route = ROUTES.get(path)
            if route is None:
                raise Refused(404, "Not Found", f"no route {path}; see /docs.json")
            if method != route.method:
                raise Refused(
                    405,
                    "Method Not Allowed",
                    f"{path} takes {route.method}",
                    headers=[(b"allow", route.method.encode())],
                )
            key = dict(scope.get("headers") or []).get(KEY_HEADER)
            if not (self.admin if route.admin else self.keys).allows(key):
                raise Refused(
                    401,
                    "Unauthorized",
                    "missing or invalid API key (header X-API-Key)",
                    headers=[(b"www-authenticate", b'ApiKey header="X-API-Key"')],
                )
            wait = self.buckets.take(key)
            if wait > 0:
                raise Refused(
                    429,
                    "Too Many Requests",
                    "this key's request rate is over its limit; retry after the given seconds",
                    headers=[(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                )
            body = await self._body(scope, receive) if method == "POST" else {}
            cost = max(1, route.cost(body))
            if not self.admission.enter(cost):
                raise Refused(
                    503,
                    "Service Unavailable",
                    "the service is at its capacity of ids in flight; retry shortly",
                    headers=[(b"retry-after", b"1")],
                )
            try:
                reply = await self._answer(path, body, rid, cost)
            finally:
                self.admission.leave(cost)
            status = 200
            await _send(send, 200, JSON, _dumps(reply), rid)
        except Refused as exc:
            status = exc.status
            await _problem(send, exc, rid)
        except Exception as exc:  # a bug: answered as a problem, logged without data
            status = 500
            logger.error("request %s %s failed: %s", rid, path, type(exc).__name__)
            await _problem(
                send, Refused(500, "Internal Server Error", "the request failed; quote its id"), rid
            )
        finally:
            took = (time.perf_counter() - started) * 1000
            if 400 <= status < 500:
                logger.info("request %s %s %s -> %d (%.1f ms)", rid, method, path, status, took)

    async def _body(self, scope, receive) -> Any:
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if kind not in (b"application/json", b""):
            raise Refused(415, "Unsupported Media Type", "send the body as application/json")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body):
            raise Refused(413, "Content Too Large", "the body is over 4 MiB")
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "Bad Request", "the client went away")
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limits.max_body:
                raise Refused(413, "Content Too Large", "the body is over 4 MiB")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise Refused(400, "Bad Request", "the body is not JSON") from None

    async def _answer(self, path: str, body: Any, rid: str, cost: int) -> dict:
        b = self.backend
        if path == "/v1/served":
            return b.served()
        if path == "/v1/admin/reload":
            _validate(_Strict, body)
            return await anyio.to_thread.run_sync(b.reload, limiter=self.worker)
        entity = "customer" if path.startswith("/v1/customers/") else "card"
        if path.endswith("/score"):
            model = CustomerIds if entity == "customer" else CardIds
            ids = getattr(_validate(model, body), f"{entity}_ids")
            work = lambda: b.score_ids(entity, ids)  # noqa: E731
        else:
            rows = _rows(b.payload_model(entity), body, f"{entity}s")
            work = lambda: b.score_rows(entity, rows)  # noqa: E731
        if cost <= INLINE_IDS:
            month, models, results = work()
        else:
            month, models, results = await anyio.to_thread.run_sync(work, limiter=self.worker)
        return {"request_id": rid, "month": month, "models": models, "results": results}

    def openapi_bytes(self) -> bytes:
        return _dumps(openapi(self.backend.payload_model))


def _validate(model: type[BaseModel], body: Any) -> BaseModel:
    if not isinstance(body, dict):
        raise Refused(422, "Unprocessable Content", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _rows(payload: type[BaseModel], body: Any, key: str) -> list[dict]:
    if not isinstance(body, dict):
        raise Refused(422, "Unprocessable Content", "the body must be a JSON object")
    extra = sorted(set(body) - {key})
    rows = body.get(key)
    problems = [FieldProblem(field=k, problem="unknown field") for k in extra]
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_IDS:
        problems.append(FieldProblem(field=key, problem=f"a list of 1 to {MAX_IDS} objects"))
    if problems:
        raise Refused(422, "Unprocessable Content", "the body does not match", problems)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(payload.model_validate(row).model_dump())
        except ValidationError as exc:
            raise _invalid(exc, f"{key}[{i}]") from None
    return out


def _invalid(exc: ValidationError, prefix: str = "") -> Refused:
    problems = []
    for e in exc.errors(include_input=False, include_url=False)[:200]:
        where = prefix
        for part in e["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
        problems.append(FieldProblem(field=where or "body", problem=e["msg"]))
    return Refused(422, "Unprocessable Content", "the body does not match the schema", problems)


def request_id(scope) -> str:
    """The caller's X-Request-ID when it is a sane one, else a new id."""
    given = dict(scope.get("headers") or []).get(b"x-request-id")
    if given:
        text = given.decode("latin-1")
        if REQUEST_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


async def _send(send, status: int, kind: str, body: bytes, rid: str, extra=()) -> None:
    headers = [
        (b"content-type", kind.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _problem(send, exc: Refused, rid: str) -> None:
    body = Problem(
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        request_id=rid,
        errors=exc.errors,
    ).model_dump()
    await _send(send, exc.status, PROBLEM, _dumps(body), rid, exc.headers)


# --- OpenAPI ---------------------------------------------------------------------------------

ERRORS = {
    "400": "The body is not JSON.",
    "401": "Missing or invalid API key.",
    "404": "No such route.",
    "405": "The route does not take this method.",
    "413": "The body is over 4 MiB.",
    "415": "The body is not application/json.",
    "422": "The body does not match the schema (the fields at fault are listed).",
    "429": "This key's request rate is over its limit (Retry-After says when to retry).",
    "500": "The request failed (quote its request id).",
    "503": "The service is at its capacity (Retry-After says when to retry).",
}
RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
RID = {"X-Request-ID": {"schema": {"type": "string"}, "description": "the request's id"}}


def openapi(payload_model: Callable[[str], type[BaseModel]]) -> dict:
    """The /v1 contract as OpenAPI 3.1, from the same models that validate and answer."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict:
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = doc
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def errors(*codes: str) -> dict:
        out = {}
        for code in codes:
            headers = dict(RID)
            if code in ("429", "503"):
                headers.update(RETRY)
            out[code] = {
                "description": ERRORS[code],
                "headers": headers,
                "content": {PROBLEM: {"schema": ref(Problem)}},
            }
        return out

    def operation(summary, request, reply, admin=False, codes=()) -> dict:
        op = {
            "summary": summary,
            "security": [{"AdminKey": []}] if admin else [{"ApiKey": []}],
            "responses": {
                "200": {
                    "description": "OK",
                    "headers": RID,
                    "content": {JSON: {"schema": ref(reply)}},
                },
                **errors("401", "404", "405", "429", "500", "503", *codes),
            },
        }
        if request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": request}},
            }
        return op

    def rows_of(entity: str) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": [f"{entity}s"],
            "properties": {
                f"{entity}s": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_IDS,
                    "items": ref(payload_model(entity)),
                }
            },
        }

    body_errors = ("400", "413", "415", "422")
    paths = {
        "/v1/customers/score": {
            "post": operation(
                "Scores, reasons and actions for customers of the published month, by id",
                ref(CustomerIds),
                Reply,
                codes=body_errors,
            )
        },
        "/v1/cards/score": {
            "post": operation(
                "Activation scores, reasons and actions for new unused cards, by id",
                ref(CardIds),
                Reply,
                codes=body_errors,
            )
        },
        "/v1/customers/score-features": {
            "post": operation(
                "Scores for features the CRM holds (every feature named; null if unknown)",
                rows_of("customer"),
                Reply,
                codes=body_errors,
            )
        },
        "/v1/cards/score-features": {
            "post": operation(
                "Scores for card features the CRM holds",
                rows_of("card"),
                Reply,
                codes=body_errors,
            )
        },
        "/v1/served": {
            "get": operation(
                "Which month and model versions this service answers with", None, Served
            )
        },
        "/v1/admin/reload": {
            "post": operation(
                "Take up the latest published month and the models that scored it (admin key)",
                {"type": "object", "additionalProperties": False},
                Reloaded,
                admin=True,
                codes=body_errors,
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bookpulse scoring API",
            "version": CONTRACT,
            "x-bookpulse-version": bookpulse.__version__,
            "description": (
                "Scores, reasons and next best actions for a retail bank's customers and new "
                "cards, ranked in the month the batch published and scored by the models that "
                "scored it. Every call needs the header X-API-Key; every reply carries "
                "X-Request-ID; every error is application/problem+json."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"ApiKey": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "AdminKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "an admin key (BOOKPULSE_ADMIN_KEYS)",
                },
            },
        },
    }
