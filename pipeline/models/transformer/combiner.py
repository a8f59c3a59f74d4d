"""A learned last step that decides each dimension's polarity from how the review was read.

The network reads a review whole and, for Chinese, clause by clause (:mod:`.clauses`). Where a
dimension is praised in one clause and criticised in another, the guidelines call it
``neutral`` when the two weigh about equally and the dominant side otherwise, and a courier
complaint beside praise for the product is a logistics complaint whatever the overall tone:
the fixed clause rule gets many of these wrong (README, Models). The combiner is a multinomial
logistic regression per language over a few features of those readings (:func:`features`),
fitted by :mod:`pipeline.training.combiner_fit`; it only redistributes a dimension's polarity
mass: whether the dimension is mentioned (the ``none`` probability) stays the whole review's.
A language without coefficients keeps the clause rule; for English, a combiner would also read
each review's sentences (:attr:`Combiner.sentence_langs`).

Saved as ``combiner.json`` in the model folder: plain coefficients, read without scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.catalog import DIMENSIONS

FILE = "combiner.json"
#: The order of the polarity classes the combiner scores (the dimension heads' columns 1-3).
POLARITIES: tuple[str, ...] = ("positive", "negative", "neutral")
FEATURES: tuple[str, ...] = (
    "whole_positive", "whole_negative", "whole_neutral",          # the whole review's polarity
    "combined_positive", "combined_negative", "combined_neutral",  # the clause rule's polarity
    "part_max_positive", "part_max_negative", "part_max_neutral",  # the surest mentioning part
    "parts_positive", "parts_negative", "parts_neutral",           # mentioning parts per side
    "parts_mentioning", "has_parts",
    "sentiment_positive", "sentiment_negative", "sentiment_neutral",  # overall tone
)


@dataclass
class Reading:
    """How a batch of reviews was read: probabilities of the whole reviews, the clause rule's
    combination (:func:`.clauses.combine`), and every scored part (a Chinese clause or an
    English sentence) with the review it belongs to."""

    whole: dict[str, np.ndarray]
    combined: dict[str, np.ndarray]
    parts: dict[str, np.ndarray]
    owner: np.ndarray
    langs: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of reviews."""
        return len(self.whole["sentiment"])


def _polarity(block: np.ndarray) -> np.ndarray:
    """Columns positive/negative/neutral of a dimension block, as shares of its mention mass."""
    return block[:, 1:] / np.maximum(1.0 - block[:, 0], 1e-9)[:, None]


def features(reading: Reading, dim: str) -> np.ndarray:
    """One row of :data:`FEATURES` per review for dimension ``dim``."""
    n = reading.n
    out = np.zeros((n, len(FEATURES)))
    out[:, 0:3] = _polarity(reading.whole[dim])
    out[:, 3:6] = _polarity(reading.combined[dim])
    if len(reading.owner):
        block = reading.parts[dim]
        mentions = (1.0 - block[:, 0]) > 0.5
        polarity = _polarity(block)
        side = polarity.argmax(axis=1)
        owner = reading.owner
        for j in range(3):
            np.maximum.at(out[:, 6 + j], owner, np.where(mentions, polarity[:, j], 0.0))
            counts = np.zeros(n)
            np.add.at(counts, owner, mentions & (side == j))
            out[:, 9 + j] = np.minimum(counts, 3) / 3
        mentioning = np.zeros(n)
        np.add.at(mentioning, owner, mentions)
        out[:, 12] = np.minimum(mentioning, 4) / 4
        out[np.unique(owner), 13] = 1.0
    out[:, 14:17] = reading.whole["sentiment"]
    return out


def polarity_shares(coef: np.ndarray, intercept: np.ndarray, x: np.ndarray,
                    combined: np.ndarray) -> np.ndarray:
    """Positive / negative / neutral shares of the mention mass for feature rows ``x``.

    Three rows of coefficients (one per :data:`POLARITIES`) decide all three; two rows
    (positive, negative) only split the positive-plus-negative share of ``combined`` (a
    dimension block of the clause rule) and keep its neutral share."""
    z = x @ coef.T + intercept
    z = np.exp(z - z.max(axis=1, keepdims=True))
    share = z / z.sum(axis=1, keepdims=True)
    if coef.shape[0] == len(POLARITIES):
        return share
    base = _polarity(combined)
    polar = base[:, 0] + base[:, 1]
    return np.column_stack([polar * share[:, 0], polar * share[:, 1], base[:, 2]])


def resplit(block: np.ndarray, rows: np.ndarray, shares: np.ndarray) -> None:
    """Give ``rows`` of a dimension block (in place) ``shares`` of their mention mass as
    positive / negative / neutral; the ``none`` column stays."""
    block[rows, 1:] = (1.0 - block[rows, :1]) * shares


@dataclass
class Combiner:
    """Per-language coefficients (``coef[lang]``: classes × features, ``intercept[lang]``; two
    rows only split positive from negative, see :func:`polarity_shares`) and what they were
    fitted on (``info``); languages without coefficients keep the clause rule."""

    coef: dict[str, np.ndarray]
    intercept: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)
    digest: str = ""  # of the file it was read from: part of the model version (score cache)

    @property
    def tag(self) -> str:
        """What the combiner adds to the model version, e.g. ``pc-zh-1a2b3c4d``."""
        return "pc-" + "".join(sorted(self.coef)) + "-" + self.digest[:8]

    @property
    def languages(self) -> frozenset[str]:
        """Language codes the combiner decides (``zh`` covers ``mixed`` too)."""
        return frozenset(self.coef)

    @property
    def sentence_langs(self) -> frozenset[str]:
        """Languages whose reviews the combiner reads sentence by sentence (English, where it
        has English coefficients)."""
        return frozenset({"en"}) & self.languages

    def apply(self, reading: Reading) -> dict[str, np.ndarray]:
        """The combined probabilities with each dimension's polarity mass re-split by the
        combiner, for the reviews of its languages."""
        langs = np.asarray(["zh" if x == "mixed" else x for x in reading.langs])
        out = {name: block.copy() for name, block in reading.combined.items()}
        for dim in DIMENSIONS:
            x = features(reading, dim)
            for lang in self.coef:
                rows = langs == lang
                if rows.any():
                    resplit(out[dim], rows, polarity_shares(
                        self.coef[lang], self.intercept[lang], x[rows], out[dim][rows]))
        return out

    def save(self, directory: Path) -> Path:
        """Write ``combiner.json`` into a model folder."""
        path = Path(directory) / FILE
        body = {"features": list(FEATURES), "classes": list(POLARITIES),
                "coef": {k: v.round(6).tolist() for k, v in self.coef.items()},
                "intercept": {k: v.round(6).tolist() for k, v in self.intercept.items()},
                "info": self.info}
        path.write_text(json.dumps(body, indent=1, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> Combiner | None:
        """The combiner of a model folder, or None where it has none."""
        path = Path(directory) / FILE
        if not path.exists():
            return None
        text = path.read_text(encoding="utf-8")
        body = json.loads(text)
        if tuple(body["features"]) != FEATURES or tuple(body["classes"]) != POLARITIES:
            raise ValueError(f"{path}: written for other features; refit it "
                             "(revsat fit-combiner)")
        return cls({k: np.asarray(v) for k, v in body["coef"].items()},
                   {k: np.asarray(v) for k, v in body["intercept"].items()}, body.get("info", {}),
                   hashlib.sha1(text.encode()).hexdigest())
