"""Loaders for the labelled review corpora in ``shared/`` that training and evaluation read.

Every loader returns one row per review with the columns in :data:`CORPUS_COLUMNS`:

``id``
    The row id used by ``shared/labels``: ``<file stem>-<0-based data row>`` for the Chinese
    CSVs, ``blitzer-<domain>-<positive|negative>-<i>`` (i-th ``<review>`` element of the file),
    ``womens_clothing-<i>`` (i-th data row) and ``uci_amazon_cells-<i>`` (i-th line).
    Ids count *every* source row; rows with an empty text are dropped only afterwards, so ids
    have gaps but always point at the same source row.
``corpus``, ``lang``
    Corpus name (see :data:`CORPORA`) and ``zh`` / ``en``.
``text``
    The review. Women's clothing and Blitzer reviews are ``"<title>. <body>"`` when a title
    exists. Stray BOMs are removed, CRLF becomes LF, and the text is stripped.
``sentiment``
    ``positive`` / ``negative`` / ``neutral``, from the corpus's own label (Chinese ``label``
    1/0, Blitzer file polarity, clothing rating 1-2/3/4-5, UCI 1/0).
``category``, ``rating``
    The corpus's category (online_shopping ``cat``, Blitzer domain, clothing
    ``department/class``) and star rating, or missing where the corpus has none.

Review texts are read from ``shared/`` at run time and are never copied into the project.

Splits
------
:func:`split_of` maps a key to ``train`` / ``dev`` / ``test`` (80/10/10) by a salted SHA-256
hash, so the split never depends on row order, on which corpora are loaded, or on rows added
later. :func:`add_split` hashes the *normalised text* (:func:`text_key`) rather than the id,
because the corpora overlap: about 6,900 of the 7,766 ChnSentiCorp hotel reviews reappear in
online_shopping_10_cats (category 酒店), and a few texts repeat within a corpus. Hashing the
text puts every copy of a review in the same split, so **a test row never appears in
training, not even under another id**. Seed labels are split the same way, so a seed
row's split always equals the split of its corpus row. :func:`kfold_of` (or
``add_split(seeds, folds=5)``, which keeps duplicate texts in one fold) gives cross-validation
folds, with their own salt and so independent of the split, for the seed labels.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS

#: Columns of every frame returned by :func:`load_sentiment_corpora`, in order.
CORPUS_COLUMNS: tuple[str, ...] = (
    "id",
    "corpus",
    "lang",
    "text",
    "sentiment",
    "category",
    "rating",
)

#: Columns of the frame returned by :func:`load_seed_labels`, in order.
SEED_COLUMNS: tuple[str, ...] = ("id", "corpus", "lang", "text", "sentiment", *DIMENSIONS)

#: Split names and their cumulative upper bounds on the unit interval (80/10/10).
SPLITS: tuple[str, ...] = ("train", "dev", "test")
_SPLIT_BOUNDS: tuple[float, ...] = (0.8, 0.9, 1.0)
DEFAULT_SALT = "revsat-v1"

_ZH_DIR = Path("datasets/zh")
_EN_DIR = Path("datasets/en")
_BLITZER_DOMAINS: tuple[str, ...] = ("books", "dvd", "electronics", "kitchen")
_BINARY = {"1": "positive", "0": "negative"}

# Blitzer: one regex for the elements, one per field; values sit on their own line.
_REVIEW_RE = re.compile(r"<review>(.*?)</review>", re.DOTALL)
_FIELD_RE = {
    name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL)
    for name in ("title", "review_text", "rating")
}
# Only well-formed character references are unescaped; raw "&" (AT&T, "&then") stays as is.
# Four reviews end a quotation with "&quot" and no semicolon, hence the second branch.
_ENTITY_RE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);|&quot(?![\w;])")


# --------------------------------------------------------------------------- helpers


def _clean(text: pd.Series) -> pd.Series:
    # online_shopping_10_cats has a BOM at the start of the first review of each block, and
    # the clothing CSV has CRLF inside quoted fields; neither carries meaning.
    return (
        text.fillna("")
        .astype(str)
        .str.replace("\ufeff", "", regex=False)
        .str.replace("\r\n", "\n", regex=False)
        .str.strip()
    )


def _join_title(title: pd.Series, body: pd.Series) -> pd.Series:
    """``"<title>. <body>"``; no extra period after a title that already ends a sentence."""
    title, body = _clean(title), _clean(body)
    ends = title.str.contains(r"[.!?\u3002\uff01\uff1f\u2026]$", regex=True)
    sep = np.where(ends, " ", ". ")
    joined = title + pd.Series(sep, index=title.index) + body
    # A title alone is not a review: an empty body keeps the row empty so that it is dropped.
    return joined.where((title != "") & (body != ""), body)


def _none_if_empty(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values != "", None)


def _binary_sentiment(labels: pd.Series, source: str) -> pd.Series:
    mapped = labels.astype(str).str.strip().map(_BINARY)
    if mapped.isna().any():
        bad = sorted(set(labels[mapped.isna()].astype(str)))[:5]
        raise ValueError(f"{source}: unexpected labels {bad}")
    return mapped


def _frame(
    ids: Sequence[str] | pd.Series,
    corpus: str,
    lang: str,
    text: pd.Series,
    sentiment: pd.Series,
    category: pd.Series | None = None,
    rating: pd.Series | None = None,
) -> pd.DataFrame:
    n = len(text)
    df = pd.DataFrame(
        {
            "id": list(ids),
            "corpus": corpus,
            "lang": lang,
            "text": text.to_numpy(),
            "sentiment": sentiment.to_numpy(),
            "category": category.to_numpy() if category is not None else [None] * n,
            "rating": rating.to_numpy(dtype=float) if rating is not None else np.full(n, np.nan),
        }
    )
    # Ids were assigned to every source row above; only now are empty texts dropped.
    return df[df["text"] != ""].reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as str with no NA guessing: "" stays "", and labels are compared as text.
    return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------- loaders


def _load_zh(stem: str) -> Callable[[Path], pd.DataFrame]:
    def load(shared: Path) -> pd.DataFrame:
        raw = _read_csv(shared / _ZH_DIR / f"{stem}.csv")
        category = _none_if_empty(raw["cat"]) if "cat" in raw else None
        return _frame(
            [f"{stem}-{i}" for i in range(len(raw))],
            stem,
            "zh",
            _clean(raw["review"]),
            _binary_sentiment(raw["label"], stem),
            category=category,
        )

    return load


def _load_blitzer(shared: Path) -> pd.DataFrame:
    parts = []
    for domain in _BLITZER_DOMAINS:
        for polarity in ("positive", "negative"):
            path = shared / _EN_DIR / "blitzer_mdsd" / domain / f"{polarity}.review"
            rows = [
                _blitzer_fields(m.group(1)) for m in _REVIEW_RE.finditer(path.read_text("utf-8"))
            ]
            raw = pd.DataFrame(rows, columns=["title", "review_text", "rating"])
            parts.append(
                _frame(
                    [f"blitzer-{domain}-{polarity}-{i}" for i in range(len(raw))],
                    "blitzer",
                    "en",
                    _join_title(raw["title"], raw["review_text"]),
                    pd.Series(polarity, index=raw.index),
                    category=pd.Series(domain, index=raw.index),
                    rating=pd.to_numeric(raw["rating"], errors="coerce"),
                )
            )
    return pd.concat(parts, ignore_index=True)


def _blitzer_fields(element: str) -> tuple[str, str, str]:
    values = []
    for regex in _FIELD_RE.values():
        match = regex.search(element)
        values.append(_unescape(match.group(1).strip()) if match else "")
    return values[0], values[1], values[2]


def _unescape(text: str) -> str:
    return _ENTITY_RE.sub(lambda m: html.unescape(m.group(0)), text)


def _load_womens_clothing(shared: Path) -> pd.DataFrame:
    raw = _read_csv(
        shared / _EN_DIR / "womens_clothing_ecommerce/womens_clothing_ecommerce_reviews.csv"
    )
    rating = pd.to_numeric(raw["Rating"], errors="coerce")
    sentiment = pd.Series(
        np.select([rating <= 2, rating == 3, rating >= 4], ["negative", "neutral", "positive"], ""),
        index=raw.index,
    )
    if (sentiment == "").any():
        raise ValueError("womens_clothing: rows without a 1-5 rating")
    dept, cls = _clean(raw["Department Name"]), _clean(raw["Class Name"])
    category = _none_if_empty((dept + "/" + cls).str.strip("/"))
    # The id counts data rows (the CSV's unnamed first column is the same 0-based index).
    return _frame(
        [f"womens_clothing-{i}" for i in range(len(raw))],
        "womens_clothing",
        "en",
        _join_title(raw["Title"], raw["Review Text"]),
        sentiment,
        category=category,
        rating=rating,
    )


def _load_uci_amazon_cells(shared: Path) -> pd.DataFrame:
    path = shared / _EN_DIR / "uci_amazon_cells/amazon_cells_labelled.txt"
    # split("\n"), not splitlines(): ids are line numbers and must not shift on odd characters.
    lines = path.read_text("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    pairs = [line.rstrip("\r").rpartition("\t") for line in lines]
    text = pd.Series([p[0] for p in pairs], dtype=object)
    return _frame(
        [f"uci_amazon_cells-{i}" for i in range(len(pairs))],
        "uci_amazon_cells",
        "en",
        _clean(text),
        _binary_sentiment(pd.Series([p[2] for p in pairs]), "uci_amazon_cells"),
    )


#: Corpus name -> loader. Names are also the id prefixes.
_LOADERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "online_shopping_10_cats": _load_zh("online_shopping_10_cats"),
    "waimai_10k": _load_zh("waimai_10k"),
    "ChnSentiCorp_htl_all": _load_zh("ChnSentiCorp_htl_all"),
    "blitzer": _load_blitzer,
    "womens_clothing": _load_womens_clothing,
    "uci_amazon_cells": _load_uci_amazon_cells,
}

#: Names of the corpora :func:`load_sentiment_corpora` knows, in load order.
CORPORA: tuple[str, ...] = tuple(_LOADERS)


def corpus_of(row_id: str) -> str:
    """Return the corpus name a row id belongs to (``blitzer-books-positive-3`` -> ``blitzer``)."""
    for name in CORPORA:
        if row_id.startswith(name + "-"):
            return name
    raise ValueError(f"unknown corpus in row id {row_id!r}")


def load_sentiment_corpora(shared: Path, corpora: Sequence[str] | None = None) -> pd.DataFrame:
    """Load the labelled sentiment corpora (all, or those named) into one frame.

    Columns are :data:`CORPUS_COLUMNS`; rows with an empty text are dropped after the ids are
    assigned. Raises ValueError for an unknown corpus name and FileNotFoundError when a file
    is missing.
    """
    names = list(CORPORA if corpora is None else corpora)
    unknown = sorted(set(names) - set(CORPORA))
    if unknown:
        raise ValueError(f"unknown corpora {unknown}; known: {list(CORPORA)}")
    shared = Path(shared)
    frames = [_LOADERS[name](shared) for name in dict.fromkeys(names)]
    return pd.concat(frames, ignore_index=True)[list(CORPUS_COLUMNS)]


def load_seed_labels(shared: Path) -> pd.DataFrame:
    """Load ``labels/seed_zh.jsonl`` and ``seed_en.jsonl`` with their text joined from the corpora.

    Columns are :data:`SEED_COLUMNS`. Only the corpora the seed ids refer to are read.
    Raises ValueError listing ids that do not resolve to a non-empty corpus text, duplicate
    ids, and labels outside the vocabularies of :mod:`pipeline.catalog`.
    """
    shared = Path(shared)
    return load_labels_by_id([shared / "labels" / name
                              for name in ("seed_zh.jsonl", "seed_en.jsonl")], shared, "seed")


def load_labels_by_id(paths: Sequence[Path], shared: Path, what: str = "label") -> pd.DataFrame:
    """Labels keyed by corpus row id (the seed format) with their text joined from the corpora.

    Same checks and columns as :func:`load_seed_labels`; ``what`` names the files in errors.
    """
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            records.extend(json.loads(line) for line in fh if line.strip())
    labels = pd.DataFrame.from_records(records, columns=["id", "sentiment", *DIMENSIONS])

    dup = labels["id"][labels["id"].duplicated()]
    if len(dup):
        raise ValueError(f"duplicate {what} ids: {sorted(set(dup))[:20]}")
    _check_vocab(labels, "sentiment", SENTIMENTS)
    for dim in DIMENSIONS:
        _check_vocab(labels, dim, DIM_LABELS)

    try:
        needed = sorted({corpus_of(i) for i in labels["id"]}, key=CORPORA.index)
    except ValueError as err:
        raise ValueError(f"{what} labels: {err}") from err
    texts = load_sentiment_corpora(shared, needed)[["id", "corpus", "lang", "text"]]
    merged = labels.merge(texts, on="id", how="left", validate="one_to_one")
    missing = merged.loc[merged["text"].isna(), "id"].tolist()
    if missing:
        raise ValueError(f"{len(missing)} {what} ids do not resolve to a corpus text: "
                         f"{missing[:20]}")
    return merged[list(SEED_COLUMNS)]


def _check_vocab(df: pd.DataFrame, column: str, allowed: Sequence[str]) -> None:
    bad = df.loc[~df[column].isin(allowed), ["id", column]]
    if len(bad):
        raise ValueError(
            f"{column}: labels outside {list(allowed)}: {bad.head(10).values.tolist()}"
        )


# --------------------------------------------------------------------------- splits


def _unit_hash(key: str, salt: str) -> float:
    """A stable number in [0, 1) from a salted SHA-256 (Python's hash() is randomised)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(row_id: str, salt: str = DEFAULT_SALT) -> str:
    """Return ``train`` / ``dev`` / ``test`` (80/10/10) for a key, deterministically.

    The key is a row id or, as :func:`add_split` uses it, a :func:`text_key`. Changing
    ``salt`` draws a new, independent split.
    """
    u = _unit_hash(row_id, salt)
    return next(name for name, bound in zip(SPLITS, _SPLIT_BOUNDS, strict=True) if u < bound)


def kfold_of(row_id: str, k: int = 5, salt: str = DEFAULT_SALT) -> int:
    """Return a cross-validation fold in ``range(k)`` for a key, deterministically.

    Uses its own salt, so folds are independent of :func:`split_of`. Pass a
    :func:`text_key` instead of the id to keep duplicate texts in one fold.
    """
    if k < 2:
        raise ValueError("k must be at least 2")
    return int(_unit_hash(row_id, f"{salt}:kfold") * k)


def text_key(text: str) -> str:
    """Normalise a text for duplicate detection: NFKC, case-folded, whitespace and BOMs removed."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split()).replace("\ufeff", "")


def add_split(
    df: pd.DataFrame, salt: str = DEFAULT_SALT, by: str = "text", folds: int | None = None
) -> pd.DataFrame:
    """Return a copy of ``df`` with a ``split`` column (``train`` / ``dev`` / ``test``).

    ``by="text"`` (default) hashes :func:`text_key` of the ``text`` column, so that every copy
    of a review lands in the same split whatever its id or corpus; ``by="id"`` hashes the
    ``id`` column as :func:`split_of` does. With ``folds=k`` a ``fold`` column from
    :func:`kfold_of` on the same key is added too, so duplicates also share a fold.
    """
    if by == "text":
        keys = df["text"].map(text_key)
    elif by == "id":
        keys = df["id"]
    else:
        raise ValueError(f"by must be 'text' or 'id', not {by!r}")
    out = df.copy()
    # Hash each distinct key once: a sixth of the Chinese rows are cross-corpus duplicates.
    unique = pd.unique(keys)
    out["split"] = keys.map({key: split_of(key, salt) for key in unique}).to_numpy()
    if folds is not None:
        out["fold"] = keys.map({key: kfold_of(key, folds, salt) for key in unique}).to_numpy()
    return out
