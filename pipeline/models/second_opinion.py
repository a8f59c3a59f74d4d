"""A second, deeper reading for the reviews where the dimension labels are hardest.

Set by ``"second_opinion": {"model": "<folder, relative to the model>", "languages": ["en"],
"when_mentioned": ["logistics", "service", "privacy"]}`` in ``revsat_model.json``. Every review
is first scored by the folder's own model. A review of one of ``languages`` where that reading
names one of ``when_mentioned`` (its most probable label is not ``none``) is read again by the
second model, and takes that model's reading of every dimension the first reading names: the
second reading may decide the polarity again or find a dimension not mentioned after all, but
never adds a dimension. On the dev rows this scored better than taking all four of its
readings, and it cannot raise a privacy alarm the first reading did not. Overall sentiment
stays the first model's.

Why: the English 3-layer network reads courier, seller and privacy complaints beside praise for
the product as praise ("Great quality headphones. Delivery was late by a week…": logistics
positive); the 6-layer ``accurate`` network reads them better but runs at about half the speed.
Those dimensions are named in a small share of real English reviews (8 % of the natural test
set), so the second reading costs little time (README, Models).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.models.heads import Classifier
from pipeline.models.routed import detected_languages


class SecondOpinionClassifier:
    """``first`` for every review; ``load_second()`` (loaded when a batch first needs it, its
    version given up front: part of the model version, so score caches are not mixed) for the
    dimensions of the reviews :meth:`wanted` picks."""

    def __init__(self, first: Classifier, load_second: Callable[[], Classifier],
                 second_version: str, languages: Sequence[str],
                 when_mentioned: Sequence[str]) -> None:
        unknown = sorted(set(when_mentioned) - set(DIMENSIONS))
        if unknown:
            raise ValueError(f"second_opinion: unknown dimensions {unknown}; use {DIMENSIONS}")
        self.first = first
        self.load_second = load_second
        self.second: Classifier | None = None
        self.languages = frozenset(languages)
        self.when_mentioned = tuple(when_mentioned)
        self.version = f"{first.version}|2nd:{second_version}"
        self.reread = 0  # reviews read twice so far (for logs and benchmarks)
        self._seconds: dict[str, float] = {}

    @property
    def transformer(self):
        """The first model's network (what ``run.json`` states the engine and format of)."""
        return getattr(self.first, "transformer", self.first)

    @property
    def seconds(self) -> dict[str, float]:
        """Stage seconds of the first model, plus ``second_opinion`` for the second reading."""
        out = dict(getattr(self.first, "seconds", {}))
        out.update(self._seconds)
        return out

    def load_routes(self) -> None:
        """Load the second model now (a warm-up: on a fresh machine this exports its graph)."""
        if self.second is None:
            self.second = self.load_second()

    def wanted(self, reviews: pd.DataFrame, named: dict[str, np.ndarray]) -> np.ndarray:
        """Reviews of the second model's languages whose first reading names (``named``: per
        dimension, whether each review's most probable label is not ``none``) a
        ``when_mentioned`` dimension."""
        hard = np.column_stack([named[dim] for dim in self.when_mentioned]).any(axis=1)
        return np.isin(detected_languages(reviews), list(self.languages)) & hard

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """The first model's probabilities, with the dimensions of :meth:`wanted` reviews
        that the first reading names replaced by the second model's."""
        probs = self.first.predict_batch(reviews)
        named = {dim: probs[dim].argmax(axis=1) != 0 for dim in DIMENSIONS}  # column 0: none
        rows = self.wanted(reviews, named)
        if not rows.any():
            return probs
        t0 = time.perf_counter()
        self.load_routes()
        again = self.second.predict_batch(reviews[rows])
        out = dict(probs)
        for dim in DIMENSIONS:
            take = named[dim][rows]
            out[dim] = probs[dim].copy()
            out[dim][np.flatnonzero(rows)[take]] = again[dim][take]
        self.reread += int(rows.sum())
        self._seconds["second_opinion"] = (self._seconds.get("second_opinion", 0.0)
                                           + time.perf_counter() - t0)
        return out
