"""The second reading: the dimensions of the reviews that name a hard dimension, read again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.catalog import DIMENSIONS
from pipeline.config import models_dir
from pipeline.errors import ModelNotFound
from pipeline.models.load import load
from pipeline.models.second_opinion import SecondOpinionClassifier


class Reader:
    """A fake classifier: every row gets ``labels[text]`` per dimension (index into none /
    positive / negative / neutral), with certainty; it records the texts it read."""

    def __init__(self, labels: dict[str, dict[str, int]], version: str,
                 sentiment: float = 0.2) -> None:
        self.labels, self.version, self.sentiment = labels, version, sentiment
        self.calls: list[list[str]] = []
        self.seconds = {"model": 1.0}

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        texts = list(reviews["text_norm"])
        self.calls.append(texts)
        out = {"sentiment": np.full((len(texts), 3), self.sentiment)}
        for dim in DIMENSIONS:
            out[dim] = np.eye(4)[[self.labels.get(t, {}).get(dim, 0) for t in texts]]
        return out


def frame(texts: list[str], langs: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text_norm": texts, "lang": langs})


def test_only_reviews_of_its_languages_that_name_a_hard_dimension_are_read_again():
    first = Reader({"a": {"quality": 1}, "b": {"quality": 1, "logistics": 1},
                    "c": {"service": 2}, "d": {"logistics": 1}}, "f")
    second = Reader({"b": {"quality": 1, "logistics": 2}, "c": {"service": 2, "quality": 2}},
                    "s", sentiment=0.9)
    clf = SecondOpinionClassifier(first, lambda: second, "s-1", ["en"],
                                  ["logistics", "service", "privacy"])
    out = clf.predict_batch(frame(["a", "b", "c", "d"], ["en", "en", "en", "zh"]))
    assert second.calls == [["b", "c"]]
    # b's courier complaint comes from the second model; a (quality only) and d (Chinese)
    # keep the first reading
    assert out["logistics"].argmax(axis=1).tolist() == [0, 2, 0, 1]
    # the second reading never adds a dimension the first did not name (c's quality)
    assert out["quality"].argmax(axis=1).tolist() == [1, 1, 0, 0]
    # overall sentiment is always the first model's
    np.testing.assert_allclose(out["sentiment"], 0.2)
    assert clf.version == "f|2nd:s-1"
    assert clf.reread == 2
    assert set(clf.seconds) == {"model", "second_opinion"}


def test_the_second_reading_can_drop_a_mention():
    first = Reader({"x": {"service": 1, "logistics": 1}}, "f")
    clf = SecondOpinionClassifier(first, lambda: Reader({"x": {"service": 2}}, "s"), "s",
                                  ["en"], ["service"])
    out = clf.predict_batch(frame(["x"], ["en"]))
    assert out["service"].argmax() == 2 and out["logistics"].argmax() == 0


def test_the_second_model_is_loaded_only_when_a_batch_needs_it():
    loaded = []
    first = Reader({"x": {"service": 1}}, "f")
    clf = SecondOpinionClassifier(first, lambda: loaded.append(1) or Reader({}, "s"), "s",
                                  ["en"], ["service"])
    clf.predict_batch(frame(["y", "z"], ["en", "en"]))
    clf.predict_batch(frame(["x"], ["zh"]))
    assert len(clf.predict_batch(frame([], []))["sentiment"]) == 0
    assert not loaded
    clf.predict_batch(frame(["x"], ["en"]))
    clf.predict_batch(frame(["x"], ["en"]))
    assert loaded == [1]


def test_an_unknown_dimension_is_refused():
    with pytest.raises(ValueError, match="unknown dimensions"):
        SecondOpinionClassifier(Reader({}, "f"), lambda: Reader({}, "s"), "s", ["en"],
                                ["shipping"])


def test_a_second_opinion_folder_without_a_model_is_a_clear_error(tmp_path):
    folder = tmp_path / "default"
    shutil.copytree(models_dir() / "default", folder)
    meta = json.loads((folder / "revsat_model.json").read_text(encoding="utf-8"))
    meta["second_opinion"] = {"model": "../nowhere"}
    meta["ensemble"]["baseline"] = str(models_dir() / "baseline")
    meta.pop("routes", None)
    (folder / "revsat_model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelNotFound, match="second_opinion"):
        load(folder)


@pytest.mark.skipif(not (models_dir() / "default" / "model.safetensors").is_file(),
                    reason="no shipped default")
def test_shipped_default_reads_a_courier_complaint_beside_praise_again_and_gets_it():
    from pipeline.config import Settings
    from pipeline.text.preprocess import preprocess

    rows = preprocess(pd.DataFrame({"text": [
        "Great quality headphones. Delivery was late by a week and nobody answered my emails.",
        "Soft fabric, fits true to size, I love the colour.",
        "物流很慢，等了一个星期，不过质量很好"]}))
    own = load("default", Settings(numeric_format="fp32"))
    second = own.main
    assert isinstance(second, SecondOpinionClassifier)
    out = own.predict_batch(rows)
    labels = {d: out[d].argmax(axis=1).tolist() for d in DIMENSIONS}
    assert labels["logistics"][0] == 2 and labels["service"][0] == 2  # negative, negative
    assert labels["quality"][0] == 1
    # only the English review that names logistics or service was read twice
    assert second.reread == 1
    alone = second.first.predict_batch(rows.iloc[[0]])
    assert alone["logistics"].argmax() != 2  # what the first reading alone gets wrong
