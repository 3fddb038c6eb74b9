"""Parquet files written part by part: the simulator's output, one block of customers at a time.

Every file is written through one `pyarrow.parquet.ParquetWriter` (zstd, statistics on every
column), each part in row groups of at most `ROW_GROUP_ROWS` rows, so a reader that asks for a
range of customers skips the row groups outside it by their min/max. A file is complete (its
footer written) only when `close` is called; until then it lives in the book's temporary folder.

Floating-point columns are dictionary-encoded (pyarrow's default) only in a file known to be
one row group; in a file of several row groups they are stored plain: the values are nearly all
distinct, so each row group's dictionary only adds to them (a month of snapshots of 1M customers
was 44 MiB with dictionaries and 35 MiB without, and read faster without). So a file written in
one part of at most `ROW_GROUP_ROWS` rows is, byte for byte, what
`bookpulse.book.io.write_parquet` writes for the same table.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 131_072  # at most this many rows in a row group of any file of the book


def as_table(table: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    return table


class PartFiles:
    """Open Parquet files, each receiving its parts in order; `close` completes them all.

    `one_part`: every file gets a single part (the book is one block). A part with no rows is
    written only when the file gets no other part, so that an empty table still gives a valid
    file with its schema, and no file holds an empty row group between full ones. Not
    thread-safe: one thread writes."""

    def __init__(self, row_group_rows: int = ROW_GROUP_ROWS, *, one_part: bool = False):
        if row_group_rows < 1:
            raise ValueError("row groups need at least one row")
        self.row_group_rows = row_group_rows
        self.one_part = one_part
        self._writers: dict[Path, pq.ParquetWriter] = {}
        self._empty: dict[Path, pa.Table] = {}

    def write(self, path: Path, table: pa.Table | pd.DataFrame) -> None:
        table = as_table(table)
        writer = self._writers.get(path)
        if table.num_rows == 0:
            if writer is None:
                self._empty.setdefault(path, table)
            return
        if writer is None:
            writer = self._open(path, table)
        writer.write_table(table, row_group_size=self.row_group_rows)

    def _open(self, path: Path, first: pa.Table) -> pq.ParquetWriter:
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = first.schema
        dictionary: bool | list[str] = True
        if not (self.one_part and first.num_rows <= self.row_group_rows):
            dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
        writer = pq.ParquetWriter(
            path, schema, compression="zstd", write_statistics=True, use_dictionary=dictionary
        )
        self._writers[path] = writer
        return writer

    def close(self) -> None:
        """Complete every file (the ones that only ever got empty parts too)."""
        for path, table in self._empty.items():
            if path not in self._writers:
                self._open(path, table).write_table(table, row_group_size=self.row_group_rows)
        self._empty.clear()
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    def abandon(self) -> None:
        """Close what is open after a failure, never raising (the files are thrown away)."""
        writers, self._writers = self._writers, {}
        self._empty.clear()
        for writer in writers.values():
            with contextlib.suppress(Exception):  # the folder is being removed anyway
                writer.close()
