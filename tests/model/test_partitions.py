"""Features for a slice of customers (one Spark partition) equal the whole book's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bookpulse.book import io
from bookpulse.features import build_features, read_frames
from bookpulse.features.history import with_linked


@pytest.mark.parametrize("parts", [3, 7])
def test_a_slice_with_its_linked_customers_gives_the_whole_books_features(
    small_book: Path, parts: int
) -> None:
    as_of = io.read_meta(small_book)["months"][-1]
    whole_c, whole_k = build_features(read_frames(small_book, as_of), as_of)
    rel = io.read_static(small_book, "relationships")
    ids = io.read_static(small_book, "customers", ["customer_id"])["customer_id"].to_numpy()
    got_c, got_k = [], []
    for part in range(parts):
        own = ids[ids % parts == part]
        frames = read_frames(small_book, as_of, customer_ids=with_linked(rel, own))
        c, k = build_features(frames, as_of)
        got_c.append(c.loc[c["customer_id"].isin(own)])
        got_k.append(k.loc[k["customer_id"].isin(own)])
    got_c = pd.concat(got_c).sort_values("customer_id").reset_index(drop=True)
    got_k = pd.concat(got_k).sort_values("card_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got_c, whole_c.sort_values("customer_id").reset_index(drop=True))
    pd.testing.assert_frame_equal(got_k, whole_k.sort_values("card_id").reset_index(drop=True))
    # the linked customers are needed: without them the relationship features differ
    own = ids[ids % parts == 0]
    alone, _ = build_features(read_frames(small_book, as_of, customer_ids=own), as_of)
    merged = alone.merge(whole_c, on="customer_id", suffixes=("", "_whole"))
    assert (merged["linked_active"] != merged["linked_active_whole"]).any()
    assert np.isin(alone["customer_id"], own).all()
