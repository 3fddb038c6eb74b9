"""`--engine spark` on local Spark: the same files, row for row, and the same online store,
document for document, as the local engine."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bookpulse.adapters.publish import read_scores
from bookpulse.adapters.store import SqliteStore
from bookpulse.jobs import score as batch


@pytest.fixture(scope="module")
def java() -> None:
    if shutil.which("java") is None:
        if os.environ.get("CI"):
            pytest.fail("Spark needs Java: .ci/run installs openjdk-17-jre-headless")
        pytest.skip("Spark needs Java 17+ (apt-get install openjdk-17-jre-headless)")


def _documents(store: SqliteStore, entity: str) -> list[tuple[int, str]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(f"SELECT id, doc FROM {entity} ORDER BY id").fetchall()


def test_spark_and_local_engines_agree(
    java, trainable_book, champions, catalogs, playbook, score_month, tmp_path
) -> None:
    from bookpulse.jobs.score_spark import score_month_spark, session

    local = tmp_path / "local"
    on_spark = tmp_path / "spark"
    local_store = SqliteStore(tmp_path / "online-local.sqlite")
    spark_store = SqliteStore(tmp_path / "online-spark.sqlite")
    a = batch.score_month(
        trainable_book,
        score_month,
        champions,
        catalogs,
        playbook,
        local,
        online=local_store,
    )
    try:
        b = score_month_spark(
            trainable_book,
            score_month,
            champions,
            catalogs,
            playbook,
            on_spark,
            master="local[2]",
            partitions=3,
            online=spark_store,
        )
    finally:
        session().stop()
    assert a.rows_out == b.rows_out
    assert b.engine.startswith("spark")
    assert set(a.models) == set(b.models) == set(champions)
    for entity in ("customer", "card"):
        x, y = read_scores(local, entity), read_scores(on_spark, entity)
        assert list(x.columns) == list(y.columns)
        pd.testing.assert_frame_equal(x, y, check_dtype=False, check_exact=True)
    assert "wealth_probability" in read_scores(on_spark, "customer").columns
    for name in playbook.lists:  # retention, upgrade, activation, cross_sell
        x = pd.read_parquet(local / "lists" / f"{name}.parquet")
        y = pd.read_parquet(on_spark / "lists" / f"{name}.parquet")
        pd.testing.assert_frame_equal(x, y, check_dtype=False, check_exact=True)
        assert (local / "lists" / f"{name}.csv").read_text() == (
            on_spark / "lists" / f"{name}.csv"
        ).read_text()
    # the same files, in the same layout (one customers.parquet, not a folder of parts)
    assert set(a.files) == set(b.files)
    for name in ("customers", "cards"):
        x = pq.read_table(local / f"{name}.parquet")
        y = pq.read_table(on_spark / f"{name}.parquet")
        assert x.schema.equals(y.schema, check_metadata=False) and x.equals(y)
    # the online store the API reads: the same documents (text for text), distributions
    # and month, whichever engine scored it; nothing staged is left behind
    assert spark_store.as_of() == local_store.as_of() == score_month
    for entity, name in (("customer", "customers"), ("card", "cards")):
        docs = _documents(local_store, entity)
        assert len(docs) == a.rows_out[name] > 0
        assert _documents(spark_store, entity) == docs
    for prefix in ("churn", "upgrade", "activation", "wealth"):
        x, y = local_store.distribution(prefix), spark_store.distribution(prefix)
        assert x is not None and len(x) > 0
        assert x.tobytes() == y.tobytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
