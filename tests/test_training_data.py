"""Training-set assembly: synthetic mixed reviews and the contrast set kept out of training."""

from __future__ import annotations

import pandas as pd
import pytest

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


def _pairs_with_parts(pairs: pd.DataFrame, prefix: str):
    """Each synthetic pair with the ids of its two parts (from its id)."""
    for row in pairs.itertuples():
        a, b = row.id.removeprefix(prefix).split("+")
        yield row, a, b


def test_mixed_pairs_join_opposite_polarities_on_different_dimensions():
    mixed = synthetic_mixed(ROWS, 40, seed=1)
    assert len(mixed) == 40 and set(mixed["lang"]) == {"zh", "en"}
    by_id = ROWS.set_index("id")
    for row, a, b in _pairs_with_parts(mixed, "mix-"):
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


def test_clause_rows_are_unlabelled_clauses_of_chinese_reviews():
    from pipeline.training.data import clause_rows

    rows = ROWS.assign(text=[*["质量很好，就是物流太慢了"] * 2, *ROWS["text"][2:]])
    clauses = clause_rows(rows, 100, seed=0)
    assert sorted(clauses["text"]) == sorted(["质量很好", "就是物流太慢了"] * 2)
    assert clauses["sentiment"].isna().all() and not set(DIMENSIONS) & set(clauses)
    assert (clauses["source"] == "clause").all() and clauses["id"].is_unique
    assert len(clause_rows(rows, 3, seed=0)) == 3


def test_no_pair_or_clause_is_made_of_a_held_out_review(monkeypatch, tmp_path):
    from pipeline.training import data
    from pipeline.training.arguments import TrainConfig

    mixed = "做工扎实，就是快递把箱子压坏了"
    held = pd.DataFrame({"id": ["c1"], "text": [mixed], "split": ["test"]})
    sentiment = pd.DataFrame({"id": ["s1", "c1", "s2"], "lang": "zh", "corpus": "x",
                              "text": ["不错，挺好的，下次再来", mixed, "太差了，再也不买"],
                              "sentiment": ["positive", "negative", "negative"],
                              "split": "train"})
    monkeypatch.setattr(data, "contrast_rows", lambda shared: held)
    monkeypatch.setattr(data, "sentiment_rows", lambda *a, **k: sentiment)
    monkeypatch.setattr(data, "dimension_rows", lambda *a, **k: ROWS.assign(
        split="train", source="seed"))
    config = TrainConfig(mixed_pairs=20, clause_rows=50, dimension_repeats=1)
    train_rows, _ = data.training_sets(config, tmp_path)
    made = train_rows[train_rows["source"].isin(["mixed", "clause"])]
    assert set(made["source"]) == {"mixed", "clause"}
    assert not made["text"].str.contains("做工扎实|箱子压坏").any()
    assert made["text"].str.contains("下次再来").any()  # the other reviews' clauses are there
    assert "c1" not in set(train_rows["id"]) and not made["id"].str.contains("c1").any()


def test_languages_keep_only_those_rows(monkeypatch, tmp_path):
    from pipeline.training import data
    from pipeline.training.arguments import TrainConfig

    monkeypatch.setattr(data, "contrast_rows", lambda shared: pd.DataFrame(
        columns=["id", "text", "split"]))
    monkeypatch.setattr(data, "sentiment_rows", lambda *a, **k: ROWS.assign(
        split="train", corpus="x")[["id", "lang", "text", "sentiment", "split", "corpus"]])
    monkeypatch.setattr(data, "dimension_rows", lambda *a, **k: ROWS.assign(
        split="train", source="seed"))
    train_rows, _ = data.training_sets(TrainConfig(languages=["en"], mixed_pairs=4), tmp_path)
    assert set(train_rows["lang"]) == {"en"} and len(train_rows) >= 6


