"""The streaming local engine: partition by partition, it publishes what scoring the whole
book at once gives, file for file (the pure functions run on the whole month are the
reference: that was the local engine before it streamed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bookpulse.book import io
from bookpulse.features import build_features, read_frames
from bookpulse.features.history import read_linked_facts
from bookpulse.jobs import score as score_job
from bookpulse.jobs.score import customer_partitions, partition_features
from bookpulse.model.batch import add_ranks, build_lists, score_rows, uplift_specs


def whole_book(book: Path, month: str, champions, catalogs, playbook):
    """The month scored at once: every customer's features, every model, ranks, lists."""
    customers_f, cards_f = build_features(read_frames(book, month), month)
    static = io.read_static(book, "customers", ["customer_id", "branch_id", "rm_id"])
    cust, card = score_rows(champions, catalogs, customers_f, cards_f, static)
    for c in champions.values():
        if c.spec.entity == "customer":
            cust = add_ranks(cust, c.spec.prefix)
        else:
            card = add_ranks(card, c.spec.prefix)
    rms = io.read_static(book, "rms")
    branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
    specs = {c.name: c.spec for c in champions.values()}
    return (
        cust,
        card,
        build_lists(cust, card, rms, branches, playbook, specs, uplift_specs(champions)),
    )


@pytest.fixture(scope="module")
def reference(trainable_book, champions, catalogs, playbook, score_month):
    return whole_book(trainable_book, score_month, champions, catalogs, playbook)


def _as_written(df: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    """A frame as the publisher writes and a reader reads it back."""
    path = tmp / "ref.parquet"
    io.write_parquet(df, path)
    return pq.read_table(path)


@pytest.mark.parametrize("size", [10_000, 997, 331])
def test_partitions_publish_what_the_whole_book_gives(
    trainable_book,
    champions,
    catalogs,
    playbook,
    score_month,
    reference,
    tmp_path,
    size,
    monkeypatch,
):
    ids = io.read_static(trainable_book, "customers", ["customer_id"])["customer_id"]
    out = tmp_path / "month"
    held = []  # memory by construction: no step holds more customers than a partition

    def features(book, as_of, own, linked):
        got = partition_features(book, as_of, own, linked)
        held.append((len(own), len(got[0]), got[1]["customer_id"].isin(own).all()))
        return got

    monkeypatch.setattr(score_job, "partition_features", features)
    manifest = score_job.score_month(
        trainable_book,
        score_month,
        champions,
        catalogs,
        playbook,
        out,
        partition_customers=size,
    )
    assert manifest.engine == f"local, partitions of {size:,} customers"
    assert len(held) == -(-len(ids) // size)
    assert all(own <= size and rows <= own and cards_own for own, rows, cards_own in held)
    assert sum(rows for _, rows, _ in held) == len(reference[0])
    assert len(customer_partitions(ids.to_numpy(), size)) == -(-len(ids) // size)
    cust, card, lists = reference
    for name, df in (("customers", cust), ("cards", card)):
        got = pq.read_table(out / f"{name}.parquet")
        want = _as_written(df, tmp_path)
        assert got.schema.equals(want.schema, check_metadata=False), name
        pd.testing.assert_frame_equal(got.to_pandas(), want.to_pandas(), check_exact=True)
    assert sorted(lists) == sorted(p.stem for p in (out / "lists").glob("*.parquet"))
    for name, df in lists.items():
        assert len(df), f"the {name} list is empty: the test proves nothing"
        got = pd.read_parquet(out / "lists" / f"{name}.parquet")
        want = _as_written(df, tmp_path).to_pandas()
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        io.write_parquet(df, tmp_path / "ref.parquet")
        df.to_csv(tmp_path / "ref.csv", index=False, date_format="%Y-%m-%d", float_format="%.6f")
        assert (tmp_path / "ref.csv").read_bytes() == (out / "lists" / f"{name}.csv").read_bytes()
    assert not any(p.name.startswith("_") for p in out.iterdir()), "staging removed"
    assert manifest.rows_out["customers"] == len(cust)


def test_a_partition_reads_its_share_of_the_book_and_the_linked_facts_complete_it(
    trainable_book, score_month
):
    """Relationship features of a partition need its customers' linked customers, wherever
    they are: with the book-wide linked facts, each partition's features are the whole
    book's rows for its customers, and the partition's frames hold its customers only."""
    whole, _ = build_features(read_frames(trainable_book, score_month), score_month)
    ids = io.read_static(trainable_book, "customers", ["customer_id"])["customer_id"].to_numpy()
    parts = customer_partitions(ids, 600)
    linked = pd.concat([read_linked_facts(trainable_book, score_month, p) for p in parts])
    got = []
    for own in parts:
        frames = read_frames(trainable_book, score_month, customer_ids=own, linked=linked)
        assert np.isin(frames.snapshots["customer_id"], own).all()
        got.append(build_features(frames, score_month)[0])
    got = pd.concat(got, ignore_index=True)
    pd.testing.assert_frame_equal(got, whole, check_exact=True)
    # and the facts matter: without them, a partition's relationship features differ
    alone = build_features(
        read_frames(trainable_book, score_month, customer_ids=parts[0]), score_month
    )[0]
    merged = alone.merge(whole, on="customer_id", suffixes=("", "_whole"))
    assert (merged["linked_active"] != merged["linked_active_whole"]).any()
