"""Tests for pipeline.training.corpora against the real shared corpora (skipped when absent)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS
from pipeline.config import shared_dir
from pipeline.training import corpora

SHARED = shared_dir()
if SHARED is None:
    pytest.skip("shared data folder not found", allow_module_level=True)

pytestmark = pytest.mark.shared

# Source rows per corpus as documented in shared/datasets/*/SOURCE.md (before empties are dropped).
SOURCE_ROWS = {
    "online_shopping_10_cats": 62_774,
    "waimai_10k": 11_987,
    "ChnSentiCorp_htl_all": 7_766,
    "blitzer": 8_000,
    "womens_clothing": 23_486,
    "uci_amazon_cells": 1_000,
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return corpora.load_sentiment_corpora(SHARED)


@pytest.fixture(scope="module")
def seeds() -> pd.DataFrame:
    return corpora.load_seed_labels(SHARED)


@pytest.fixture(scope="module")
def split_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return corpora.add_split(frame)


def _max_index(ids: pd.Series) -> int:
    return int(ids.str.rsplit("-", n=1).str[1].astype(int).max())


# ------------------------------------------------------------------- shared_dir


def test_shared_dir_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVSAT_SHARED_DIR", raising=False)
    assert shared_dir(tmp_path) == tmp_path
    assert shared_dir(tmp_path / "missing") is None
    monkeypatch.setenv("REVSAT_SHARED_DIR", str(tmp_path))
    assert shared_dir() == tmp_path
    monkeypatch.setenv("REVSAT_SHARED_DIR", str(tmp_path / "missing"))
    assert shared_dir() is None
    # the settings tree is the only reader: revsat.toml names the folder too
    monkeypatch.delenv("REVSAT_SHARED_DIR")
    toml = tmp_path / "revsat.toml"
    toml.write_text(f"shared_dir = {str(tmp_path)!r}\n", encoding="utf-8")
    monkeypatch.setenv("REVSAT_CONFIG", str(toml))
    assert shared_dir() == tmp_path


# ------------------------------------------------------------------- corpora


def test_columns_and_languages(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(corpora.CORPUS_COLUMNS)
    assert set(frame["corpus"]) == set(corpora.CORPORA)
    langs = frame.groupby("corpus")["lang"].unique().map(list).to_dict()
    assert langs == {
        "online_shopping_10_cats": ["zh"],
        "waimai_10k": ["zh"],
        "ChnSentiCorp_htl_all": ["zh"],
        "blitzer": ["en"],
        "womens_clothing": ["en"],
        "uci_amazon_cells": ["en"],
    }


@pytest.mark.parametrize(("corpus", "rows"), SOURCE_ROWS.items())
def test_ids_count_every_source_row(frame: pd.DataFrame, corpus: str, rows: int) -> None:
    ids = frame.loc[frame["corpus"] == corpus, "id"]
    if corpus == "blitzer":
        # 1,000 reviews per file, numbered 0..999 in each of the 8 files.
        files = ids.str.rsplit("-", n=1).str[0]
        assert files.nunique() == 8
        assert files.value_counts().eq(1000).all()
        assert _max_index(ids) == 999
    else:
        # Dropped empty texts leave gaps, but the last source row keeps its index.
        assert _max_index(ids) == rows - 1
    assert len(ids) <= rows


def test_rows_after_dropping_empty_texts(frame: pd.DataFrame) -> None:
    counts = frame["corpus"].value_counts().to_dict()
    # Blitzer and UCI have no empty texts; women's clothing has 845 empty review texts.
    assert counts["blitzer"] == 8_000
    assert counts["uci_amazon_cells"] == 1_000
    assert counts["womens_clothing"] == 23_486 - 845
    assert counts["waimai_10k"] == 11_987
    assert counts["online_shopping_10_cats"] >= 62_774 - 5
    assert counts["ChnSentiCorp_htl_all"] >= 7_766 - 5
    assert (frame["text"].str.strip() != "").all()
    assert not frame["text"].str.contains("\ufeff").any()


def test_ids_unique_and_well_formed(frame: pd.DataFrame) -> None:
    assert frame["id"].is_unique
    assert frame["id"].map(corpora.corpus_of).eq(frame["corpus"]).all()


def test_label_vocabularies(frame: pd.DataFrame) -> None:
    assert set(frame["sentiment"]) <= set(SENTIMENTS)
    by_corpus = frame.groupby("corpus")["sentiment"].unique().map(set).to_dict()
    for corpus in ("online_shopping_10_cats", "waimai_10k", "ChnSentiCorp_htl_all", "blitzer"):
        assert by_corpus[corpus] == {"positive", "negative"}, corpus
    assert by_corpus["womens_clothing"] == set(SENTIMENTS)


def test_documented_label_distributions(frame: pd.DataFrame) -> None:
    counts = frame.groupby(["corpus", "sentiment"]).size()
    assert counts["waimai_10k", "positive"] == 4_000
    assert counts["uci_amazon_cells", "positive"] == counts["uci_amazon_cells", "negative"] == 500
    assert counts["blitzer", "positive"] == counts["blitzer", "negative"] == 4_000
    assert 5_300 <= counts["ChnSentiCorp_htl_all", "positive"] <= 5_350


def test_blitzer_file_polarity_and_rating(frame: pd.DataFrame) -> None:
    blitzer = frame[frame["corpus"] == "blitzer"]
    polarity = blitzer["id"].str.split("-").str[2]
    assert (polarity == blitzer["sentiment"]).all()
    assert (blitzer["category"] == blitzer["id"].str.split("-").str[1]).all()
    # positive = 4-5 stars, negative = 1-2 stars (3 stars were excluded by the authors).
    assert blitzer.loc[blitzer["sentiment"] == "positive", "rating"].isin([4.0, 5.0]).all()
    assert blitzer.loc[blitzer["sentiment"] == "negative", "rating"].isin([1.0, 2.0]).all()
    # Escaped quotes are decoded once, raw ampersands are kept. One kitchen review is
    # double-escaped in the source ("&amp;quot;"), so exactly one "&quot;" remains.
    assert blitzer["text"].str.contains("&quot;", regex=False).sum() == 1
    assert blitzer["text"].str.contains("AT&T", regex=False).any()


def test_womens_clothing_rating_mapping(frame: pd.DataFrame) -> None:
    clothing = frame[frame["corpus"] == "womens_clothing"]
    expected = clothing["rating"].map(
        {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}
    )
    assert (clothing["sentiment"] == expected).all()
    assert clothing["category"].notna().mean() > 0.99


def test_online_shopping_categories(frame: pd.DataFrame) -> None:
    shop = frame[frame["corpus"] == "online_shopping_10_cats"]
    assert shop["category"].nunique() == 10
    assert "酒店" in set(shop["category"])


def test_select_corpora(frame: pd.DataFrame) -> None:
    one = corpora.load_sentiment_corpora(SHARED, ["uci_amazon_cells"])
    assert set(one["corpus"]) == {"uci_amazon_cells"}
    expected = frame[frame["corpus"] == "uci_amazon_cells"].reset_index(drop=True)
    pd.testing.assert_frame_equal(one, expected)
    with pytest.raises(ValueError, match="unknown corpora"):
        corpora.load_sentiment_corpora(SHARED, ["nope"])


# ------------------------------------------------------------------- seed labels


def test_every_seed_id_resolves(seeds: pd.DataFrame, frame: pd.DataFrame) -> None:
    raw_ids = []
    for name in ("seed_zh.jsonl", "seed_en.jsonl"):
        lines = (SHARED / "labels" / name).read_text("utf-8").splitlines()
        raw_ids += [json.loads(line)["id"] for line in lines if line.strip()]
    assert len(seeds) == len(raw_ids)
    assert seeds["id"].is_unique
    assert set(seeds["id"]) <= set(frame["id"])
    assert seeds["text"].notna().all() and (seeds["text"] != "").all()
    texts = frame.set_index("id").loc[seeds["id"], "text"]
    assert (texts.to_numpy() == seeds["text"].to_numpy()).all()


def test_seed_columns_and_vocabularies(seeds: pd.DataFrame) -> None:
    assert list(seeds.columns) == list(corpora.SEED_COLUMNS)
    assert set(seeds["sentiment"]) <= set(SENTIMENTS)
    for dim in DIMENSIONS:
        assert set(seeds[dim]) <= set(DIM_LABELS), dim
    assert set(seeds["lang"]) == {"zh", "en"}


# ------------------------------------------------------------------- splits


def test_split_of_is_deterministic() -> None:
    ids = [f"waimai_10k-{i}" for i in range(200)]
    assert [corpora.split_of(i) for i in ids] == [corpora.split_of(i) for i in ids]
    assert corpora.split_of("x") in corpora.SPLITS
    other = [corpora.split_of(i, salt="another") for i in ids]
    assert other != [corpora.split_of(i) for i in ids]


def test_split_proportions_by_id(frame: pd.DataFrame) -> None:
    share = Counter(corpora.split_of(i) for i in frame["id"])
    total = sum(share.values())
    for name, target in zip(corpora.SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(share[name] / total - target) < 0.02, name


@pytest.mark.parametrize("corpus", SOURCE_ROWS)
def test_add_split_proportions_per_corpus(split_frame: pd.DataFrame, corpus: str) -> None:
    part = split_frame[split_frame["corpus"] == corpus]
    share = part["split"].value_counts(normalize=True)
    for name, target in zip(corpora.SPLITS, (0.8, 0.1, 0.1), strict=True):
        # UCI has only 1,000 rows: allow a little more sampling noise there.
        tolerance = 0.03 if len(part) < 5_000 else 0.02
        assert abs(share.get(name, 0.0) - target) < tolerance, (corpus, name)


def test_no_id_or_text_in_two_splits(frame: pd.DataFrame, split_frame: pd.DataFrame) -> None:
    split = split_frame
    assert split["id"].is_unique
    assert split.groupby("id")["split"].nunique().max() == 1
    # Duplicate texts (e.g. hotel reviews in two corpora) share one split: no test-set leakage.
    keys = split["text"].map(corpora.text_key)
    assert split.groupby(keys)["split"].nunique().max() == 1
    # Deterministic, independent of which corpora were loaded together.
    again = corpora.add_split(frame[frame["corpus"] == "ChnSentiCorp_htl_all"])
    merged = again.merge(split[["id", "split"]], on="id", suffixes=("", "_all"))
    assert (merged["split"] == merged["split_all"]).all()


def test_seed_split_matches_corpus_split(seeds: pd.DataFrame, split_frame: pd.DataFrame) -> None:
    seed_split = corpora.add_split(seeds).set_index("id")["split"]
    corpus_split = split_frame.set_index("id")["split"]
    assert (seed_split == corpus_split.loc[seed_split.index]).all()


def test_kfold(seeds: pd.DataFrame) -> None:
    folds = [corpora.kfold_of(i) for i in seeds["id"]]
    assert folds == [corpora.kfold_of(i) for i in seeds["id"]]
    assert set(folds) == set(range(5))
    assert min(Counter(folds).values()) > len(folds) / 5 * 0.8
    with_folds = corpora.add_split(seeds, folds=5)
    keys = with_folds["text"].map(corpora.text_key)
    assert with_folds.groupby(keys)["fold"].nunique().max() == 1
    with pytest.raises(ValueError):
        corpora.kfold_of("x", k=1)


def test_project_labels_join_their_texts_and_never_reach_held_out_rows(
    split_frame: pd.DataFrame, seeds: pd.DataFrame, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.training.data import dimension_rows, project_labelled_rows

    pick = pd.concat([split_frame[split_frame["split"] == s].head(3) for s in corpora.SPLITS])
    pick = pd.concat([pick, seeds.head(2)])  # a project label on a seed row is not used
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "mine.jsonl").write_text("\n".join(
        json.dumps({"id": i, "sentiment": "negative", "logistics": "negative",
                    "quality": "none", "service": "none", "privacy": "none"})
        for i in pick["id"]), encoding="utf-8")
    monkeypatch.setenv("REVSAT_DATA_DIR", str(tmp_path))
    rows = project_labelled_rows(SHARED, set(seeds["id"]))
    train_ids = set(pick.loc[pick["split"] == "train", "id"]) - set(seeds["id"])
    assert set(rows["id"]) == train_ids
    texts = split_frame.set_index("id").loc[rows["id"], "text"]
    assert (texts.to_numpy() == rows["text"].to_numpy()).all()
    dims = dimension_rows(SHARED, project_labels=True)
    assert set(dims.loc[dims["fold"] == -1, "split"]) == {"train"}
    assert train_ids <= set(dims["id"])
    assert not train_ids & set(dimension_rows(SHARED)["id"])  # opt-in
    # a label outside the guidelines' vocabulary is refused, naming the row
    (tmp_path / "labels" / "bad.jsonl").write_text(json.dumps(
        {"id": "waimai_10k-0", "sentiment": "angry", "logistics": "none", "quality": "none",
         "service": "none", "privacy": "none"}), encoding="utf-8")
    with pytest.raises(ValueError, match="angry"):
        project_labelled_rows(SHARED)


def test_shipped_project_labels_are_all_training_rows(seeds: pd.DataFrame) -> None:
    from pipeline.config import data_dir
    from pipeline.training.data import project_labelled_rows

    lines = [line for path in sorted((data_dir() / "labels").glob("*.jsonl"))
             for line in path.read_text("utf-8").splitlines()]
    rows = project_labelled_rows(SHARED, set(seeds["id"]))
    # every labelled row resolves, is in the train split and is not a seed row: none dropped
    assert len(rows) == len([line for line in lines if line.strip()])
    assert set(rows["lang"]) == {"zh", "en"}
