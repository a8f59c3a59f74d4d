"""The bilingual theme lexicon: terms per dimension and polarity, matched against a review's
tokens. Used as evidence in reports and as weak labels for training.

Matching is longest-first and non-overlapping: ``not fresh`` wins over ``fresh``. Chinese terms
match whole jieba tokens or token sequences (the user dictionary keeps lexicon terms whole);
English terms match whole words.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.catalog import DIMENSIONS
from pipeline.config import data_dir

POLARITIES = ("positive", "negative", "neutral")


@dataclass(frozen=True)
class Hit:
    """One lexicon term found in a review."""

    term: str
    dimension: str
    polarity: str


class Lexicon:
    """Terms keyed by their token sequence; see the module docstring for matching rules."""

    def __init__(self, entries: list[tuple[str, str, str]]) -> None:
        self.entries: dict[tuple[str, ...], Hit] = {}
        for term, dim, polarity in entries:
            if dim not in DIMENSIONS or polarity not in POLARITIES:
                raise ValueError(f"lexicon term {term!r}: bad dimension/polarity {dim}/{polarity}")
            key = self._key(term)
            if key:
                self.entries[key] = Hit(term, dim, polarity)
        self.max_len = max((len(k) for k in self.entries), default=0)

    @staticmethod
    def _key(term: str) -> tuple[str, ...]:
        from pipeline.text.normalise import detect_language
        from pipeline.text.segment import segment

        lang = detect_language(term)
        return tuple(segment(term, "zh" if lang in ("zh", "mixed") else "en"))

    @classmethod
    def load(cls, directory: Path | None = None) -> Lexicon:
        """Read every ``*.tsv`` (header ``term dimension polarity``) in ``data/lexicon``."""
        directory = directory or data_dir() / "lexicon"
        entries = []
        for path in sorted(directory.glob("*.tsv")):
            with path.open(encoding="utf-8") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    entries.append((row["term"].strip(), row["dimension"].strip(),
                                    row["polarity"].strip()))
        return cls(entries)

    def match(self, tokens: list[str]) -> list[Hit]:
        """Lexicon hits in ``tokens``, longest first, without overlaps."""
        hits, i = [], 0
        while i < len(tokens):
            for n in range(min(self.max_len, len(tokens) - i), 0, -1):
                hit = self.entries.get(tuple(tokens[i : i + n]))
                if hit is not None:
                    hits.append(hit)
                    i += n
                    break
            else:
                i += 1
        return hits

    def weak_labels(self, tokens: list[str]) -> dict[str, str]:
        """Per dimension: ``none`` without hits, the polarity when hits agree on one, ``neutral``
        when only neutral terms hit or positive and negative hits tie."""
        labels = {}
        hits = self.match(tokens)
        for dim in DIMENSIONS:
            pol = [h.polarity for h in hits if h.dimension == dim]
            if not pol:
                labels[dim] = "none"
                continue
            pos, neg = pol.count("positive"), pol.count("negative")
            labels[dim] = "positive" if pos > neg else "negative" if neg > pos else "neutral"
        return labels


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The shipped lexicon, loaded once per process."""
    return Lexicon.load()
