"""Binary documents read back exactly what the JSON documents of earlier versions did, and do
not depend on how a month's rows were split: every partition's documents decode with the one
layout of the month.

The oracle is the JSON encoder the store used before its documents became binary (issue 13),
copied here unchanged as `json_records`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.api import types as pdt
from test_store import _same, redis_url  # noqa: F401 (a fixture)

from bookpulse.adapters.store import (
    Encoded,
    RedisStore,
    Snapshot,
    SqliteStore,
    decode,
    encode,
    layout_of,
)
from bookpulse.errors import BookpulseError

BATCH_ROWS = 50_000
MAX_PAIRED = 4_096

# --- the oracle: the JSON documents' encoder, as it was -------------------------------------


def _text(v) -> str:
    """One value as JSON: NaN and missing as null, numbers as numbers, a date as YYYY-MM-DD,
    anything else as text."""
    if v is None or v is pd.NA or v is pd.NaT:
        return "null"
    if isinstance(v, float | np.floating):
        v = float(v)
        return repr(v) if math.isfinite(v) else "null" if math.isnan(v) else json.dumps(v)
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, pd.Timestamp):
        return json.dumps(v.strftime("%Y-%m-%d"))
    return json.dumps(v if isinstance(v, str) else str(v))


def _float_texts(v: np.ndarray) -> pa.Array:
    """float64 values as JSON numbers that read back bit for bit: Arrow's shortest text that
    round-trips, with ".0" after whole numbers (Arrow writes 2.0 as "2", -0.0 as "-0"), NaN
    as null and infinities as Python's json writes them."""
    texts = pc.cast(pa.array(v, pa.float64()), pa.string())
    with np.errstate(invalid="ignore"):
        whole = v == np.floor(v)
    finite = np.isfinite(v)
    whole &= finite
    if whole.any():
        w = pc.filter(texts, pa.array(whole))
        w = pc.if_else(pc.match_substring(w, "e"), w, pc.binary_join_element_wise(w, ".0", ""))
        texts = pc.replace_with_mask(texts, pa.array(whole), w)
    if not finite.all():
        nan = np.isnan(v)
        texts = pc.if_else(pa.array(nan), "null", texts)
        inf = ~finite & ~nan
        if inf.any():
            texts = pc.replace_with_mask(
                texts, pa.array(inf), pa.array([_text(x) for x in v[inf]], pa.string())
            )
    return texts


class _Coded(NamedTuple):
    """A column as codes into the JSON texts of its distinct values, each text preceded by
    the column's `,"name":` (and "null" last)."""

    codes: np.ndarray
    texts: pa.Array


class _Floats(NamedTuple):
    """A float column of mostly distinct values: formatted batch by batch."""

    values: np.ndarray  # float64 (a float32 widened exactly)
    head: str  # `,"name":`


def _distinct(v: np.ndarray) -> bool:
    """Whether most of a column's values differ (judged on its first rows): then formatting
    them all beats finding the distinct ones first."""
    head = v[:10_000]
    return len(pd.unique(head)) > len(head) // 2


