"""One model per language: a review is scored by the network trained for its language.

Set by ``"routes": {"zh": "<folder, relative to the model>"}`` in ``revsat_model.json``: reviews
whose detected language is a route's (``zh`` also takes ``mixed``, Chinese with English words,
as clause scoring does) go to that folder's model, every other review to the folder's own. A
3-layer network distilled for Chinese mixed reviews let its English heads drift (README,
Models); routing keeps each language's best network, and each review still passes through one
network, so throughput is unchanged. A route is loaded the first time a batch needs it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.models.heads import Classifier
from pipeline.models.transformer.clauses import CLAUSE_LANGS

#: Detected languages a route of a given language also takes (a Chinese route: the languages
#: clause scoring reads as Chinese).
ROUTE_LANGS: dict[str, frozenset[str]] = {"zh": CLAUSE_LANGS, "en": frozenset({"en"})}


def detected_languages(reviews: pd.DataFrame) -> np.ndarray:
    """Each review's detected language (column ``lang`` of a preprocessed batch; ``""`` for
    every review where the batch has none)."""
    return reviews["lang"].to_numpy() if "lang" in reviews else np.full(len(reviews), "")


class RoutedClassifier:
    """The folder's own classifier for most reviews, and one per routed language (loaded
    lazily by ``loaders[lang]()``, whose version is given up front: it is part of the model
    version, so score caches of the unrouted model are not reused)."""

    def __init__(self, main: Classifier, loaders: dict[str, Callable[[], Classifier]],
                 versions: dict[str, str]) -> None:
        self.main = main
        self.loaders = dict(loaders)
        self.routes: dict[str, Classifier] = {}
        self.version = main.version + "".join(f"|{lang}:{versions[lang]}"
                                              for lang in sorted(loaders))

    @property
    def transformer(self):
        """The folder's own network (what ``run.json`` states the engine and format of)."""
        return getattr(self.main, "transformer", self.main)

    @property
    def seconds(self) -> dict[str, float]:
        """Stage seconds summed over the folder's model and the loaded routes."""
        out: dict[str, float] = {}
        for clf in (self.main, *self.routes.values()):
            for stage, value in getattr(clf, "seconds", {}).items():
                out[stage] = out.get(stage, 0.0) + value
        return out

    def load_routes(self) -> None:
        """Load every route now, and what the folder's own model loads lazily (a warm-up: on a
        fresh machine this exports their graphs)."""
        getattr(self.main, "load_routes", lambda: None)()
        for lang in self.loaders:
            self._route(lang)

    def _route(self, lang: str) -> Classifier:
        if lang not in self.routes:
            self.routes[lang] = self.loaders[lang]()
        return self.routes[lang]

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each review's probabilities from the model of its language, in input order."""
        if not len(reviews):
            return self.main.predict_batch(reviews)
        detected = detected_languages(reviews)
        taken = np.zeros(len(reviews), bool)
        parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        for lang in sorted(self.loaders):
            rows = np.isin(detected, list(ROUTE_LANGS.get(lang, {lang})))
            if rows.any():
                parts.append((rows, self._route(lang).predict_batch(reviews[rows])))
                taken |= rows
        if not taken.all():
            parts.append((~taken, self.main.predict_batch(reviews[~taken])))
        if len(parts) == 1 and parts[0][0].all():
            return parts[0][1]
        out: dict[str, np.ndarray] = {}
        for rows, probs in parts:
            for head, block in probs.items():
                if head not in out:
                    out[head] = np.zeros((len(reviews), block.shape[1]), block.dtype)
                out[head][rows] = block
        return out
