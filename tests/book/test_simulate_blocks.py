"""The simulator in blocks of customers: deterministic, laid out for readers that stream by
customer range, links and contagion across blocks, memory bounded by the block."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bookpulse.book import io
from bookpulse.book.validate import validate_book
from bookpulse.domain import is_attrited
from bookpulse.synthetic import simulate
from bookpulse.synthetic.parts import ROW_GROUP_ROWS, PartFiles
from bookpulse.synthetic.simulate import BookSpec, Shock, generate_book

# 3 blocks of 1,000 customers, both kinds of shock: every per-block random stream is used
BLOCKS = BookSpec(
    customers=3_000,
    months=14,
    seed=5,
    end_month="2026-10",
    block_size=1_000,
    shocks=(Shock("rate_cut", "2026-04"), Shock("card_campaign", "2026-06")),
)
# long and large enough to see contagion: 4 blocks of 3,000 customers x 24 months
CONTAGION = BookSpec(customers=12_000, months=24, seed=2, end_month="2026-10", block_size=3_000)


def _digest(book: Path) -> dict[str, str]:
    return {
        str(p.relative_to(book)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(book.rglob("*"))
        if p.is_file()
    }


def _position(customer_id) -> np.ndarray:
    return np.asarray(customer_id) - 100_001


@pytest.fixture(scope="module")
def blocks_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("blocks") / "book"
    generate_book(BLOCKS, out)
    return out


@pytest.fixture(scope="module")
def contagion_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("contagion") / "book"
    generate_book(CONTAGION, out)
    return out


def test_same_spec_gives_the_same_files_in_several_blocks(blocks_book: Path, tmp_path) -> None:
    generate_book(BLOCKS, tmp_path / "again")
    assert _digest(blocks_book) == _digest(tmp_path / "again")
    meta = io.read_meta(blocks_book)
    assert meta["blocks"] == 3 and meta["block_size"] == 1_000
    assert not (blocks_book / simulate.SPILL_DIR).exists()
    # another block size is another book
    generate_book(BookSpec(**{**BLOCKS.__dict__, "block_size": 1_500}), tmp_path / "other")
    other = _digest(tmp_path / "other")
    assert set(other) == set(_digest(blocks_book))
    assert other["customers.parquet"] != _digest(blocks_book)["customers.parquet"]


def test_a_book_of_one_block_does_not_depend_on_the_block_size(tmp_path: Path) -> None:
    """Byte for byte the pre-block simulator's book: the block size is not even recorded."""
    spec = BookSpec(customers=1_200, months=5, seed=8, end_month="2026-06")
    generate_book(spec, tmp_path / "default")
    generate_book(BookSpec(**{**spec.__dict__, "block_size": 1_200}), tmp_path / "exact")
    assert _digest(tmp_path / "default") == _digest(tmp_path / "exact")
    meta = io.read_meta(tmp_path / "default")
    assert "block_size" not in meta and "blocks" not in meta


def test_a_book_of_several_blocks_is_valid(blocks_book: Path) -> None:
    assert validate_book(blocks_book) == []
    meta = io.read_meta(blocks_book)
    snaps = io.read_monthly(blocks_book, "snapshots", meta["months"], ["customer_id"])
    assert snaps.groupby("month").size().sum() == meta["snapshot_rows"]
    cards = io.read_static(blocks_book, "cards")
    assert cards["card_id"].is_unique and len(cards) == meta["cards"]
    customers = io.read_static(blocks_book, "customers")
    assert customers["customer_id"].tolist() == list(range(100_001, 103_001))
    # every block has every segment and sits in the book's branch order
    block = _position(customers["customer_id"]) // 1_000
    assert customers.groupby(block)["segment"].nunique().min() >= 5
    assert customers["branch_id"].is_monotonic_increasing


def _ids(path: Path, column: str) -> np.ndarray:
    return pq.read_table(path, columns=[column]).column(column).to_numpy()


