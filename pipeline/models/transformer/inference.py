"""Batch inference with the multi-task transformer: tokenise a chunk once, read long reviews as
overlapping windows, batch by token count, run the backend, calibrate with each head's
temperature."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.models.heads import HEADS, length_batches, softmax, split_heads
from pipeline.models.transformer import clauses, combiner
from pipeline.models.transformer.backends import make_backend

if TYPE_CHECKING:  # torch loads only where the torch backend or training runs
    from pipeline.models.transformer.module import MultiTaskModel


class TransformerClassifier:
    """Batch inference: sort by length, pad per batch, backend forward, calibrated softmax.

    Load one with :func:`pipeline.models.load`; training builds one around a fresh module to
    calibrate it."""

    def __init__(self, model: MultiTaskModel | None, tokenizer, meta: dict, device: str = "cpu",
                 batch_size: int = 64, max_chars: int = 2000, backend: str = "torch",
                 threads: int | None = None, max_windows: int = 4, int8: bool = False,
                 engine=None, format_reason: str = "", bf16: bool = False) -> None:
        """``engine``: a ready backend (the ONNX graph of a folder); else one is made around
        ``model`` as ``backend`` says (``bf16``: the torch backend under bf16 autocast)."""
        self.backend = engine or make_backend(model, tokenizer, backend, device, threads, int8,
                                              bf16)
        self.numeric_format = self.backend.format
        self.format_reason = format_reason or "requested"
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = device
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.max_length = int(meta.get("max_length", 256))
        self.max_windows = max_windows
        self.prefix = meta.get("prefix", "query: ")
        self.temperatures = {k: float(v) for k, v in meta.get("temperatures", {}).items()}
        self.version = str(meta.get("version", meta.get("name", "transformer")))
        # Chinese reviews scored clause by clause (clauses.py); the model folder says so
        self.clauses = bool(meta.get("clauses", False))
        # the learned last step of clause scoring, where the folder has one (load.py sets it)
        self.combiner: combiner.Combiner | None = None
        self.seconds = {"tokenise": 0.0, "model": 0.0}

    @property
    def module(self) -> MultiTaskModel | None:
        """The torch module (None when ONNX Runtime holds the only copy of the weights)."""
        return getattr(self.backend, "model", None)

    def logits(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Uncalibrated logits per head, in input order.

        The whole chunk is tokenised in one call, then batched by *token* count: sorting by
        characters mixed 60-character English reviews (~15 tokens) with 60-character Chinese
        ones (~50 tokens) in one batch and padded the former to the latter's length. A review
        longer than ``max_length`` tokens is read as overlapping windows (see
        :meth:`_windows`) whose logits are combined per review.
        """
        if not len(texts):  # the tokeniser rejects an empty batch
            return {name: np.zeros((0, size), np.float32) for name, size in HEADS.items()}
        t0 = time.perf_counter()
        ids = self.tokenizer([self.prefix + t[: self.max_chars] for t in texts],
                             truncation=self.max_windows <= 1, max_length=self.max_length,
                             verbose=False)["input_ids"]  # long ones are windowed below
        rows, owner = self._windows(ids)
        lengths = np.fromiter((len(x) for x in rows), np.int64, len(rows))
        pad = self.tokenizer.pad_token_id or 0
        self.seconds["tokenise"] += time.perf_counter() - t0
        flat = np.zeros((len(rows), sum(HEADS.values())), np.float32)
        step = getattr(self.backend, "pad_to", 1)  # torch bf16: multiples of 16 tokens
        for idx in length_batches(lengths, self.batch_size):
            t1 = time.perf_counter()
            width = -(-int(lengths[idx].max()) // step) * step
            input_ids = np.full((len(idx), width), pad, np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : lengths[i]] = rows[i]
            mask = (np.arange(input_ids.shape[1]) < lengths[idx, None]).astype(np.int64)
            flat[idx] = self.backend(input_ids, mask)
            self.seconds["model"] += time.perf_counter() - t1
        settle = getattr(self.backend, "settle", None)  # torch: free pages back (backends.py)
        if settle is not None:
            settle()
        return combine_windows(split_heads(flat), owner, len(texts))

    def _windows(self, ids: list[list[int]]) -> tuple[list[list[int]], np.ndarray]:
        """Each review's token ids as one or more model inputs, and the review each came from.

        A review within ``max_length`` is one input. A longer one becomes windows of
        ``max_length`` tokens, each starting with the same special token and prefix, that
        overlap by at least a quarter; past ``max_windows`` windows they are spread evenly from
        the first token to the last. Reviews of several paragraphs often give their verdict at
        the end, which head-only truncation cut off.
        """
        if self.max_windows <= 1 or all(len(x) <= self.max_length for x in ids):
            return ids, np.arange(len(ids))
        head = self.tokenizer(self.prefix.rstrip())["input_ids"][:-1]  # [CLS] + prefix pieces
        width = self.max_length - len(head) - 1
        step = max(1, width - width // 4)
        rows, owner = [], []
        for i, x in enumerate(ids):
            if len(x) <= self.max_length:
                rows.append(x)
                owner.append(i)
                continue
            start = len(head) if x[: len(head)] == head else 1
            body, tail = x[start:-1], x[-1:]
            last = max(0, len(body) - width)
            # windows this stride needs, capped; spread evenly so the first and the last
            # tokens are always read even when the cap leaves gaps in the middle
            count = min(self.max_windows, -(-last // step) + 1)
            for s in np.linspace(0, last, count).round().astype(int).tolist():
                rows.append(head + body[s : s + width] + tail)
                owner.append(i)
        return rows, np.asarray(owner)

    def predict_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head for raw texts."""
        return {
            name: softmax(values / self.temperatures.get(name, 1.0))
            for name, values in self.logits(texts).items()
        }

    def predict_batch(self, reviews: pd.DataFrame) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head for ``reviews['text_norm']``; with clause scoring
        on (``"clauses": true`` in the model folder), Chinese reviews' dimension polarities come
        from their clauses (:mod:`pipeline.models.transformer.clauses`), and with a combiner
        (``combiner.json``) from :mod:`pipeline.models.transformer.combiner`."""
        if not self.clauses or "lang" not in reviews:
            return self.predict_texts(list(reviews["text_norm"]))
        reading = self.read(reviews, self.combiner.sentence_langs if self.combiner
                            else frozenset())
        return self.combiner.apply(reading) if self.combiner else reading.combined

    def read(self, reviews: pd.DataFrame,
             sentence_langs: frozenset[str] = frozenset()) -> combiner.Reading:
        """Score each review whole, then a second pass over the parts of the reviews where
        they can change a label (:func:`clauses.worth_splitting`): the clauses of Chinese
        reviews, and the sentences of reviews in ``sentence_langs``. Only Chinese clauses
        enter the clause rule (:func:`clauses.combine`); English sentences are for the
        combiner."""
        texts, langs = list(reviews["text_norm"]), list(reviews["lang"])
        whole = self.predict_texts(texts)
        rows, owner = clauses.expand(texts, langs, only=clauses.worth_splitting(whole),
                                     sentence_langs=sentence_langs)
        parts = owner >= 0
        owner = owner[parts]
        scored = self.predict_texts([r for r, p in zip(rows, parts, strict=True) if p])
        in_rule = np.isin(np.asarray(langs, dtype=object)[owner], list(clauses.CLAUSE_LANGS))
        if in_rule.any():
            probs = {name: np.concatenate([whole[name], scored[name][in_rule]]) for name in whole}
            combined = clauses.combine(
                probs, np.concatenate([np.arange(-1, -len(texts) - 1, -1), owner[in_rule]]),
                len(texts))
        else:
            combined = whole
        return combiner.Reading(whole, combined, scored, owner, langs)


def combine_windows(heads: dict[str, np.ndarray], owner: np.ndarray,
                    n: int) -> dict[str, np.ndarray]:
    """One row of logits per review from its windows' rows: the mean for overall sentiment
    (the verdict of the whole text); for a dimension, the window that mentions it most surely
    (largest margin of a polarity logit over ``none``), so one paragraph about delivery is not
    averaged away."""
    if len(owner) == n:
        return heads
    out = {}
    counts = np.bincount(owner, minlength=n).astype(np.float32)[:, None]
    for name, block in heads.items():
        if name == "sentiment":
            summed = np.zeros((n, block.shape[1]), np.float32)
            np.add.at(summed, owner, block)
            out[name] = summed / counts
            continue
        # margin of "mentioned" over "none": the largest other logit minus the none logit
        margin = block[:, 1:].max(axis=1) - block[:, 0]
        order = np.lexsort((-margin, owner))  # by review, most sure window first
        pick = order[np.unique(owner[order], return_index=True)[1]]
        out[name] = block[pick]
    return out
