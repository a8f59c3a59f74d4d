"""Normalise, detect language and segment a batch of validated reviews."""

from __future__ import annotations

import time

import pandas as pd

from pipeline.text.normalise import detect_language, normalise, to_simplified
from pipeline.text.segment import segment


def preprocess(reviews: pd.DataFrame, timings: dict[str, float] | None = None,
               max_chars: int | None = None) -> pd.DataFrame:
    """Add ``text_norm`` (model input), ``lang`` and ``tokens`` columns to ``reviews``.

    ``max_chars`` bounds the cost of very long reviews: only the first ``max_chars``
    characters of the normalised text are segmented (the transformer reads the same window;
    ``text`` is stored whole). ``None`` segments everything (training).

    The original ``text`` is kept untouched; segmentation reads a Simplified copy so that
    Traditional reviews hit the same dictionary and lexicon entries. When ``timings`` is
    given, seconds spent in ``normalise`` and ``segment`` are added to it.
    """
    t0 = time.perf_counter()
    out = reviews.copy()
    norm = [normalise(t) for t in out["text"]]
    langs = [detect_language(t) for t in norm]
    out["text_norm"] = norm
    out["lang"] = langs
    t1 = time.perf_counter()
    out["tokens"] = [
        segment(to_simplified(t[:max_chars]) if lang in ("zh", "mixed") else t[:max_chars],
                lang)
        for t, lang in zip(norm, langs, strict=True)
    ]
    if timings is not None:
        timings["normalise"] = timings.get("normalise", 0.0) + t1 - t0
        timings["segment"] = timings.get("segment", 0.0) + time.perf_counter() - t1
    return out