def test_files_are_sorted_by_customer_in_bounded_row_groups(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(simulate, "ROW_GROUP_ROWS", 300)
    spec = BookSpec(customers=3_000, months=5, seed=9, end_month="2026-10", block_size=1_000)
    book = tmp_path / "book"
    generate_book(spec, book)
    keyed = [
        *book.glob("snapshots/month=*/part-0.parquet"),
        *book.glob("truth/customer_month/month=*/part-0.parquet"),
        book / "customers.parquet",
        book / "relationships.parquet",
        book / "cards.parquet",
    ]
    assert len(keyed) == 2 * 5 + 3
    for path in keyed:
        meta = pq.ParquetFile(path).metadata
        assert meta.num_row_groups > 3, path  # each block's part in groups of <= 300 rows
        j = meta.schema.to_arrow_schema().get_field_index("customer_id")
        bounds = []
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            assert 0 < group.num_rows <= 300, path
            stats = group.column(j).statistics
            assert stats is not None and stats.has_min_max, path
            bounds.append((stats.min, stats.max))
        assert all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:], strict=False)), path
        ids = _ids(path, "customer_id")
        assert (np.diff(ids) >= 0).all(), path
    # snapshots and truth: one row per customer, in order; cards by customer, then card
    cards = pq.read_table(book / "cards.parquet", columns=["customer_id", "card_id"]).to_pandas()
    assert cards.equals(cards.sort_values(["customer_id", "card_id"], ignore_index=True))
    holder = cards.set_index("card_id")["customer_id"]
    for path in book.glob("card_spend/month=*/part-0.parquet"):
        spend = pd.DataFrame({"card_id": _ids(path, "card_id")})
        spend["customer_id"] = holder.loc[spend["card_id"]].to_numpy()
        assert spend.equals(spend.sort_values(["customer_id", "card_id"], ignore_index=True))
        assert max(pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(3)) <= 300
    # a range read touches only the row groups of that range
    ranged = pq.read_table(
        book / "snapshots/month=2026-10/part-0.parquet",
        filters=[("customer_id", ">=", 101_001), ("customer_id", "<", 102_001)],
    )
    assert ranged.num_rows > 0
    assert ranged.column("customer_id").to_numpy().min() >= 101_001


def test_part_files_write_empty_parts_only_when_nothing_else_comes(tmp_path: Path) -> None:
    import pyarrow as pa

    empty = pa.table({"customer_id": pa.array([], pa.int64()), "x": pa.array([], pa.float64())})
    full = pa.table({"customer_id": pa.array([1, 2, 3]), "x": pa.array([0.5, 1.5, 2.5])})
    files = PartFiles(2)
    files.write(tmp_path / "a.parquet", empty)
    files.write(tmp_path / "a.parquet", full)
    files.write(tmp_path / "a.parquet", empty)
    files.write(tmp_path / "b.parquet", empty)
    files.close()
    a = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert (a.num_rows, a.num_row_groups) == (3, 2)
    b = pq.ParquetFile(tmp_path / "b.parquet")
    assert b.metadata.num_rows == 0 and b.schema_arrow.names == ["customer_id", "x"]
    assert ROW_GROUP_ROWS == 131_072


def test_progress_counts_blocks_times_months(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    spec = BookSpec(customers=2_000, months=4, seed=1, end_month="2026-10", block_size=1_000)
    generate_book(spec, tmp_path / "book", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 8) for k in range(1, 9)]


def test_links_cross_blocks_both_ways_and_keep_their_share(contagion_book: Path) -> None:
    rel = io.read_static(contagion_book, "relationships")
    src, dst = _position(rel["customer_id"]), _position(rel["related_customer_id"])
    cross = src // 3_000 != dst // 3_000
    assert 0.04 < cross.mean() < 0.25  # business partners and friends at the boundaries
    assert set(rel.loc[cross, "kind"].astype(str)) == {"business", "friend"}
    pairs = set(zip(rel["customer_id"], rel["related_customer_id"], strict=True))
    assert all((b, a) in pairs for a, b in pairs)
    assert rel.duplicated(["customer_id", "related_customer_id"]).sum() == 0
    # as many customers linked, as many links, as in a book of one block (0.72 and 1.41 in
    # 60,000-customer books of seeds 7 and 42, in one block or in six)
    linked = rel["customer_id"].nunique() / CONTAGION.customers
    assert 0.68 < linked < 0.76
    assert 1.3 < len(rel) / CONTAGION.customers < 1.5


