"""Normalise, detect language and segment a batch of validated reviews."""

from __future__ import annotations

import pandas as pd

from pipeline.segment import segment
from pipeline.text import detect_language, normalise, to_simplified


def preprocess(reviews: pd.DataFrame) -> pd.DataFrame:
    """Add ``text_norm`` (model input), ``lang`` and ``tokens`` columns to ``reviews``.

    The original ``text`` is kept untouched; segmentation reads a Simplified copy so that
    Traditional reviews hit the same dictionary and lexicon entries.
    """
    out = reviews.copy()
    norm = [normalise(t) for t in out["text"]]
    langs = [detect_language(t) for t in norm]
    out["text_norm"] = norm
    out["lang"] = langs
    out["tokens"] = [
        segment(to_simplified(t) if lang in ("zh", "mixed") else t, lang)
        for t, lang in zip(norm, langs, strict=True)
    ]
    return out