NEUTRAL_ROWS = pd.DataFrame([
    _row(0, "zh", "面料很舒服", quality="positive"),
    _row(1, "zh", "做工太粗糙了", quality="negative"),
    _row(2, "zh", "物流太慢了", logistics="negative"),  # another dimension: never paired here
    _row(3, "zh", "这件衣服的做工实在是太粗糙了，线头到处都是，穿了一次就开线",
         quality="negative"),  # over twice as long as any positive part
    _row(4, "en", "Lovely fabric.", quality="positive"),
    _row(5, "en", "It runs two sizes large.", quality="negative"),
]).assign(corpus="c")


def test_neutral_pairs_praise_and_criticise_one_dimension():
    from pipeline.training.data import neutral_pairs

    pairs = neutral_pairs(NEUTRAL_ROWS, 20, seed=0)
    assert len(pairs) == 20 and set(pairs["lang"]) == {"zh", "en"}
    by_id = NEUTRAL_ROWS.set_index("id")
    for row, a, b in _pairs_with_parts(pairs, "neutral-"):
        assert {by_id.loc[a, "quality"], by_id.loc[b, "quality"]} == {"positive", "negative"}
        assert not {"r2", "r3"} & {a, b}
        assert row.quality == "neutral" and row.sentiment is None
        assert row.logistics == row.service == row.privacy == "none"
        assert row.source == "neutral"


def test_neutral_pairs_stay_within_a_corpus():
    from pipeline.training.data import neutral_pairs

    rows = NEUTRAL_ROWS.assign(corpus=["a", "b", "a", "a", "a", "b"])
    assert neutral_pairs(rows, 10, seed=0).empty


def test_contrast_labels_weigh_more_in_the_gold_loss():
    import torch

    from pipeline.training.trainer import _contrast_matrix, _weighted_ce

    rows = pd.DataFrame([
        _row(0, "zh", "x", quality="positive", logistics="negative"),  # logistics differs
        {**_row(1, "zh", "y", quality="neutral"), "sentiment": None},  # no overall label
    ])
    w = _contrast_matrix(rows, 3.0)
    assert w.tolist() == [[1.0, 3.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    assert (_contrast_matrix(rows, 1.0) == 1.0).all()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    target = torch.tensor([0, 0, -100])
    plain = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
    assert torch.isclose(_weighted_ce(logits, target, torch.ones(3)), plain)
    heavy = _weighted_ce(logits, target, torch.tensor([1.0, 3.0, 5.0]))  # row 2 is ignored
    losses = torch.nn.functional.cross_entropy(logits[:2], target[:2], reduction="none")
    assert torch.isclose(heavy, (losses[0] + 3 * losses[1]) / 4)


def test_labelled_clauses_are_rebuilt_from_their_review(monkeypatch, tmp_path):
    import hashlib
    import json

    from pipeline.training import data

    def sha(text):
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    reviews = pd.DataFrame({"id": ["waimai_10k-1", "waimai_10k-2"], "corpus": "waimai_10k",
                            "lang": "zh", "sentiment": "negative",
                            "text": ["送餐很快，但是菜都凉了，味道一般", "送餐很快，但是菜都凉了"]})
    labels = [  # clause 0 of a training review; a stale sha; a review of the test split
        {"id": "waimai_10k-1#c0", "sha": sha("送餐很快"), "sentiment": "positive",
         "logistics": "positive", "quality": "none", "service": "none", "privacy": "none"},
        {"id": "waimai_10k-1#c1", "sha": sha("菜都凉了"), "sentiment": "negative",
         "logistics": "negative", "quality": "none", "service": "none", "privacy": "none"},
        {"id": "waimai_10k-2#c0", "sha": sha("送餐很快"), "sentiment": "positive",
         "logistics": "positive", "quality": "none", "service": "none", "privacy": "none"},
    ]
    (tmp_path / "clause_labels").mkdir()
    (tmp_path / "clause_labels" / "c.jsonl").write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in labels), encoding="utf-8")
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(data, "load_sentiment_corpora", lambda shared, names: reviews)
    monkeypatch.setattr(data, "add_split", lambda df: df.assign(split=["train", "test"]))
    rows = data.clause_labelled_rows(tmp_path)
    assert rows.to_dict("records") == [{
        "id": "waimai_10k-1#c0", "corpus": "waimai_10k", "lang": "zh", "text": "送餐很快",
        "sentiment": "positive", "logistics": "positive", "quality": "none", "service": "none",
        "privacy": "none"}]
    assert data.clause_labelled_rows(tmp_path, seed_ids={"waimai_10k-1"}).empty


