"""Training-set assembly: synthetic mixed reviews and the contrast set kept out of training."""

from __future__ import annotations

import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.training.data import drop_held_out, synthetic_mixed


def _row(i, lang, text, **dims):
    return {"id": f"r{i}", "lang": lang, "text": text, "sentiment": "positive",
            **{d: dims.get(d, "none") for d in DIMENSIONS}}


ROWS = pd.DataFrame([
    _row(0, "zh", "质量很好", quality="positive"),
    _row(1, "zh", "物流太慢了", logistics="negative"),
    _row(2, "zh", "客服态度很差", service="negative"),
    _row(3, "zh", "包装很好，发货快", logistics="positive"),
    _row(4, "zh", "东西一般", quality="neutral"),  # not one clear polarity: never a part
    _row(5, "en", "Great quality.", quality="positive"),
    _row(6, "en", "Shipping took three weeks.", logistics="negative"),
    _row(7, "en", "Support never answered.", service="negative"),
])


def test_mixed_pairs_join_opposite_polarities_on_different_dimensions():
    mixed = synthetic_mixed(ROWS, 40, seed=1)
    assert len(mixed) == 40 and set(mixed["lang"]) == {"zh", "en"}
    by_id = ROWS.set_index("id")
    for row in mixed.itertuples():
        a, b = row.id.removeprefix("mix-").split("+")
        assert "r4" not in (a, b)
        assert by_id.loc[a, "lang"] == by_id.loc[b, "lang"] == row.lang
        labels = {d: getattr(row, d) for d in DIMENSIONS}
        polarities = {v for v in labels.values() if v != "none"}
        assert polarities == {"positive", "negative"}  # one of each part
        for part in (a, b):
            for d in DIMENSIONS:
                if by_id.loc[part, d] != "none":
                    assert labels[d] == by_id.loc[part, d]
        assert row.text.startswith(by_id.loc[a, "text"].rstrip("。.!！ "))
        assert row.text.endswith(by_id.loc[b, "text"])
        assert row.sentiment is None  # the balance of the parts is not a label


def test_mixed_pairs_are_reproducible():
    assert synthetic_mixed(ROWS, 10, seed=3).equals(synthetic_mixed(ROWS, 10, seed=3))


def test_contrast_reviews_never_reach_training(monkeypatch, tmp_path):
    from pipeline.training import data

    held = pd.DataFrame({"id": ["c1"], "text": ["物流太慢了"], "split": ["test"]})
    monkeypatch.setattr(data, "contrast_rows", lambda shared: held)
    rows = ROWS.assign(id=["c1", *ROWS["id"][1:]])  # r0 takes the contrast id
    kept = drop_held_out(rows, tmp_path)
    # c1 goes by its id, r1 by its text (the corpora repeat texts under other ids)
    assert set(kept["id"]) == set(ROWS["id"]) - {"r0", "r1"}
