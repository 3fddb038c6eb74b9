"""The API in process (BentoML's ASGI app): answers, agreement with the batch, safety."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from serving_keys import ADMIN_KEY, API_KEY, MONTH

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def client(served_home: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOOKPULSE_HOME", str(served_home))
        mp.setenv("BOOKPULSE_API_KEYS", f"other-key,{API_KEY}")
        mp.setenv("BOOKPULSE_ADMIN_KEYS", ADMIN_KEY)
        mp.delenv("BOOKPULSE_ONLINE_STORE", raising=False)
        from bookpulse.serving.service import Scoring

        with TestClient(Scoring.to_asgi()) as c:
            yield c


@pytest.fixture(scope="module")
def batch(served_home: Path) -> dict[str, pd.DataFrame]:
    out = served_home / "scores" / MONTH
    return {
        "customers": pd.read_parquet(out / "customers.parquet").set_index("customer_id"),
        "cards": pd.read_parquet(out / "cards.parquet").set_index("card_id"),
    }


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz", headers={"X-Request-ID": "probe-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "probe-1"
    # /metrics needs the Prometheus set-up of a served process: see test_served.py


def test_every_scoring_route_needs_a_key(client) -> None:
    for path, body in (
        ("/v1/customers/score", {"customer_ids": [1]}),
        ("/v1/cards/score", {"card_ids": [1]}),
        ("/v1/customers/score-features", {"customers": [{}]}),
        ("/v1/admin/reload", {}),
    ):
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    # the scoring key does not open the admin route
    assert client.post("/v1/admin/reload", json={}, headers=AUTH).status_code == 401


def test_scores_by_id_equal_the_batch(client, batch) -> None:
    cust = batch["customers"]
    ids = [int(i) for i in cust.index[:40]] + [424242424]
    r = client.post("/v1/customers/score", json={"customer_ids": ids}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["month"] == MONTH and set(body["models"]) == {
        "bookpulse-churn",
        "bookpulse-tier_upgrade",
        "bookpulse-card_activation",
        "bookpulse-wealth_take_up",
        "bookpulse-retention_call_uplift",
    }
    assert body["request_id"] == r.headers["x-request-id"]
    results = body["results"]
    assert [x["id"] for x in results] == ids
    assert results[-1] == {"id": 424242424, "status": "not_found"}
    for res in results[:-1]:
        row = cust.loc[res["id"]]
        assert res["status"] == "ok" and res["tier"] == row["tier"]
        assert res["as_of"] == "2026-09-30"
        assert set(res["scores"]) <= {"churn", "upgrade", "wealth"}
        for prefix in ("churn", "upgrade", "wealth"):
            got = res["scores"].get(prefix)
            if pd.isna(row[f"{prefix}_probability"]):
                assert got is None
                continue
            assert got["probability"] == row[f"{prefix}_probability"]  # exactly
            assert got["percentile"] == row[f"{prefix}_percentile"]
            assert got["decile"] == row[f"{prefix}_decile"]
            for k, reason in enumerate(got["reasons"], 1):
                assert reason["feature"] == row[f"{prefix}_reason{k}_feature"]
                assert reason["sentence"] == row[f"{prefix}_reason{k}_sentence"]
            assert got["model_version"] == row[f"{prefix}_model_version"]
            assert len(got["suggested_action"]) > 10
    # the sample covers both sides of each population rule (scored, and left out)
    sample = cust.loc[ids[:-1]]
    for prefix in ("upgrade", "wealth"):
        assert sample[f"{prefix}_probability"].notna().any(), prefix
    assert sample["wealth_probability"].isna().any()


def test_the_next_best_action_is_the_batchs_expected_value(client, batch) -> None:
    """Beside the scores: what a retention call would change for this customer, as the batch's
    list ranked it, and the action worth most (none when no call helps)."""
    cust = batch["customers"]
    ids = [int(i) for i in cust.index[:60]]
    body = client.post("/v1/customers/score", json={"customer_ids": ids}, headers=AUTH).json()
    called = 0
    for res in body["results"]:
        row = cust.loc[res["id"]]
        action = res.get("actions", {}).get("retention_call")
        if pd.isna(row["retention_call_effect"]):
            assert action is None
            continue
        called += 1
        assert action["effect"] == pytest.approx(row["retention_call_effect"], rel=1e-9)
        assert action["expected_value"] == pytest.approx(row["retention_call_value"], rel=1e-9)
        assert action["expected_effect"].startswith("a call ")
        best = res["next_best_action"]
        if action["expected_value"] > 0:
            assert best["list"] == "retention" and best["action"] == "call"
            assert best["expected_value"] == action["expected_value"]
        else:
            assert best is None
    assert called > 20


def test_cards_by_id_equal_the_batch(client, batch) -> None:
    cards = batch["cards"]
    ids = [int(i) for i in cards.index[:20]]
    r = client.post("/v1/cards/score", json={"card_ids": ids}, headers=AUTH)
    assert r.status_code == 200, r.text
    for res in r.json()["results"]:
        got = res["scores"]["activation"]
        assert got["probability"] == cards.loc[res["id"], "activation_probability"]
        assert got["decile"] == cards.loc[res["id"], "activation_decile"]


def test_a_feature_payload_scores_like_the_stored_vector(client, served_home) -> None:
    from bookpulse.adapters.store import open_store

    store = open_store(served_home)
    ids = [
        int(i)
        for i in list(
            pd.read_parquet(
                served_home / "scores" / MONTH / "customers.parquet", columns=["customer_id"]
            )["customer_id"]
        )[:5]
    ]
    docs = store.get("customer", ids)
    schema = client.get("/docs.json").json()
    assert "/v1/customers/score-features" in schema["paths"]
    rows = []
    for i in ids:
        doc = docs[i]
        features = {k: v for k, v in doc.items() if k not in ("branch_id", "rm_id", "customer_id")}
        rows.append({"id": i, **features})
    by_payload = client.post(
        "/v1/customers/score-features", json={"customers": rows}, headers=AUTH
    ).json()["results"]
    by_id = client.post("/v1/customers/score", json={"customer_ids": ids}, headers=AUTH).json()[
        "results"
    ]
    for a, b in zip(by_payload, by_id, strict=True):
        assert a["id"] == b["id"]
        assert a["scores"]["churn"]["probability"] == b["scores"]["churn"]["probability"]
        # every model's score, on the same population (a wealth holder gets none either way)
        assert {k: v["probability"] for k, v in a["scores"].items()} == {
            k: v["probability"] for k, v in b["scores"].items()
        }


def _problem(r, status: int) -> dict:
    """An RFC 9457 problem with the status, a request id matching the header, no data."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def test_bad_requests_name_the_field_and_never_echo_the_data(client, caplog) -> None:
    caplog.set_level(logging.INFO)
    secret = 987654.321
    r = client.post("/v1/customers/score", json={"customer_ids": []}, headers=AUTH)
    assert _problem(r, 422)["errors"][0]["field"] == "customer_ids"
    r = client.post(
        "/v1/customers/score", json={"customer_ids": list(range(1, 1002))}, headers=AUTH
    )
    assert _problem(r, 422)["errors"][0]["field"] == "customer_ids"
    r = client.post("/v1/customers/score", json={"customer_ids": ["x"]}, headers=AUTH)
    assert _problem(r, 422)["errors"][0]["field"] == "customer_ids[0]"
    r = client.post(
        "/v1/customers/score-features",
        json={"customers": [{"aum_log": "rich-customer-secret", "age": secret}]},
        headers=AUTH,
    )
    fields = {e["field"] for e in _problem(r, 422)["errors"]}
    assert "customers[0].aum_log" in fields
    r = client.post(
        "/v1/customers/score-features",
        json={"customers": [{"tier": "platinum-secret"}]},
        headers=AUTH,
    )
    assert "customers[0].tier" in {e["field"] for e in _problem(r, 422)["errors"]}
    for text in (r.text, caplog.text):
        assert "rich-customer-secret" not in text and "platinum-secret" not in text
        assert str(secret) not in text
    big = "x" * (5 * 1024 * 1024)
    r = client.post(
        "/v1/customers/score", content=big, headers={**AUTH, "Content-Type": "application/json"}
    )
    _problem(r, 413)

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"x" * (1024 * 1024)

    r = client.post(
        "/v1/customers/score",
        content=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    _problem(r, 413)
    # client errors are logged for operations, at INFO, never at ERROR
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert any("-> 422" in rec.getMessage() for rec in caplog.records)


def test_ids_are_strict_integers_in_range(client) -> None:
    for bad in (True, "123", 7.5, 0, -1, 2**63, None, [1]):
        r = client.post("/v1/customers/score", json={"customer_ids": [bad]}, headers=AUTH)
        assert _problem(r, 422)["errors"][0]["field"] == "customer_ids[0]", bad
    # 7.0 is 7 in JSON (and in the schema's `integer`), the largest id is in range
    for good in (7.0, 2**63 - 1):
        r = client.post("/v1/customers/score", json={"customer_ids": [good]}, headers=AUTH)
        assert r.status_code == 200 and r.json()["results"][0]["status"] == "not_found"


def test_unknown_fields_are_refused_on_every_route(client) -> None:
    for path, body in (
        ("/v1/customers/score", {"customer_ids": [1]}),
        ("/v1/cards/score", {"card_ids": [1]}),
        ("/v1/customers/score-features", {"customers": [{}]}),
        ("/v1/cards/score-features", {"cards": [{}]}),
    ):
        r = client.post(path, json={**body, "extra": 1}, headers=AUTH)
        assert "extra" in {e["field"] for e in _problem(r, 422)["errors"]}, path
    r = client.post("/v1/admin/reload", json={"extra": 1}, headers={"X-API-Key": ADMIN_KEY})
    _problem(r, 422)


def test_odd_requests_get_a_4xx_problem_never_a_5xx(client) -> None:
    post = "/v1/customers/score"
    r = client.post(post, content=b"--x--", headers={**AUTH, "Content-Type": "multipart/form-data"})
    _problem(r, 415)
    r = client.post(post, content=b"a=1", headers={**AUTH, "Content-Type": "text/plain"})
    _problem(r, 415)
    r = client.post(post, content=b"{not json", headers=AUTH)
    _problem(r, 400)
    r = client.post(post, content=b"[" * 100_000 + b"]" * 100_000, headers=AUTH)
    assert r.status_code in (400, 422)
    for key in ({}, AUTH):  # the route exists: 405 with Allow, with or without a key
        r = client.request("TRACE", post, headers=key)
        _problem(r, 405)
        assert r.headers["allow"] == "POST"
    _problem(client.post("/v1/no-such-route", json={}, headers=AUTH), 404)
    _problem(client.post(post, json={"customer_ids": [1]}), 401)


def test_every_reply_carries_a_request_id_and_honours_the_callers(client) -> None:
    r = client.get("/v1/served", headers={**AUTH, "X-Request-ID": "crm-42.a:b"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "crm-42.a:b"
    served = r.json()
    assert served["month"] == MONTH and served["contract"] and served["models"]
    r = client.post(
        "/v1/customers/score", json={"customer_ids": [1]}, headers={"X-Request-ID": "x y"}
    )
    assert r.status_code == 401 and len(r.headers["x-request-id"]) == 32  # unsafe id replaced
    r = client.post("/v1/customers/score", json={"customer_ids": [1]}, headers=AUTH)
    assert (
        r.headers["x-request-id"]
        != client.post("/v1/customers/score", json={"customer_ids": [1]}, headers=AUTH).headers[
            "x-request-id"
        ]
    )


def test_the_openapi_is_a_contract_a_client_can_be_generated_from(client) -> None:
    doc = client.get("/docs.json").json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["version"] != "None"
    assert "bookpulse" in doc["info"]["description"] or "bank" in doc["info"]["description"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, item in doc["paths"].items():
        for op in item.values():
            codes = set(op["responses"])
            assert {"200", "401", "429", "500", "503"} <= codes, path
            for code, resp in op["responses"].items():
                kind = "application/json" if code == "200" else "application/problem+json"
                assert "$ref" in resp["content"][kind]["schema"], (path, code)
    reply = doc["components"]["schemas"]["Reply"]
    assert {"request_id", "month", "models", "results"} <= set(reply["required"])
    features = doc["components"]["schemas"]["CustomerFeatures"]
    assert features["additionalProperties"] is False
    tier = features["properties"]["tier"]["anyOf"][0]
    assert "effective" in tier["enum"]
    number = features["properties"]["aum_log"]["anyOf"][0]
    assert number["type"] == "number" and "maximum" in number


def _publish(served_home: Path) -> None:
    """Score MONTH again with the registry's champions and publish it (files and store)."""
    from bookpulse.adapters import tracking
    from bookpulse.adapters.champions import load_champions
    from bookpulse.adapters.publish import default_out
    from bookpulse.adapters.store import open_store
    from bookpulse.jobs.score import score_month
    from bookpulse.specs import load_feature_catalog, load_model_specs, load_playbook

    tracking.configure(served_home)
    catalog = load_feature_catalog()
    catalogs = {e: catalog.for_entity(e) for e in ("customer", "card")}
    score_month(
        _book_of(served_home),
        MONTH,
        load_champions(list(load_model_specs().values())),
        catalogs,
        load_playbook(),
        default_out(served_home, MONTH),
        online=open_store(served_home),
    )


def _book_of(served_home: Path) -> Path:
    import json

    manifest = json.loads((served_home / "scores" / MONTH / "manifest.json").read_text())
    return Path(manifest["book"])


def test_a_new_champion_takes_effect_with_the_next_published_month(client, served_home):
    """Promoting a champion changes nothing the API answers until a month scored by it is
    published; then the month, the versions and the ranks change together."""
    import time

    from mlflow.tracking import MlflowClient

    from bookpulse.adapters import tracking

    admin = {"X-API-Key": ADMIN_KEY}
    before = client.get("/v1/served", headers=AUTH).json()
    tracking.configure(served_home)
    mlc = MlflowClient()
    old = mlc.get_model_version_by_alias("bookpulse-churn", "champion")
    new = mlc.create_model_version("bookpulse-churn", source=old.source, run_id=old.run_id)
    old_v, new_v = str(old.version), str(new.version)
    mlc.set_registered_model_alias("bookpulse-churn", "champion", new_v)
    try:
        r = client.post("/v1/admin/reload", json={}, headers=admin)
        assert r.status_code == 200 and r.json()["reloaded"] is False  # no new month
        one = client.post("/v1/customers/score", json={"customer_ids": [1]}, headers=AUTH).json()
        assert one["models"]["bookpulse-churn"] == old_v == before["models"]["bookpulse-churn"]

        _publish(served_home)  # the month scored by the new champion
        time.sleep(1.1)  # past the worker's look-again interval
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            served = client.get("/v1/served", headers=AUTH).json()
            if served["models"]["bookpulse-churn"] == new_v:
                break
            time.sleep(0.2)
        assert served["models"]["bookpulse-churn"] == new_v
        assert served["month"] == MONTH
        cust = pd.read_parquet(served_home / "scores" / MONTH / "customers.parquet")
        ids = [int(i) for i in cust["customer_id"].head(5)]
        body = client.post("/v1/customers/score", json={"customer_ids": ids}, headers=AUTH).json()
        assert body["models"]["bookpulse-churn"] == new_v
        for res in body["results"]:
            row = cust.set_index("customer_id").loc[res["id"]]
            assert res["scores"]["churn"]["model_version"] == row["churn_model_version"]
            assert res["scores"]["churn"]["percentile"] == row["churn_percentile"]
    finally:
        mlc.set_registered_model_alias("bookpulse-churn", "champion", old_v)
        _publish(served_home)
        client.post("/v1/admin/reload", json={}, headers=admin)
    assert client.get("/v1/served", headers=AUTH).json()["models"] == before["models"]


def test_a_month_whose_models_fail_is_not_taken_up(served_home, monkeypatch):
    """The backend keeps answering the month it serves, from its own copy, when the next
    month's models fail to load; the reload says so."""
    import bookpulse.serving.service as service
    from bookpulse.adapters.store import open_store

    monkeypatch.setenv("BOOKPULSE_HOME", str(served_home))
    monkeypatch.delenv("BOOKPULSE_ONLINE_STORE", raising=False)
    store = open_store(served_home)
    backend = service.Backend(service.build_scorer(store), store, store.live_id())
    served = backend.served()
    monkeypatch.setattr(backend, "live", "a-month-published-since")

    def broken(store=None):
        raise OSError("no such model")

    monkeypatch.setattr(service, "build_scorer", broken)
    r = backend.reload()
    assert r["reloaded"] is False and "OSError" in r["error"]
    assert r["models"] == served["models"] and r["month"] == served["month"]
    month, models, results = backend.score_ids("customer", [1])
    assert month == served["month"] and models == served["models"]


def test_percentiles_come_from_the_batch_months_distribution(served_home) -> None:
    from bookpulse.adapters.store import open_store
    from bookpulse.serving.api import _ranks

    dist = open_store(served_home).distribution("churn")
    assert dist is not None and (np.diff(dist) >= 0).all()
    pct, dec = _ranks(np.array([dist[0], dist[-1]]), dist)
    assert pct[0] == 0.0 and dec[0] == 10 and pct[1] == 100.0 and dec[1] == 1
