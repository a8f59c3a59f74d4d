import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import read_all

from pipeline.errors import InputError
from pipeline.ingest.readers import detect_encoding, expand_inputs, find_columns, iter_chunks

ROWS = pd.DataFrame(
    {
        "ID": ["a1", "a2", "a3"],
        "Review": ["物流很快，好评", "Broke after a week", "客服 reply 太慢"],
        "rating": ["5", "1", "2"],
    }
)


@pytest.mark.parametrize(
    ("columns", "text", "id_"),
    [
        (["review_id", "text"], "text", "review_id"),
        (["ID", "Review", "x"], "Review", "ID"),
        (["Comment", "product_id"], "Comment", None),
        (["评论", "id"], "评论", "id"),
        (["内容"], "内容", None),
        (["sentence", "review_text"], "review_text", None),
        # names as real exports spell them
        (["Clothing ID", "Title", "Review Text", "Rating"], "Review Text", None),
        (["reviewerID", "asin", "reviewText", "overall", "summary"], "reviewText", None),
        (["review_id", "review_headline", "review_body"], "review_body", "review_id"),
        (["评论ID", "用户昵称", "评论内容", "商家回复", "点赞数"], "评论内容", "评论ID"),
        (["订单号", "评价时间", "评价"], "评价", None),
        (["Customer Review", "Stars"], "Customer Review", None),
        (["Review Title", "Review Date", "Review Rating", "Customer Review Text"],
         "Customer Review Text", None),
    ],
)
def test_find_columns(columns, text, id_):
    found = find_columns(columns)
    assert (found.text, found.id) == (text, id_)


def test_find_columns_maps_the_optional_fields_of_common_exports():
    amazon = find_columns(["marketplace", "customer_id", "review_id", "product_id",
                           "product_title", "product_category", "star_rating",
                           "review_headline", "review_body", "review_date"])
    assert amazon.extras == {"rating": "star_rating", "product_id": "product_id",
                             "category": "product_category", "created_at": "review_date"}
    taobao = find_columns(["评论ID", "商品编号", "评分", "评论内容", "评论时间", "类目"])
    assert taobao.extras == {"rating": "评分", "product_id": "商品编号", "category": "类目",
                             "created_at": "评论时间"}
    # a name is used for one role only, and names with no role are left alone
    plain = find_columns(["review", "date", "Date Modified", "product name"])
    assert plain.extras == {"created_at": "date"}


def test_find_columns_override_and_errors():
    assert find_columns(["body", "k"], text_column="BODY", id_column="k").text == "body"
    with pytest.raises(InputError, match="no review text column"):
        find_columns(["title", "stars"])
    with pytest.raises(InputError, match="--text-column"):  # a title or a reply is no review
        find_columns(["Review Title", "review_count", "商家回复"])
    assert find_columns(["Review Text"], text_column="review text").text == "Review Text"
    with pytest.raises(InputError, match="is not a column"):
        find_columns(["text"], text_column="missing")


def write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".xlsx":
        frame.to_excel(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet", ".xlsx"])
def test_each_format_reads_the_same_rows(tmp_path, suffix):
    path = write(ROWS, tmp_path / f"export{suffix}")
    rows, rejected = read_all(path)
    assert rejected == []
    assert list(rows["Review"]) == list(ROWS["Review"])
    assert list(rows["ID"]) == list(ROWS["ID"])
    assert list(rows["source_row"]) == [0, 1, 2]


@pytest.mark.parametrize("sep", [";", "|"])
def test_semicolon_and_pipe_separated_exports(tmp_path, sep):
    frame = ROWS.assign(Review=["Fast, cheap, fine", "物流很快, 好评", "ok"])
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False, sep=sep)
    rows, rejected = read_all(path)
    assert rejected == []
    assert list(rows["Review"]) == list(frame["Review"])  # commas inside the text stay text
    assert list(rows["rating"]) == ["5", "1", "2"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_encodings_are_detected(tmp_path, encoding):
    path = tmp_path / "e.csv"
    ROWS.to_csv(path, index=False, encoding=encoding)
    assert detect_encoding(path) == encoding
    rows, _ = read_all(path)
    assert list(rows["Review"]) == list(ROWS["Review"])


def test_gbk_after_a_long_ascii_prefix(tmp_path):
    # A sniffed prefix would look like ASCII; the whole file must be checked.
    lines = ["id,text"] + [f"{i},fine" for i in range(50_000)] + ["x,质量很差"]
    path = tmp_path / "gbk.csv"
    path.write_bytes("\n".join(lines).encode("gbk"))
    assert detect_encoding(path) == "gb18030"
    rows, _ = read_all(path)
    assert rows["text"].iloc[-1] == "质量很差"


def test_malformed_csv_rows_are_rejected_with_reason(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        'id,text\n1,"multi\nline review"\n2,ok,extra\n3,"has ""quotes"""\n\n4,fine\n',
        encoding="utf-8",
    )
    rows, rejected = read_all(path)
    assert list(rows["text"]) == ["multi\nline review", 'has "quotes"', "fine"]
    assert len(rejected) == 1 and "3 fields, header has 2" in rejected[0]["reason"]
    assert rejected[0]["source_row"] == 1


def test_invalid_json_lines_are_rejected(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n[1, 2]\n{"text": "fine"}\n', encoding="utf-8")
    rows, rejected = read_all(path)
    assert list(rows["text"]) == ["ok", "fine"]
    assert [r["source_row"] for r in rejected] == [1, 2]
    assert "invalid JSON" in rejected[0]["reason"]


@pytest.mark.parametrize("suffix", [".parquet", ".xlsx"])
def test_corrupt_binary_files_fail_clearly(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"this is not a real file" * 10)
    with pytest.raises(InputError, match="not a readable"):
        list(iter_chunks(path, 100))


def test_empty_missing_directory_and_unsupported(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        list(iter_chunks(empty, 10))
    with pytest.raises(InputError, match="no such file"):
        list(iter_chunks(tmp_path / "nope.csv", 10))
    with pytest.raises(InputError, match="is a directory"):
        list(iter_chunks(tmp_path, 10))
    odd = tmp_path / "x.docx"
    odd.write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        list(iter_chunks(odd, 10))


def test_expand_inputs(tmp_path):
    a = write(ROWS, tmp_path / "a.csv")
    b = write(ROWS, tmp_path / "b.jsonl")
    (tmp_path / "notes.md").write_text("x")
    assert expand_inputs([str(tmp_path)]) == [a, b]
    assert expand_inputs([str(tmp_path / "*.csv")]) == [a]
    with pytest.raises(InputError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.xlsx")])


def test_chunks_respect_size(tmp_path):
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(25)]})
    path = write(frame, tmp_path / "c.csv")
    sizes = [len(c.rows) for c in iter_chunks(path, 10)]
    assert sizes == [10, 10, 5]


def test_json_documents_wrapping_records_and_nested_fields(tmp_path):
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"total": 2, "page": 1, "data": [
        {"content": "物流很快", "score": 5}, {"content": "bad", "score": 1}]},
        ensure_ascii=False), encoding="utf-8")
    rows, rejected = read_all(wrapped)
    assert list(rows["content"]) == ["物流很快", "bad"] and rejected == []

    nested = tmp_path / "nested.jsonl"
    nested.write_text("\n".join(json.dumps(r) for r in [
        {"review": {"id": "r1", "text": "Arrived late", "rating": 2}, "product": {"id": "p9"}},
        {"review": {"id": "r2", "text": "Fine", "rating": 5}, "product": {"id": "p9"}}]),
        encoding="utf-8")
    rows, _ = read_all(nested)
    cols = find_columns([c for c in rows.columns if c != "source_row"])
    assert (cols.text, cols.id) == ("review.text", "review.id")
    assert cols.extras == {"rating": "review.rating", "product_id": "product.id"}
    # JSON Lines saved with a .json name are still read line by line
    as_json = tmp_path / "lines.json"
    as_json.write_text(nested.read_text(encoding="utf-8"), encoding="utf-8")
    assert list(read_all(as_json)[0]["review.text"]) == ["Arrived late", "Fine"]


