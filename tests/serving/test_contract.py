"""The /v1 contract's own machinery, on a stand-in backend (no models): key rotation, the
per-key rate limit, the budget of ids in flight, and the first come first served refusal."""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict
from starlette.testclient import TestClient

from bookpulse.serving.http import Admission, Api, Keys, Limits, TokenBucket


class Rows(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float | None = None


class Backend:
    """Answers at once, or holds the call until released (to fill the budget)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def served(self):
        return {"month": "2026-09", "models": {"m": "1"}, "loaded_at": "now", "contract": "1"}

    def payload_model(self, entity):
        return Rows

    def score_ids(self, entity, ids):
        self.entered.set()
        self.release.wait(30)
        return "2026-09", {"m": "1"}, [{"id": i, "status": "not_found"} for i in ids]

    def score_rows(self, entity, rows):
        return "2026-09", {"m": "1"}, []

    def reload(self):
        return {"reloaded": True, "month": "2026-09", "models": {}, "previous": {}, "error": None}


def test_a_rotated_key_file_is_read_again_and_both_keys_work_meanwhile(tmp_path, monkeypatch):
    import bookpulse.serving.http as http

    monkeypatch.setattr(http, "KEYS_RECHECK_SECONDS", 0.0)
    file = tmp_path / "keys"
    file.write_text("old-key\n")
    keys = Keys("inline-key", file)
    assert keys.allows(b"old-key") and keys.allows(b"inline-key")
    assert not keys.allows(b"new-key")
    file.write_text("old-key\nnew-key\n")  # rotation: both valid
    assert keys.allows(b"old-key") and keys.allows(b"new-key")
    file.write_text("new-key\n")  # the old one retired
    assert keys.allows(b"new-key") and not keys.allows(b"old-key")
    file.unlink()  # a missing file: only the inline keys
    assert keys.allows(b"inline-key") and not keys.allows(b"new-key")
    assert not keys.allows(None)


def test_the_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take(b"k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(b"k") == 0.5  # one token in half a second
    assert bucket.take(b"other") == 0.0  # each key has its own
    now[0] += 0.5
    assert bucket.take(b"k") == 0.0
    assert bucket.take(b"k") > 0


def test_the_admission_budget_takes_the_first_call_whatever_its_size():
    budget = Admission(capacity=10)
    assert budget.enter(25)  # alone: admitted (a call of more than the budget still runs)
    assert not budget.enter(1)
    budget.leave(25)
    assert budget.enter(6) and budget.enter(4) and not budget.enter(1)


def test_over_the_rate_a_key_gets_429_with_retry_after(monkeypatch):
    api = Api(Backend(), Keys("k", None), Keys("a", None), Limits(rate_per_key=1, burst_per_key=2))
    with TestClient(api) as client:
        codes = [client.get("/v1/served", headers={"X-API-Key": "k"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = client.get("/v1/served", headers={"X-API-Key": "k"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/problem+json"


def test_over_the_budget_a_call_gets_503_at_once_not_a_wait():
    backend = Backend()
    api = Api(backend, Keys("k", None), Keys("a", None), Limits(ids_in_flight=100))
    with TestClient(api) as client:
        backend.release.clear()
        held = {}

        def big():
            held["r"] = client.post(
                "/v1/customers/score",
                json={"customer_ids": list(range(1, 101))},
                headers={"X-API-Key": "k"},
            )

        t = threading.Thread(target=big)
        t.start()
        assert backend.entered.wait(30)  # the big call holds the whole budget
        r = client.post(
            "/v1/customers/score", json={"customer_ids": [1]}, headers={"X-API-Key": "k"}
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        backend.release.set()
        t.join(30)
        assert held["r"].status_code == 200
        r = client.post(
            "/v1/customers/score", json={"customer_ids": [1]}, headers={"X-API-Key": "k"}
        )
        assert r.status_code == 200  # the budget is back