def _column(s: pd.Series, head: str) -> _Coded | _Floats:
    """A column made ready for `records` (`head` is its `,"name":`)."""
    dtype = s.dtype
    if pdt.is_float_dtype(dtype):
        v = s.to_numpy(np.float64, na_value=np.nan)
        bits = v.view(np.int64)  # -0.0 is not 0.0; a NaN is NaN
        if _distinct(bits):
            return _Floats(v, head)
        codes, uniq = pd.factorize(bits)
        texts = _float_texts(uniq.view(np.float64))
    elif isinstance(dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy()
        texts = pa.array([_text(x) for x in s.cat.categories], pa.string())
    elif pdt.is_integer_dtype(dtype) and not pdt.is_bool_dtype(dtype):
        codes, uniq = pd.factorize(s)
        texts = pc.cast(pa.array(np.asarray(uniq)), pa.string())
    elif pdt.is_object_dtype(dtype) and pdt.infer_dtype(s, skipna=True) != "string":
        codes = np.arange(len(s))  # mixed Python objects: one by one (1 and True hash alike)
        texts = pa.array([_text(x) for x in s.to_numpy(object)], pa.string())
    else:  # text, booleans, dates
        codes, uniq = pd.factorize(s)
        texts = pa.array([_text(x) for x in uniq], pa.string())
    texts = pa.concat_arrays([texts, pa.array(["null"])])
    texts = pc.binary_replace_slice(texts, 0, 0, head)
    codes = np.asarray(codes, np.intp)
    return _Coded(np.where(codes < 0, len(texts) - 1, codes), texts)


def _paired(ready: list[_Coded | _Floats]) -> list[_Coded | _Floats]:
    """Neighbouring coded columns made one (a text for every pair of their texts) while
    that is at most MAX_PAIRED texts: fewer, longer pieces to join per document."""
    out: list[_Coded | _Floats] = []
    for r in ready:
        last = out[-1] if out else None
        if isinstance(r, _Coded) and isinstance(last, _Coded):
            na, nb = len(last.texts), len(r.texts)
            if na * nb <= MAX_PAIRED:
                every = np.arange(na * nb)
                texts = pc.binary_join_element_wise(
                    last.texts.take(every // nb), r.texts.take(every % nb), ""
                )
                out[-1] = _Coded(last.codes * nb + r.codes, texts)
                continue
        out.append(r)
    return out


def json_records(
    frame: pd.DataFrame, key: str, rows: int = BATCH_ROWS
) -> Iterator[list[tuple[int, str]]]:
    """(id, JSON document) for each row of `frame`, in batches of `rows`: numbers as JSON
    numbers that read back bit for bit (float32 as the float64 it widens to), NaN and missing
    as null, dates as "YYYY-MM-DD", categories and text as text.

    Built column by column in Arrow (each distinct value formatted once), not row by row:
    a month of a million customers takes seconds, not minutes."""
    cols = [c for c in frame.columns if c != key]
    heads = [("{" if i == 0 else ",") + json.dumps(c) + ":" for i, c in enumerate(cols)]
    ready = _paired([_column(frame[c], h) for c, h in zip(cols, heads, strict=True)])
    ids = frame[key].to_numpy()
    for start in range(0, len(frame), rows):
        stop = min(start + rows, len(frame))
        parts = [
            pc.binary_replace_slice(_float_texts(r.values[start:stop]), 0, 0, r.head)
            if isinstance(r, _Floats)
            else r.texts.take(pa.array(r.codes[start:stop]))
            for r in ready
        ]
        n = stop - start
        docs = pc.binary_join_element_wise(*parts, "}", "").to_pylist() if parts else ["{}"] * n
        yield list(zip(ids[start:stop].tolist(), docs, strict=True))


def json_docs(frame: pd.DataFrame, key: str = "customer_id") -> dict[int, dict]:
    return {i: json.loads(d) for batch in json_records(frame, key) for i, d in batch}


# --- frames of every kind of column ---------------------------------------------------------

FLOATS = st.floats(width=64) | st.sampled_from(
    [0.0, -0.0, 1.0, -2.0, 1e16, 1e22, 1e-7, 0.1, 5e-324, 1.7976931348623157e308,
     float("nan"), float("inf"), float("-inf")]
)  # fmt: skip
TEXT = st.none() | st.text(max_size=6) | st.sampled_from(["mid", 'a "q"', "b\\s", "é", "中"])
DAY = st.none() | st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1))
COLUMNS = {
    "f64": FLOATS,
    "f32": st.floats(width=32),
    "f16": st.floats(width=16),
    "nf32": st.none() | st.floats(width=32),
    "nf64": st.none() | FLOATS,
    "i64": st.integers(-(2**63), 2**63 - 1),
    "u64": st.integers(0, 2**64 - 1),
    "i8": st.integers(-128, 127),
    "ni64": st.none() | st.integers(-(2**63), 2**63 - 1),
    "nu8": st.none() | st.integers(0, 255),
    "ai16": st.none() | st.integers(-(2**15), 2**15 - 1),
    "flag": st.booleans(),
    "nflag": st.none() | st.booleans(),
    "text": TEXT,
    "pytext": TEXT,
    "level": TEXT,
    "tier": st.none() | st.sampled_from(["mid", "potential", "high_end"]),
    "code": st.none() | st.sampled_from([3, 1, 2]),
    "day": DAY,
    "day_s": DAY,
    "day_tz": DAY,
    "mixed": st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=4),
    "objtext": TEXT,
    "wait": st.none() | st.timedeltas(timedelta(days=-9), timedelta(days=9)),
}
ROW = st.fixed_dictionaries(COLUMNS)
ROW_KEYS = list(COLUMNS)