def test_labelled_english_sentences_are_rebuilt_from_their_review(monkeypatch, tmp_path):
    import hashlib
    import json

    from pipeline.training import data

    def sha(text):
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    reviews = pd.DataFrame({"id": ["blitzer-1"], "corpus": "blitzer", "lang": "en",
                            "sentiment": "positive",
                            "text": ["Works great. But shipping took three weeks."]})
    none = {"quality": "none", "service": "none", "privacy": "none"}
    labels = [{"id": "blitzer-1#s1", "sha": sha("But shipping took three weeks."),
               "sentiment": "negative", "logistics": "negative", **none},
              {"id": "blitzer-1#c1", "sha": sha("But shipping took three weeks."),
               "sentiment": "negative", "logistics": "negative", **none}]  # not a clause id
    (tmp_path / "clause_labels").mkdir()
    (tmp_path / "clause_labels" / "s.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in labels), encoding="utf-8")
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(data, "load_sentiment_corpora", lambda shared, names: reviews)
    monkeypatch.setattr(data, "add_split", lambda df: df.assign(split="train"))
    rows = data.clause_labelled_rows(tmp_path)
    # the sentence is rebuilt by the sentence splitter; the same text under a clause id is not
    # what split_clauses gives that review, so its sha does not match and it is left out
    assert rows[["id", "lang", "text", "logistics"]].to_dict("records") == [
        {"id": "blitzer-1#s1", "lang": "en", "text": "But shipping took three weeks.",
         "logistics": "negative"}]
    # a run that asks for Chinese clauses only (every config before these labels) gets none
    assert data.clause_labelled_rows(tmp_path, kinds="c").empty
    (tmp_path / "clause_labels" / "s.jsonl").write_text(
        json.dumps({**labels[0], "id": "blitzer-1#x1"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="blitzer-1#x1"):
        data.clause_labelled_rows(tmp_path)


def test_a_run_learns_from_the_written_files_it_names(monkeypatch, tmp_path):
    import json

    from pipeline.training import data

    (tmp_path / "train_extra").mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / "train_extra" / name).write_text(json.dumps(
            {"id": name, "lang": "en", "text": "Fast shipping.", "sentiment": "positive",
             "logistics": "positive", "quality": "none", "service": "none",
             "privacy": "none"}) + "\n", encoding="utf-8")
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path)
    assert data.extra_rows()["id"].tolist() == ["a.jsonl", "b.jsonl"]
    assert data.extra_rows(["b.jsonl"])["id"].tolist() == ["b.jsonl"]
    with pytest.raises(ValueError, match=r"c\.jsonl"):
        data.extra_rows(["c.jsonl"])


def test_combiner_rows_are_dev_split_reviews_never_contrast_ones(monkeypatch, tmp_path):
    """The rows that judge the polarity combiner: dev split only (the network never trains on
    it, the test split stays for evaluation), and never a contrast-set review, by id or text."""
    import json

    from pipeline.training import data

    def label(row_id):
        return {"id": row_id, "sentiment": "positive", "logistics": "none",
                "quality": "positive", "service": "none", "privacy": "none"}

    rows = pd.DataFrame({"id": [f"waimai_10k-{i}" for i in range(4)], "corpus": "waimai_10k",
                         "lang": "zh", "text": ["好吃", "很快", "不错", "一般"],
                         **{k: v for k, v in label("x").items() if k != "id"}})
    (tmp_path / "combiner_labels").mkdir()
    (tmp_path / "combiner_labels" / "r.jsonl").write_text(
        "".join(json.dumps(label(i)) + "\n" for i in rows["id"]), encoding="utf-8")
    contrast = rows.iloc[[2]].assign(id="online_shopping_10_cats-9")  # same text, other id
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(data, "load_labels_by_id", lambda files, shared, what: rows)
    monkeypatch.setattr(data, "add_split",
                        lambda df: df.assign(split=["dev", "test", "dev", "train"][: len(df)]))
    monkeypatch.setattr(data, "contrast_rows", lambda shared: contrast)
    assert data.combiner_labelled_rows(tmp_path)["id"].tolist() == ["waimai_10k-0"]


def test_written_test_and_dev_reviews_never_reach_training(monkeypatch, tmp_path):
    from pipeline.training import data

    test, dev = data.written_test_rows(), data.written_dev_rows()
    monkeypatch.setattr(data, "contrast_rows", lambda shared: pd.DataFrame(
        columns=["id", "text", "split"]))
    rows = ROWS.assign(text=[test["text"].iloc[0], dev["text"].iloc[0], *ROWS["text"][2:]])
    kept = drop_held_out(rows, tmp_path)
    assert set(kept["id"]) == set(ROWS["id"]) - {"r0", "r1"}


def test_the_written_test_set_is_labelled_to_the_guidelines():
    from pipeline.catalog import DIM_LABELS, SENTIMENTS
    from pipeline.training.data import extra_rows, written_test_rows

    written = written_test_rows()
    assert len(written) == 240 and written["id"].is_unique
    assert set(written["lang_gold"]) == {"zh", "en"}
    assert set(written["sentiment"]) <= set(SENTIMENTS)
    for dim in DIMENSIONS:
        assert set(written[dim]) <= set(DIM_LABELS)
    # privacy in every polarity in both languages: the dimension the corpora lack
    for lang in ("zh", "en"):
        assert set(written.loc[written["lang_gold"] == lang, "privacy"]) == set(DIM_LABELS)
    # evaluation only: no training file holds one of its texts
    assert not set(written["text"]) & set(extra_rows()["text"])


def test_the_written_dev_set_mixes_dimensions_and_is_never_trained_on():
    from pipeline.catalog import DIM_LABELS, SENTIMENTS
    from pipeline.training.data import extra_rows, written_dev_rows, written_test_rows

    dev = written_dev_rows()
    assert len(dev) == 154 and dev["id"].is_unique and set(dev["lang_gold"]) == {"en"}
    assert set(dev["split"]) == {"dev"} and set(dev["sentiment"]) <= set(SENTIMENTS)
    for dim in DIMENSIONS:
        assert set(dev[dim]) <= set(DIM_LABELS)
    # what it is for: logistics complaints next to praise of the product, and the reverse
    assert ((dev["logistics"] == "negative") & (dev["quality"] == "positive")).sum() >= 50
    assert ((dev["logistics"] == "positive") & (dev["quality"] == "negative")).sum() >= 25
    assert not set(dev["text"]) & (set(extra_rows()["text"]) | set(written_test_rows()["text"]))


def test_natural_test_rows_must_all_be_test_split_reviews(monkeypatch, tmp_path):
    from pipeline.training import data

    (tmp_path / "natural_test").mkdir()
    (tmp_path / "natural_test" / "n.jsonl").write_text("{}\n", encoding="utf-8")
    labelled = pd.DataFrame({"id": ["blitzer-1", "blitzer-2"], "corpus": "blitzer",
                             "lang": "en", "text": ["Arrived broken.", "Works well."],
                             "sentiment": ["negative", "positive"],
                             "logistics": ["negative", "none"], "quality": ["none", "positive"],
                             "service": "none", "privacy": "none"})
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(data, "load_labels_by_id", lambda files, shared, what: labelled)
    monkeypatch.setattr(data, "add_split", lambda df: df.assign(split=["test", "test"]))
    assert data.natural_test_rows(tmp_path)["id"].tolist() == ["blitzer-1", "blitzer-2"]
    # a row of the training split could have been learnt: refused, by id
    monkeypatch.setattr(data, "add_split", lambda df: df.assign(split=["test", "train"]))
    with pytest.raises(ValueError, match="blitzer-2"):
        data.natural_test_rows(tmp_path)
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path / "none")
    assert data.natural_test_rows(tmp_path).empty
