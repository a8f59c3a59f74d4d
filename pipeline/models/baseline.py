"""TF-IDF + logistic-regression baseline with the same ``predict_batch`` as the transformer.

One shared TF-IDF space over token uni- and bi-grams (jieba words for Chinese, words for
English) and one multinomial logistic regression per output: overall sentiment and each
dimension. It is the fast fallback (``--model baseline``) and the comparison point for the
transformer. Saved as ``model.json`` + ``weights.npz``: loading never unpickles.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS
from pipeline.models.heads import softmax

FORMAT = "revsat-baseline/1"


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def _ngrams(tokens: Sequence[str]) -> list[str]:
    """Unigrams plus adjacent bigrams (joined with a space so 'not good' stays readable)."""
    grams = list(tokens)
    grams.extend(f"{a} {b}" for a, b in itertools.pairwise(tokens))
    return grams


class TfidfSpace:
    """What ``TfidfVectorizer(analyzer=identity, sublinear_tf=True).transform`` computes
    (1 + log term count, times idf, rows L2-normalised; unknown terms ignored), without
    importing scikit-learn at scoring time (seconds of start-up)."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray) -> None:
        self.vocabulary_ = vocabulary
        self.idf_ = idf

    def transform(self, docs: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        vocab = self.vocabulary_
        indptr = [0]
        indices: list[int] = []
        counts: list[int] = []
        for doc in docs:
            row: dict[int, int] = {}
            for term in doc:
                j = vocab.get(term)
                if j is not None:
                    row[j] = row.get(j, 0) + 1
            for j in sorted(row):
                indices.append(j)
                counts.append(row[j])
            indptr.append(len(indices))
        data = np.log(np.asarray(counts, dtype=np.float64)) + 1.0
        ind = np.asarray(indices, dtype=np.int32)
        data *= self.idf_[ind]
        x = sparse.csr_matrix((data, ind, np.asarray(indptr, dtype=np.int64)),
                              shape=(len(indptr) - 1, len(self.idf_)))
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        x.data /= np.repeat(norms, np.diff(x.indptr))
        return x


class BaselineModel:
    """Scikit-learn baseline with the estimator API (``fit``, ``predict_proba``; nothing happens
    in ``__init__``). Outputs: ``sentiment`` and one per dimension. It is also a
    :class:`~pipeline.models.heads.Classifier` (``version``, ``predict_batch``)."""

    def __init__(self, c_sentiment: float = 4.0, c_dimension: float = 2.0,
                 max_features: int = 150_000) -> None:
        self.c_sentiment = c_sentiment
        self.c_dimension = c_dimension
        self.max_features = max_features
        self.vectorizer = None  # sklearn's TfidfVectorizer when fitted, TfidfSpace when loaded
        self.heads: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (coef, intercept)
        self.metadata: dict = {}

    @property
    def version(self) -> str:
        """The model version recorded in ``reviews.model_version``."""
        return str(self.metadata.get("version", "baseline"))

    def _features(self, tokens: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        assert self.vectorizer is not None, "model is not fitted"
        return self.vectorizer.transform([_ngrams(t) for t in tokens])

    def fit(
        self,
        sentiment_tokens: Sequence[Sequence[str]],
        sentiment_labels: Sequence[str],
        dimension_tokens: Sequence[Sequence[str]],
        dimension_labels: dict[str, Sequence[str]],
    ) -> BaselineModel:
        """Fit the shared TF-IDF space on all texts, then one classifier per output."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(
            analyzer=_identity, min_df=2, max_features=self.max_features, sublinear_tf=True
        )
        self.vectorizer.fit([_ngrams(t) for t in [*sentiment_tokens, *dimension_tokens]])
        x_sent = self._features(sentiment_tokens)
        self.heads["sentiment"] = self._fit_head(
            x_sent, sentiment_labels, SENTIMENTS, self.c_sentiment, balanced=False
        )
        x_dim = self._features(dimension_tokens)
        for dim in DIMENSIONS:
            self.heads[dim] = self._fit_head(
                x_dim, dimension_labels[dim], DIM_LABELS, self.c_dimension, balanced=True
            )
        return self

    @staticmethod
    def _fit_head(x, labels, classes, c, balanced) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels)
        clf = LogisticRegression(
            C=c, max_iter=2000, class_weight="balanced" if balanced else None
        )
        clf.fit(x, y)
        # Re-lay rows in the schema's class order; classes never seen get -inf logits.
        coef = np.zeros((len(classes), x.shape[1]), dtype=np.float32)
        intercept = np.full(len(classes), -1e4, dtype=np.float32)
        fitted = list(clf.classes_)
        if len(fitted) == 2:  # sklearn stores one row for binary problems
            pos = classes.index(fitted[1])
            neg = classes.index(fitted[0])
            coef[pos], intercept[pos] = clf.coef_[0] / 2, clf.intercept_[0] / 2
            coef[neg], intercept[neg] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
        else:
            for row, label in enumerate(fitted):
                idx = classes.index(label)
                coef[idx], intercept[idx] = clf.coef_[row], clf.intercept_[row]
        return coef, intercept

    def predict_proba(self, tokens: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Probabilities per output: ``sentiment`` (n, 3) in SENTIMENTS order, each dimension
        (n, 4) in DIM_LABELS order."""
        x = self._features(tokens)
        return {name: softmax(np.asarray(x @ coef.T) + intercept)
                for name, (coef, intercept) in self.heads.items()}

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """:meth:`predict_proba` of the reviews' ``tokens`` (the :class:`Classifier` call)."""
        return self.predict_proba(list(reviews["tokens"]))

    def save(self, directory: Path) -> Path:
        """Write ``model.json`` and ``weights.npz`` into ``directory``."""
        assert self.vectorizer is not None, "model is not fitted"
        directory.mkdir(parents=True, exist_ok=True)
        vocab = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        (directory / "model.json").write_text(
            json.dumps(
                {"format": FORMAT, "vocabulary": vocab, "heads": list(self.heads),
                 "metadata": self.metadata},
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
        arrays = {"idf": self.vectorizer.idf_.astype(np.float32)}
        for name, (coef, intercept) in self.heads.items():
            arrays[f"{name}.coef"] = coef
            arrays[f"{name}.intercept"] = intercept
        np.savez_compressed(directory / "weights.npz", **arrays)
        return directory

    @classmethod
    def load(cls, directory: Path) -> BaselineModel:
        """Load a model written by :meth:`save` (JSON and npz; no pickle is ever read)."""
        meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} model")
        model = cls()
        with np.load(directory / "weights.npz", allow_pickle=False) as weights:
            model.vectorizer = TfidfSpace(
                {term: i for i, term in enumerate(meta["vocabulary"])},
                weights["idf"].astype(np.float64))
            model.heads = {
                name: (weights[f"{name}.coef"], weights[f"{name}.intercept"])
                for name in meta["heads"]
            }
        model.metadata = meta.get("metadata", {})
        return model