def frame_of(rows: list[dict], first_id: int = 1) -> pd.DataFrame:
    """One column of each dtype the store meets (and some it may), ids from `first_id`."""
    col = {k: [r[k] for r in rows] for k in ROW_KEYS}
    return pd.DataFrame(
        {
            "customer_id": np.arange(first_id, first_id + len(rows), dtype=np.int64),
            "as_of": pd.Timestamp("2026-10-31"),
            "f64": np.array(col["f64"], dtype=np.float64),
            "f32": np.array(col["f32"], dtype=np.float32),
            "f16": np.array(col["f16"], dtype=np.float16),
            "nf32": pd.array(col["nf32"], dtype="Float32"),
            "nf64": pd.array(col["nf64"], dtype="Float64"),
            "i64": np.array(col["i64"], dtype=np.int64),
            "u64": np.array(col["u64"], dtype=np.uint64),
            "i8": np.array(col["i8"], dtype=np.int8),
            "ni64": pd.array(col["ni64"], dtype="Int64"),
            "nu8": pd.array(col["nu8"], dtype="UInt8"),
            "ai16": pd.array(col["ai16"], dtype="int16[pyarrow]"),
            "flag": np.array(col["flag"], dtype=bool),
            "nflag": pd.array(col["nflag"], dtype="boolean"),
            "text": pd.Series(col["text"], dtype="str"),
            "pytext": pd.Series(col["pytext"], dtype=pd.StringDtype("python")),
            "level": pd.Categorical(col["level"]),  # levels: whatever the whole frame has
            "tier": pd.Categorical(col["tier"], categories=["potential", "mid", "high_end"]),
            "code": pd.Categorical(col["code"], categories=[3, 1, 2]),
            "day": pd.Series(col["day"], dtype="datetime64[us]"),
            "day_s": pd.Series(col["day_s"], dtype="datetime64[s]"),
            "day_tz": pd.Series(col["day_tz"], dtype="datetime64[ns]").dt.tz_localize(
                "America/Bogota"
            ),
            "mixed": pd.Series(col["mixed"], dtype=object),
            "objtext": pd.Series(col["objtext"], dtype=object),
            "wait": pd.Series(col["wait"], dtype="timedelta64[us]"),
        }
    )


def docs_of(frames: list[pd.DataFrame], layout: dict, rows: int = 7) -> dict[int, bytes]:
    return {
        i: d for f in frames for batch in encode(f, "customer_id", layout, rows) for i, d in batch
    }


def decoded(layout: dict, docs: dict[int, bytes]) -> dict[int, dict]:
    return dict(zip(docs, decode(layout, list(docs.values())), strict=True))


@st.composite
def split(draw, max_rows: int = 25):
    """A frame and an arbitrary assignment of its rows to up to 4 partitions."""
    rows = draw(st.lists(ROW, min_size=1, max_size=max_rows))
    parts = draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows)))
    return frame_of(rows), np.array(parts)


