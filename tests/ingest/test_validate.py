import json

import pandas as pd

from pipeline.ingest.readers import Chunk, find_columns
from pipeline.ingest.validate import fallback_id, validate_chunk


def chunk(rows: list[dict], name: str = "/data/export.csv") -> Chunk:
    frame = pd.DataFrame(rows)
    frame["source_row"] = range(len(frame))
    return Chunk(name, frame)


def test_empty_text_rejected_and_counts_conserved():
    c = chunk([{"text": "好"}, {"text": "   "}, {"text": ""}, {"text": None}])
    v = validate_chunk(c, find_columns(["text"]))
    assert len(v.accepted) == 1 and len(v.rejected) == 3
    assert all("empty text" in r["reason"] for r in v.rejected)


def test_fallback_ids_are_stable_and_depend_on_file_and_text():
    a = fallback_id("/x/export.csv", "好评")
    assert a == fallback_id("/other/dir/export.csv", "好评")  # base name only
    assert a != fallback_id("/x/export.csv", "差评")
    assert a != fallback_id("/x/other.csv", "好评")


def test_accepted_rows_keep_their_input_values_for_the_merge():
    # Duplicates are decided once, run-wide, at merge time (tests/run/test_flow.py); a row keeps
    # its values as exported so that a rejected duplicate shows them.
    c = chunk([{"id": "7", "text": "a", "stars": "5"}, {"id": "7", "text": "b", "stars": "x"}])
    v = validate_chunk(c, find_columns(["id", "text", "stars"]))
    assert list(v.accepted["review_id"]) == ["7", "7"] and not v.rejected
    assert [json.loads(r) for r in v.accepted["raw"]] == [
        {"id": "7", "text": "a", "stars": "5"}, {"id": "7", "text": "b", "stars": "x"}]


def test_invalid_rating_and_date_become_null_with_warning():
    c = chunk(
        [
            {"text": "ok", "rating": "abc", "created_at": "2026-11-02"},
            {"text": "ok2", "rating": "9", "created_at": "not-a-date"},
            {"text": "ok3", "rating": "4.5", "created_at": "2026-11-03T10:00:00+08:00"},
        ]
    )
    cols = find_columns(["text", "rating", "created_at"])
    v = validate_chunk(c, cols)
    assert len(v.accepted) == 3 and not v.rejected
    assert v.accepted["rating"].isna().tolist() == [True, True, False]
    assert v.accepted["created_at"].iloc[2] == pd.Timestamp("2026-11-03 02:00:00")
    assert pd.isna(v.accepted["created_at"].iloc[1])
    assert sorted(w["column"] for w in v.warnings) == ["created_at", "rating", "rating"]


def test_dates_as_chinese_platforms_and_unix_exports_write_them():
    written = ["2026年11月20日", "2026年11月20日 13时45分", "2026年1月2日 08:05",
               "1763600000", "1763600000000", "11 20, 2026"]
    c = chunk([{"评论内容": f"好评{i}", "评论时间": d} for i, d in enumerate(written)])
    v = validate_chunk(c, find_columns(["评论内容", "评论时间"]))
    assert not v.warnings
    assert list(v.accepted["created_at"]) == [
        pd.Timestamp("2026-11-20"), pd.Timestamp("2026-11-20 13:45"),
        pd.Timestamp("2026-01-02 08:05"), pd.Timestamp("2025-11-20 00:53:20"),
        pd.Timestamp("2025-11-20 00:53:20"), pd.Timestamp("2026-11-20")]


def test_ratings_as_exports_write_them():
    written = ["4.0 out of 5 stars", "4星", "五星", "★★★☆☆", "3/5", "2 stars", "4.5", "8"]
    c = chunk([{"text": f"t{i}", "rating": r} for i, r in enumerate(written)])
    v = validate_chunk(c, find_columns(["text", "rating"]))
    assert v.accepted["rating"].tolist()[:7] == [4.0, 4.0, 5.0, 3.0, 3.0, 2.0, 4.5]
    assert pd.isna(v.accepted["rating"].iloc[7])  # outside 0-5: null, with a warning
    assert [w["value"] for w in v.warnings] == ["8"]
