"""The merge of chunk parts (pipeline.store.parts): the duplicate rule, the order of rows and
the declared schema, with parts written out of order."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.catalog import PART_REVIEWS_SCHEMA, TABLES
from pipeline.store import parts as merge
from pipeline.store.parts import merge_parts, part_file
from pipeline.store.writers import write_frame


def _part(parts_dir, name, source, rows, ids):
    frame = pd.DataFrame({"review_id": ids, "source_file": source, "source_row": rows,
                          "text": [f"text {source} {r}" for r in rows],
                          "raw": [f'{{"row": {r}}}' for r in rows], "run_id": "old"})
    write_frame(part_file(parts_dir, name, "reviews"), PART_REVIEWS_SCHEMA, frame)
    for table in ("rejected", "warnings"):
        write_frame(part_file(parts_dir, name, table), TABLES[table].schema, pd.DataFrame())


@pytest.fixture
def parts_dir(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (tmp_path / "staged").mkdir()
    # b.csv is the first input; its second chunk's rows were written out of order
    _part(folder, "f0000-c000000", "b.csv", [0, 1, 2], ["x", "y", "x"])
    _part(folder, "f0000-c000001", "b.csv", [4, 3], ["z", "w"])
    _part(folder, "f0001-c000000", "a.csv", [0, 1], ["y", "v"])
    return folder


def test_first_occurrence_wins_in_input_order_and_rows_are_ordered(parts_dir, tmp_path):
    counts = merge_parts(parts_dir, tmp_path / "staged", ["b.csv", "a.csv"], "run-1")
    reviews = pq.read_table(tmp_path / "staged" / TABLES["reviews"].file)
    assert reviews.schema.equals(TABLES["reviews"].schema)
    got = reviews.select(["source_file", "source_row", "review_id"]).to_pylist()
    assert [(r["source_file"], r["source_row"], r["review_id"]) for r in got] == [
        ("a.csv", 1, "v"), ("b.csv", 0, "x"), ("b.csv", 1, "y"), ("b.csv", 3, "w"),
        ("b.csv", 4, "z")]
    assert set(reviews["run_id"].to_pylist()) == {"run-1"}
    rejected = pq.read_table(tmp_path / "staged" / TABLES["rejected"].file).to_pylist()
    assert [(r["source_file"], r["source_row"]) for r in rejected] == [("a.csv", 0),
                                                                         ("b.csv", 2)]
    assert rejected[0]["reason"] == ("duplicate review_id 'y': first seen in b.csv row 1 "
                                     "(first occurrence wins)")
    assert rejected[1]["raw"] == '{"row": 2}'
    assert counts == {"reviews": 5, "rejected": 2, "warnings": 0}


def test_row_groups_gather_parts(parts_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "ROW_GROUP_ROWS", 2)
    merge_parts(parts_dir, tmp_path / "staged", ["b.csv", "a.csv"], "run-1")
    meta = pq.ParquetFile(tmp_path / "staged" / TABLES["reviews"].file).metadata
    # one part per group once two rows are pending: a.csv's 1 row + b.csv's first 2, then 2
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 2]


def test_overlapping_parts_stop_the_merge(parts_dir, tmp_path):
    _part(parts_dir, "f0000-c000002", "b.csv", [3, 5], ["q", "r"])
    with pytest.raises(RuntimeError, match="overlapping rows"):
        merge_parts(parts_dir, tmp_path / "staged", ["b.csv", "a.csv"], "run-1")


def test_no_rows_give_empty_tables_of_the_schema(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (tmp_path / "staged").mkdir()
    _part(folder, "f0000-c000000", "a.csv", [], [])
    counts = merge_parts(folder, tmp_path / "staged", ["a.csv"], "run-1")
    reviews = pq.read_table(tmp_path / "staged" / TABLES["reviews"].file)
    assert counts == {"reviews": 0, "rejected": 0, "warnings": 0}
    assert reviews.num_rows == 0 and reviews.schema.equals(TABLES["reviews"].schema)
