"""`--engine spark` on local Spark: the same files, row for row, as the local engine."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from bookpulse.scoring import batch
from bookpulse.scoring.batch import read_scores


@pytest.fixture(scope="module")
def java() -> None:
    if shutil.which("java") is None:
        if os.environ.get("CI"):
            pytest.fail("Spark needs Java: .ci/run installs openjdk-17-jre-headless")
        pytest.skip("Spark needs Java 17+ (apt-get install openjdk-17-jre-headless)")


def test_spark_and_local_engines_agree(
    java, trainable_book, champions, catalogs, playbook, score_month, tmp_path
) -> None:
    from bookpulse.scoring.spark import score_month_spark, session

    local = tmp_path / "local"
    on_spark = tmp_path / "spark"
    a = batch.score_month(
        trainable_book, tmp_path, score_month, champions, catalogs, playbook, local
    )
    try:
        b = score_month_spark(
            trainable_book,
            tmp_path,
            score_month,
            champions,
            catalogs,
            playbook,
            on_spark,
            master="local[2]",
            partitions=3,
        )
    finally:
        session().stop()
    assert a["rows_out"] == b["rows_out"]
    assert b["engine"].startswith("spark")
    for name in ("customers", "cards"):
        x, y = read_scores(local, name), read_scores(on_spark, name)
        assert list(x.columns) == list(y.columns)
        pd.testing.assert_frame_equal(x, y, check_dtype=False, check_exact=True)
    for name in ("retention", "upgrade", "activation"):
        x = pd.read_parquet(local / "lists" / f"{name}.parquet")
        y = pd.read_parquet(on_spark / "lists" / f"{name}.parquet")
        pd.testing.assert_frame_equal(x, y, check_dtype=False, check_exact=True)
        assert (local / "lists" / f"{name}.csv").read_text() == (
            on_spark / "lists" / f"{name}.csv"
        ).read_text()
    # Spark's parts are in the manifest too, with checksums
    assert any(f.startswith("customers.parquet/part-") for f in b["files"])