def test_attrition_spreads_through_relationships_in_a_book_of_blocks(contagion_book) -> None:
    """As in the one-block realism book (tests/book/test_simulate.py): customers whose linked
    customer attrited in the last three months churn far more often in the next three."""
    meta = io.read_meta(contagion_book)
    snaps = io.read_monthly(contagion_book, "snapshots", meta["months"])
    gone = is_attrited(
        snaps["status"], snaps["aum_total"], snaps["txn_count"], snaps["digital_logins"]
    )
    months = pd.DatetimeIndex(sorted(snaps["month"].unique()))
    first_gone = snaps.loc[gone].groupby("customer_id")["month"].min()
    when = first_gone.map({m: i for i, m in enumerate(months)})
    n = CONTAGION.customers
    gone_at = np.full(n, 10**6)
    gone_at[_position(when.index)] = when.to_numpy()
    rel = io.read_static(contagion_book, "relationships")
    src, dst = _position(rel["customer_id"]), _position(rel["related_customer_id"])
    exposed_churn, exposed, other_churn, other = 0, 0, 0, 0
    for t in range(3, len(months) - 3):
        active = gone_at > t
        churned = active & (gone_at <= t + 3)
        recent = (gone_at[dst] <= t) & (gone_at[dst] > t - 3)
        hit = np.zeros(n, dtype=bool)
        hit[src[recent]] = True
        exposed_churn += (churned & hit).sum()
        exposed += (active & hit).sum()
        other_churn += (churned & ~hit).sum()
        other += (active & ~hit).sum()
    assert exposed > 2_000
    assert exposed_churn / exposed > 1.5 * other_churn / other


def test_contagion_and_high_tier_links_read_earlier_blocks(tmp_path: Path) -> None:
    """A customer linked to an earlier block's customer feels that customer's attrition (churn
    odds up) and high-tier standing (consolidation up), read from the book's record."""
    spec = BookSpec(customers=4_000, months=6, seed=3, end_month="2026-10", block_size=2_000)
    book = simulate._Book(spec)
    writer = simulate._Writer(PartFiles())
    first = simulate._Simulation(book, 0)
    first.run(tmp_path, writer, lambda done: None)
    book.record(first)
    writer.close()
    assert (book.exit_month[:2_000] < simulate.NEVER).any()
    assert (book.exit_month[2_000:] == simulate.NEVER).all()
    second = simulate._Simulation(book, 1)
    linked = np.unique(second.x_src)
    assert linked.size > 50 and (second.x_dst < 2_000).all()
    assert (second.x_exit == book.exit_month[second.x_dst]).all()
    t = 2
    live = second.onboard_idx <= t
    calm = second._drivers(t, live)
    second.x_exit = np.full_like(second.x_exit, t)  # every earlier link attrited this month
    second.x_high = np.zeros_like(second.x_high)
    shaken = second._drivers(t, live)
    assert (shaken["cool"][linked] >= calm["cool"][linked]).all()
    # (not higher only where a linked customer had attrited lately anyway, or contagion is
    # at its cap)
    assert (shaken["cool"][linked] > calm["cool"][linked]).mean() > 0.9
    others = np.setdiff1d(np.arange(second.n), linked)
    assert (shaken["cool"][others] == calm["cool"][others]).all()
    second.x_high = np.ones_like(second.x_high)
    pulled = second._drivers(t, live)
    assert (pulled["consolidate"] >= shaken["consolidate"]).all()
    assert (pulled["consolidate"][linked] > shaken["consolidate"][linked]).any()


def test_memory_is_bounded_by_the_block(tmp_path: Path, monkeypatch) -> None:
    """Per-customer state never spans more than a block, and what the book keeps of every
    customer is a few bytes."""
    seen: list[int] = []
    record = simulate._Book.record

    def checked(self, sim) -> None:
        assert sim.n <= 1_000
        links = {"rel_src", "rel_dst", "rel_kind", "rel_weight", "rel_since"}
        links |= {name for name in vars(sim) if name.startswith("x_")}
        for name, value in vars(sim).items():
            arrays = value.values() if isinstance(value, dict) else [value]
            if name in ("card_parts", "card_truth_parts"):
                continue  # the block's cards, checked below
            for array in arrays:
                if isinstance(array, np.ndarray) and array.ndim:
                    limit = 4 * sim.n if name in links else sim.n
                    assert array.shape[0] <= limit, name
        assert sim.cards_now["card_id"].size <= 3 * sim.n
        seen.append(sim.n)
        record(self, sim)
        kept = self.exit_month.nbytes + self.high.nbytes + self.onboard_day.nbytes
        kept += sum(p.nbytes for p in self.partner_pool)
        assert kept <= 12 * self.n

    monkeypatch.setattr(simulate._Book, "record", checked)
    spec = BookSpec(customers=3_500, months=9, seed=6, end_month="2026-10", block_size=1_000)
    generate_book(spec, tmp_path / "book")
    assert seen == [875, 875, 875, 875]
    assert json.loads((tmp_path / "book" / io.META_FILE).read_text())["blocks"] == 4


def test_block_size_must_be_sensible(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block_size"):
        generate_book(BookSpec(customers=500, months=4, block_size=10), tmp_path / "b")
    assert BookSpec(customers=2_001, block_size=1_000).block_bounds() == [
        (0, 667),
        (667, 1_334),
        (1_334, 2_001),
    ]
