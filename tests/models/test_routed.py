"""Per-language routing: each review scored by the network of its language, in input order."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.catalog import DIMENSIONS
from pipeline.config import Settings, models_dir
from pipeline.errors import ModelNotFound
from pipeline.models.load import load
from pipeline.models.routed import RoutedClassifier
from pipeline.text.preprocess import preprocess


class Constant:
    """A fake classifier whose every probability row is ``value`` (and counts its calls)."""

    def __init__(self, value: float, version: str) -> None:
        self.value, self.version, self.calls = value, version, []
        self.seconds = {"model": 1.0}

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        self.calls.append(list(reviews["text_norm"]))
        n = len(reviews)
        return {"sentiment": np.full((n, 3), self.value),
                **{d: np.full((n, 4), self.value) for d in DIMENSIONS}}


def frame(langs: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text_norm": [f"t{i}" for i in range(len(langs))], "lang": langs})


def test_each_review_goes_to_the_model_of_its_language_in_order():
    main, zh = Constant(0.1, "m"), Constant(0.9, "z")
    routed = RoutedClassifier(main, {"zh": lambda: zh}, {"zh": "z-1"})
    out = routed.predict_batch(frame(["en", "zh", "mixed", "other", "zh"]))
    assert out["quality"][:, 0].tolist() == [0.1, 0.9, 0.9, 0.1, 0.9]
    assert zh.calls == [["t1", "t2", "t4"]] and main.calls == [["t0", "t3"]]
    assert routed.version == "m|zh:z-1"
    assert routed.seconds == {"model": 2.0}


def test_a_route_is_loaded_only_when_a_batch_needs_it():
    loaded = []
    routed = RoutedClassifier(Constant(0.1, "m"),
                              {"zh": lambda: loaded.append(1) or Constant(0.9, "z")},
                              {"zh": "z"})
    routed.predict_batch(frame(["en", "en"]))
    assert not loaded
    assert len(routed.predict_batch(frame([]))["sentiment"]) == 0
    routed.predict_batch(frame(["zh"]))
    routed.predict_batch(frame(["zh"]))
    assert loaded == [1]


def test_a_route_to_a_folder_without_a_model_is_a_clear_error(tmp_path):
    folder = tmp_path / "default"
    shutil.copytree(models_dir() / "default", folder)
    meta = json.loads((folder / "revsat_model.json").read_text(encoding="utf-8"))
    meta["routes"] = {"zh": "../nowhere"}
    meta.pop("second_opinion", None)
    meta["ensemble"]["baseline"] = str(models_dir() / "baseline")
    (folder / "revsat_model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelNotFound, match="route 'zh'"):
        load(folder)


def test_a_model_folder_copied_without_its_baseline_is_a_clear_error(tmp_path):
    folder = tmp_path / "default"  # ../baseline, which its revsat_model.json names, is missing
    shutil.copytree(models_dir() / "default", folder)
    with pytest.raises(ModelNotFound, match="holds no baseline model"):
        load(folder)


@pytest.mark.skipif(not (models_dir() / "default" / "model.safetensors").is_file(),
                    reason="no shipped default")
def test_shipped_default_reads_chinese_with_its_chinese_route_and_english_with_its_own():
    meta = json.loads((models_dir() / "default" / "revsat_model.json").read_text("utf-8"))
    route = (models_dir() / "default" / meta["routes"]["zh"]).resolve()
    rows = preprocess(pd.DataFrame({"text": [
        "快递把箱子压坏了，外包装全是破洞，做工扎实，手感很好",
        "The dress is lovely but the courier left it in the rain.",
        "物流很快，质量一般，客服态度太差了"]}))
    assert (route / "README.md").is_file()
    assert sum(f.stat().st_size for f in route.iterdir()) <= 60e6
    # fp32: bf16 (auto on AMX machines) differs by about 1e-3 with the batch's other rows
    fp32 = Settings(numeric_format="fp32")
    own = load("default", fp32)
    assert isinstance(own, RoutedClassifier)
    routed = own.predict_batch(rows)
    alone = load(route, fp32).predict_batch(rows)
    main = own.main.predict_batch(rows)
    zh = (rows["lang"] != "en").to_numpy()
    assert zh.tolist() == [True, False, True]
    for head in routed:
        np.testing.assert_allclose(routed[head][zh], alone[head][zh], atol=1e-5)
        np.testing.assert_allclose(routed[head][~zh], main[head][~zh], atol=1e-5)
    # the folder and its route average with one baseline, loaded once; a release drops it
    from pipeline.models.load import shared_baseline
    from pipeline.run.part import release_classifiers

    assert own.routes["zh"].baseline is own.main.first.baseline
    release_classifiers()
    assert shared_baseline.cache_info().currsize == 0