@settings(max_examples=150, deadline=None)
@given(case=split(), rows=st.integers(1, 9))
def test_documents_of_any_partitioning_decode_as_the_json_documents(case, rows) -> None:
    frame, labels = case
    layout = layout_of(frame, "customer_id")
    assert json.loads(json.dumps(layout)) == layout
    parts = [frame.loc[labels == p] for p in np.unique(labels)]
    assert all(layout_of(p, "customer_id") == layout for p in parts)  # dtypes only
    whole = docs_of([frame], layout, rows)
    assert docs_of(parts, layout, rows) == whole  # byte for byte
    want, got = json_docs(frame), decoded(layout, whole)
    assert list(got) == list(want) == frame["customer_id"].tolist()
    for i, doc in want.items():
        assert _same(got[i], doc), (got[i], doc)


def test_the_layout_depends_on_dtypes_only() -> None:
    rows = [
        {k: None for k in ROW_KEYS}
        | {"f64": 1.0, "f32": 2.0, "f16": 0.5, "i64": 1, "u64": 2, "i8": 3, "flag": True}
    ]
    frame = frame_of(rows)
    empty = frame.iloc[:0]
    assert layout_of(empty, "customer_id") == layout_of(frame, "customer_id")
    assert list(encode(empty, "customer_id")) == []
    kinds = {c["name"]: c["kind"] for c in layout_of(frame, "customer_id")["columns"]}
    assert kinds == {
        "as_of": "date", "f64": "float", "f32": "float", "f16": "float", "nf32": "float",
        "nf64": "float", "i64": "int", "u64": "int", "i8": "int", "ni64": "int", "nu8": "int",
        "ai16": "int", "flag": "bool", "nflag": "bool", "text": "text", "pytext": "text",
        "level": "category", "tier": "category", "code": "category", "day": "date",
        "day_s": "date", "day_tz": "date", "mixed": "json", "objtext": "json", "wait": "json",
    }  # fmt: skip


def test_a_frame_of_another_layout_is_refused() -> None:
    frame = pd.DataFrame({"customer_id": [1, 2], "x": np.array([1.5, 2.5], np.float32)})
    layout = layout_of(frame, "customer_id")
    wider = frame.astype({"x": np.float64})
    with pytest.raises(BookpulseError, match=r"x is float <f8, not float <f4"):
        list(encode(wider, "customer_id", layout))
    with pytest.raises(BookpulseError, match="without x"):
        list(encode(frame[["customer_id"]], "customer_id", layout))


def test_a_damaged_document_is_an_error_not_a_wrong_value() -> None:
    frame = frame_of([{k: None for k in ROW_KEYS} | {
        "f64": 1.0, "f32": 2.0, "f16": 0.5, "i64": 1, "u64": 2, "i8": 3, "flag": True,
        "text": "mid"}])  # fmt: skip
    layout = layout_of(frame, "customer_id")
    ((_, doc),) = next(encode(frame, "customer_id"))
    for bad in (doc[:-1], doc + b"x", doc[:10]):
        with pytest.raises(BookpulseError, match="does not match its month's layout"):
            decode(layout, [bad])


@settings(max_examples=20, deadline=None)
@given(case=split(max_rows=12))
def test_both_stores_serve_the_json_documents_from_any_partitioning(
    case, request, tmp_path_factory
) -> None:
    """Partitions added one by one (the streaming engine) or encoded elsewhere (Spark)."""
    frame, labels = case
    parts = [frame.loc[labels == p] for p in np.unique(labels)]
    layout = layout_of(frame, "customer_id")
    want = json_docs(frame)
    for store in (
        SqliteStore(tmp_path_factory.mktemp("parts") / "features.sqlite"),
        RedisStore(request.getfixturevalue("redis_url"), namespace=f"parts{time.time_ns()}"),
    ):
        with store.month_writer("2026-10") as w:
            for part in parts:
                w.add("customer", part)
            w.commit({"churn": np.array([0.5])})
        got = store.get("customer", list(want))
        assert set(got) == set(want)
        assert all(_same(got[i], want[i]) for i in want)
        built = [list(encode(p, "customer_id", layout, rows=3)) for p in parts]
        store.put_month(
            Snapshot("2026-11", {"customer": Encoded(layout, [b for p in built for b in p])}, {})
        )
        assert store.as_of() == "2026-11"
        again = store.get("customer", list(want))
        assert all(_same(again[i], want[i]) for i in want)