def test_title_rows_above_the_header_are_skipped(tmp_path):
    reviews = pd.DataFrame({"评论ID": ["1", "2"], "评论内容": ["物流很快", "质量差, 退货"],
                            "评分": ["5", "1"]})
    xlsx = tmp_path / "export.xlsx"
    with pd.ExcelWriter(xlsx) as writer:
        pd.DataFrame([["商品评价导出 2026-11-20"]]).to_excel(writer, index=False, header=False)
        reviews.to_excel(writer, index=False, startrow=2)
    csv_path = tmp_path / "export.csv"
    csv_path.write_text("商品评价导出 2026-11-20,,\n\n" + reviews.to_csv(index=False),
                        encoding="utf-8")
    for path in (xlsx, csv_path):
        rows, rejected = read_all(path)
        assert rejected == []
        assert rows.drop(columns="source_row").to_dict("records") == reviews.to_dict("records")
    # a one-column export has no title to skip: its first row is the header
    one = tmp_path / "one.csv"
    one.write_text("review\ngood\nbad\n", encoding="utf-8")
    assert list(read_all(one)[0]["review"]) == ["good", "bad"]


def test_legacy_xls_exports_are_read():
    # tests/ingest/fixtures/legacy_export.xls: BIFF8 workbook written for this test (xlwt)
    rows, rejected = read_all(Path(__file__).parent / "fixtures" / "legacy_export.xls")
    assert rejected == []
    assert list(rows["评论内容"]) == ["快递很快，包装完好", "Stopped charging after two days"]
    assert list(rows["评分"]) == ["5", "1"]


def test_workbooks_read_every_sheet_of_reviews(tmp_path):
    october = pd.DataFrame({"评论ID": ["1", "2"], "评论内容": ["物流很快", "质量差, 退货"]})
    november = pd.DataFrame({"评论ID": ["3"], "评论内容": ["客服态度好"]})
    xlsx = tmp_path / "export.xlsx"
    with pd.ExcelWriter(xlsx) as writer:
        cover = pd.DataFrame({"说明": ["导出时间 2026-11-30"]})
        cover.to_excel(writer, sheet_name="说明", index=False)
        october.to_excel(writer, sheet_name="10月", index=False)
        replies = pd.DataFrame({"商品ID": ["A1"], "回复内容": ["谢谢"]})
        replies.to_excel(writer, sheet_name="回复", index=False)
        pd.DataFrame([["11月评价"]]).to_excel(writer, sheet_name="11月", index=False, header=False)
        november.to_excel(writer, sheet_name="11月", index=False, startrow=2)
    rows, rejected = read_all(xlsx)
    assert rejected == []
    # the cover and the replies are skipped; November's title row above its header too
    assert rows["评论内容"].tolist() == ["物流很快", "质量差, 退货", "客服态度好"]
    assert rows["source_row"].tolist() == [0, 1, 2]
    # no sheet names a text column: the first sheet, as for a one-sheet workbook
    plain = tmp_path / "plain.xlsx"
    with pd.ExcelWriter(plain) as writer:
        pd.DataFrame({"words": ["fast delivery"]}).to_excel(writer, sheet_name="a", index=False)
        pd.DataFrame({"other": ["x"]}).to_excel(writer, sheet_name="b", index=False)
    assert read_all(plain)[0]["words"].tolist() == ["fast delivery"]
