"""The bench input says where its texts came from: with the corpora they are far longer."""

from __future__ import annotations

import pandas as pd

from revsat.bench import build_input


def test_bench_input_names_its_texts_and_their_length(tmp_path):
    figures = build_input(tmp_path / "bench.csv", 200, shared=tmp_path / "no-corpora")
    written = pd.read_csv(tmp_path / "bench.csv", dtype=str, keep_default_na=False)
    assert len(written) == 200
    assert figures["texts_from"] == "the bundled sample"
    assert figures["mean_chars"] == round(written["text"].str.len().mean(), 1)
