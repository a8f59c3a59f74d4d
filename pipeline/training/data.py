"""Training and evaluation sets assembled from the shared corpora, the seed labels, the
project's own labels of corpus rows (``data/labels/``), its hand-written examples
(``data/train_extra/``), its contrast set (``data/contrast/``, evaluation only) and its written
test and dev sets (``data/written_test/``, ``data/written_dev/``, evaluation only).

Held-out rows are the ``test`` split of :func:`pipeline.training.corpora.add_split` (by
normalised text, so duplicates never straddle splits) and every contrast-set review: no
training part ever holds a contrast id or a text equal to a contrast text.
Project-written examples are always training data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from pipeline.catalog import DIMENSIONS
from pipeline.config import data_dir, shared_dir
from pipeline.errors import SharedDataMissing
from pipeline.text.normalise import normalise
from pipeline.training.arguments import TrainConfig
from pipeline.training.corpora import (
    CORPORA,
    add_split,
    corpus_of,
    load_labels_by_id,
    load_seed_labels,
    load_sentiment_corpora,
    text_key,
)

log = logging.getLogger("revsat")


def require_shared(explicit: Path | str | None = None) -> Path:
    """The shared corpora folder, or a clear error telling the user how to point at it."""
    found = shared_dir(explicit)
    if found is None:
        raise SharedDataMissing(
            "labelled corpora not found: pass --shared DIR or set REVSAT_SHARED_DIR "
            "(training and evaluation need them; scoring does not)"
        )
    return found


def sentiment_rows(
    shared: Path,
    max_train: int | None = None,
    seed: int = 0,
    corpus_caps: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Corpus rows with overall sentiment and a ``split`` column.

    The training part is first capped per corpus (``corpus_caps``, so the largest corpus does
    not drown the others), then subsampled to ``max_train`` rows. Held-out rows are never
    subsampled.
    """
    rows = add_split(load_sentiment_corpora(shared))
    train = rows[rows["split"] == "train"]
    for corpus, cap in (corpus_caps or {}).items():
        part = train[train["corpus"] == corpus]
        if len(part) > cap:
            train = pd.concat([train[train["corpus"] != corpus],
                               part.sample(n=cap, random_state=seed)])
    if max_train is not None and len(train) > max_train:
        train = train.sample(n=max_train, random_state=seed)
    return pd.concat([train, rows[rows["split"] != "train"]], ignore_index=True)


def extra_rows(files: Sequence[str] | None = None) -> pd.DataFrame:
    """Hand-written labelled examples shipped with the project (``data/train_extra/*.jsonl``,
    training only); with ``files``, only those file names (a missing one is an error)."""
    paths = sorted((data_dir() / "train_extra").glob("*.jsonl"))
    if files is not None:
        wanted = set(files)
        missing = wanted - {p.name for p in paths}
        if missing:
            raise ValueError(f"no such file in data/train_extra/: {', '.join(sorted(missing))}")
        paths = [p for p in paths if p.name in wanted]
    records = []
    for path in paths:
        with path.open(encoding="utf-8") as fh:
            records += [json.loads(line) for line in fh if line.strip()]
    if not records:
        return pd.DataFrame(columns=["id", "lang", "text", "sentiment", *DIMENSIONS])
    frame = pd.DataFrame.from_records(records)
    frame["corpus"] = "revsat_extra"
    frame["split"] = "train"
    return frame


def project_labelled_rows(shared: Path, seed_ids: set[str] | None = None,
                          fraction: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Corpus rows the project labelled itself (``data/labels/*.jsonl``: ids and labels only,
    in the seed format; texts are joined from the shared corpora), training split only.

    They grow the seed set where it is thin (English dimensions) and are never evaluated on:
    rows whose text falls in the dev or test split, or that are seed rows, are left out.
    ``fraction`` < 1 keeps a seeded random share of them (learning curves).
    """
    files = sorted((data_dir() / "labels").glob("*.jsonl"))
    if not files:
        return pd.DataFrame(columns=["id", "lang", "text", "sentiment", *DIMENSIONS])
    rows = add_split(load_labels_by_id(files, shared, "project"))
    keep = (rows["split"] == "train") & ~rows["id"].isin(seed_ids or set())
    rows = rows[keep].reset_index(drop=True)
    if fraction < 1.0:
        rows = rows.sample(frac=fraction, random_state=seed).reset_index(drop=True)
    return rows


def clause_labelled_rows(shared: Path, seed_ids: set[str] | None = None,
                         kinds: str = "cs") -> pd.DataFrame:
    """Parts of corpus reviews the project labelled one by one (``data/clause_labels/*.jsonl``:
    ``id`` = ``<review id>#c<k>`` for clause ``k`` of a Chinese review, ``<review id>#s<k>``
    for sentence ``k`` of an English one, the part's SHA-1 prefix ``sha`` and labels in the seed
    format), with the text rebuilt from the shared corpora: part ``k`` of
    :func:`pipeline.models.transformer.clauses.split_clauses` (``#c``) or
    :func:`~pipeline.models.transformer.clauses.split_sentences` (``#s``) on the normalised
    review, the inputs the second pass reads at inference; ``kinds`` keeps ``c``, ``s`` or
    both. Training split only (by the review's text), never a seed or contrast review; a part
    whose text no longer matches its ``sha`` (the splitter changed) is left out and counted
    in the log."""
    from pipeline.models.transformer.clauses import split_clauses, split_sentences

    columns = ["id", "corpus", "lang", "text", "sentiment", *DIMENSIONS]
    files = sorted((data_dir() / "clause_labels").glob("*.jsonl"))
    records = [json.loads(line) for f in files for line in f.open(encoding="utf-8")
               if line.strip()]
    if not records:
        return pd.DataFrame(columns=columns)
    labels = pd.DataFrame.from_records(records)
    where = labels["id"].str.extract(r"^(?P<review>.+)#(?P<kind>[cs])(?P<k>\d+)$")
    if where["review"].isna().any():
        bad = labels.loc[where["review"].isna(), "id"].iloc[0]
        raise ValueError(f"data/clause_labels/: id {bad!r} is not <review id>#c<k> or #s<k>")
    labels = labels.assign(review=where["review"], kind=where["kind"],
                           k=where["k"].astype(int))
    labels = labels[labels["kind"].isin(list(kinds))]
    if labels.empty:
        return pd.DataFrame(columns=columns)
    reviews = add_split(load_sentiment_corpora(
        shared, sorted({corpus_of(r) for r in labels["review"]}, key=CORPORA.index)))
    merged = labels.merge(reviews[["id", "corpus", "lang", "text", "split"]].rename(
        columns={"id": "review"}), on="review", how="inner", validate="many_to_one")
    held = set(contrast_labels()["id"]) | (seed_ids or set())
    merged = merged[(merged["split"] == "train") & ~merged["review"].isin(held)]

    # each review split once, however many of its parts are labelled
    splitter = {"c": split_clauses, "s": split_sentences}
    texts = dict(zip(zip(merged["review"], merged["kind"], strict=True), merged["text"],
                     strict=True))
    split = {(r, kind): splitter[kind](normalise(t)) for (r, kind), t in texts.items()}
    merged = merged.assign(text=[split[r, kind][k] if k < len(split[r, kind]) else None
                                 for r, kind, k in zip(merged["review"], merged["kind"],
                                                       merged["k"], strict=True)])
    same = pd.Series([t is not None and hashlib.sha1(t.encode()).hexdigest()[:12] == sha
                      for t, sha in zip(merged["text"], merged["sha"], strict=True)],
                     index=merged.index, dtype=bool)
    if (~same).any():
        log.warning("%d labelled clauses or sentences no longer match their text; left out",
                    (~same).sum())
    return merged[same][columns].reset_index(drop=True)


def combiner_labelled_rows(shared: Path) -> pd.DataFrame:
    """Reviews of the corpora's ``dev`` split the project labelled for fitting the polarity
    combiner (``data/combiner_labels/*.jsonl``, ids and labels only): the network never trains
    on the dev split, so its readings of them are what it gives unseen reviews. Rows of any
    other split and contrast-set reviews (by id or text) are left out."""
    files = sorted((data_dir() / "combiner_labels").glob("*.jsonl"))
    if not files:
        return pd.DataFrame(columns=["id", "corpus", "lang", "text", "sentiment", *DIMENSIONS])
    rows = add_split(load_labels_by_id(files, shared, "combiner"))
    return drop_held_out(rows[rows["split"] == "dev"], shared).reset_index(drop=True)


def _jsonl_folder(name: str, columns: list[str]) -> pd.DataFrame:
    """Every ``data/<name>/*.jsonl`` file as one frame (ids as strings); empty with
    ``columns`` when the project ships none."""
    files = sorted((data_dir() / name).glob("*.jsonl"))
    frames = [pd.read_json(f, lines=True, dtype={"id": str}) for f in files]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def natural_test_rows(shared: Path) -> pd.DataFrame:
    """The natural test set (``data/natural_test/*.jsonl``: reviews of the corpora's ``test``
    split drawn without looking at their labels, each labelled by two annotators; ids and
    labels only, texts joined from ``shared``; evaluation only), ``split`` ``test``. A row
    that is not in the test split is an error: it could have been trained on."""
    files = sorted((data_dir() / "natural_test").glob("*.jsonl"))
    if not files:
        return pd.DataFrame(columns=["id", "corpus", "lang", "text", "sentiment", *DIMENSIONS,
                                     "split"])
    rows = add_split(load_labels_by_id(files, shared, "natural test"))
    outside = rows.loc[rows["split"] != "test", "id"].tolist()
    if outside:
        raise ValueError(f"natural test ids outside the test split: {outside[:20]}")
    return rows.reset_index(drop=True)


def contrast_labels() -> pd.DataFrame:
    """The contrast set's labels (``data/contrast/*.jsonl``: id, split, sentiment, dimensions,
    how the label was reached); empty when the project ships none."""
    return _jsonl_folder("contrast", ["id", "split", "sentiment", *DIMENSIONS, "labels"])


def contrast_rows(shared: Path) -> pd.DataFrame:
    """The contrast set with its texts joined from the shared corpora (columns of the seed
    rows plus ``split`` and ``labels``)."""
    labels = contrast_labels()
    if labels.empty:
        return labels.assign(text=pd.Series(dtype=str), lang=pd.Series(dtype=str))
    texts = load_sentiment_corpora(shared)[["id", "corpus", "lang", "text"]]
    return labels.merge(texts, on="id", how="inner", validate="one_to_one")


def _written_rows(folder: str, split: str) -> pd.DataFrame:
    """Every ``data/<folder>/*.jsonl`` review written for the project (with its text and
    labels), ``split`` as given; reviews mixing English words into Chinese count as Chinese
    (``lang_gold``)."""
    rows = _jsonl_folder(folder, ["id", "lang", "text", "sentiment", *DIMENSIONS])
    rows = rows.assign(split=split, corpus="revsat_written")
    return rows.assign(lang_gold=rows["lang"].replace({"mixed": "zh"}))


def written_test_rows() -> pd.DataFrame:
    """The written test set (``data/written_test/*.jsonl``: reviews written for the project,
    each labelled by two annotators; evaluation only), ``split`` ``test``."""
    return _written_rows("written_test", "test")


def written_dev_rows() -> pd.DataFrame:
    """The written dev set (``data/written_dev/*.jsonl``: English reviews written for the
    project that praise one dimension and criticise another, each labelled by two annotators;
    evaluation and model choice only, never trained on), ``split`` ``dev``."""
    return _written_rows("written_dev", "dev")


def drop_held_out(rows: pd.DataFrame, shared: Path) -> pd.DataFrame:
    """``rows`` without any contrast-set review (by id and by normalised text, since the
    corpora repeat texts under other ids) nor any text of the written test and dev sets."""
    held = contrast_rows(shared)
    written = pd.concat([written_test_rows(), written_dev_rows()], ignore_index=True)
    if (held.empty and written.empty) or rows.empty:
        return rows
    keys = set(held["text"].map(text_key)) | set(written["text"].map(text_key))
    keep = ~rows["id"].astype(str).isin(set(held["id"])) & ~rows["text"].map(text_key).isin(keys)
    return rows[keep].reset_index(drop=True)


#: How two parts of a synthetic review are joined, per language, and the longest part that
#: still lets two fit in 128 tokens.
_JOINS = {"zh": ["，但是", "，不过", "。", "，就是", "，可是", "；"],
          "en": [". But ", ". However, ", ". ", ", but "]}
_LONGEST = {"zh": 70, "en": 260}


def _single_polarity_parts(rows: pd.DataFrame) -> pd.DataFrame:
    """Labelled reviews whose mentioned dimensions all share one polarity (positive or
    negative), with that polarity in column ``polarity``: the parts synthetic reviews are
    made of."""
    mentioned = rows[list(DIMENSIONS)].ne("none")
    polar = rows[list(DIMENSIONS)].isin(["positive", "negative"])
    parts = rows[polar.any(axis=1) & (mentioned == polar).all(axis=1)]
    polarity = parts[list(DIMENSIONS)].where(polar.loc[parts.index])
    one = polarity.nunique(axis=1) == 1
    return parts[one].assign(polarity=polarity[one].bfill(axis=1).iloc[:, 0])


def _pairs(rows: pd.DataFrame, n: int, seed: int, kind: str, source: str,
           fits: Callable[[dict, dict], dict | None]) -> pd.DataFrame:
    """Up to ``n`` reviews (half per language) joined from two parts ``a``, ``b`` of
    :func:`_single_polarity_parts` where ``fits(a, b)`` gives their dimension labels (None:
    not a pair); no overall label, id ``<kind>-<a>+<b>``, source ``source``."""
    parts = _single_polarity_parts(rows)
    rng = random.Random(seed)
    out: list[dict] = []
    for lang, glue in _JOINS.items():
        pool = parts[(parts["lang"] == lang) & (parts["text"].str.len() <= _LONGEST[lang])]
        records = pool.to_dict("records")
        want, made = n // len(_JOINS), 0
        for _ in range(want * 50):
            if len(records) < 2 or made >= want:
                break
            a, b = rng.sample(records, 2)
            labels = fits(a, b)
            if labels is None:
                continue
            out.append({"id": f"{kind}-{a['id']}+{b['id']}", "lang": lang,
                        "corpus": f"revsat_{source}", "sentiment": None, "split": "train",
                        "source": source, "text": a["text"].rstrip("。.!！ ") + rng.choice(glue)
                        + b["text"], **labels})
            made += 1
    return pd.DataFrame(out, columns=["id", "lang", "corpus", "text", "sentiment", "split",
                                      "source", *DIMENSIONS])


def synthetic_mixed(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` mixed reviews made by joining two labelled reviews of the same language about
    different dimensions with opposite polarity ("质量很好" + "，但是" + "物流太慢了").

    Real mixed reviews are rare in the corpora (about 4 % of labelled rows praise one
    dimension and criticise another), so the dimension heads learn to copy the overall tone;
    these pairs show them the same words under the other tone. Each part is a review whose
    mentioned dimensions share one polarity; the pair's dimensions are the union of its parts'
    and its overall sentiment is left unlabelled (it is the parts' balance, not a fact).
    """
    def fits(a: dict, b: dict) -> dict | None:
        a_dims = {d for d in DIMENSIONS if a[d] != "none"}
        b_dims = {d for d in DIMENSIONS if b[d] != "none"}
        if a["polarity"] == b["polarity"] or a_dims & b_dims:
            return None
        return {d: a[d] if d in a_dims else b[d] for d in DIMENSIONS}

    return _pairs(rows, n, seed, "mix", "mixed", fits)


def neutral_pairs(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` reviews that praise and criticise the same single dimension about equally, labelled
    ``neutral`` on it (the guidelines' "praised and criticised about equally"): two labelled
    reviews of one corpus that each mention only that dimension, with opposite polarity and
    lengths within a factor of two ("面料很舒服" + "，就是" + "做工太粗糙了"; "Lovely fabric" +
    ", but " + "it runs two sizes large").

    In the corpora a ``neutral`` dimension mostly sits in a neutral review, so the heads learn
    "neutral dimension, neutral tone"; these pairs show one inside a review of either tone.
    """
    def fits(a: dict, b: dict) -> dict | None:
        a_dims = [d for d in DIMENSIONS if a[d] != "none"]
        b_dims = [d for d in DIMENSIONS if b[d] != "none"]
        short, long_ = sorted((len(a["text"]), len(b["text"])))
        if (len(a_dims) != 1 or a_dims != b_dims or a["polarity"] == b["polarity"]
                or a["corpus"] != b["corpus"] or long_ > 2 * short):
            return None
        return {d: "neutral" if d == a_dims[0] else "none" for d in DIMENSIONS}

    return _pairs(rows, n, seed, "neutral", "neutral", fits)


def clause_rows(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` clauses (:func:`pipeline.models.transformer.clauses.split_clauses`) of the
    Chinese reviews in ``rows``, without labels: the inputs clause scoring reads at inference.
    They teach a student only through its teacher's soft labels (the trainer ignores missing
    labels), so a clause never inherits its review's overall label."""
    from pipeline.models.transformer.clauses import CLAUSE_LANGS, split_clauses

    pool = rows[rows["lang"].isin(CLAUSE_LANGS)].sample(frac=1.0, random_state=seed)
    out: list[dict] = []
    for rid, lang, text in zip(pool["id"], pool["lang"], pool["text"], strict=True):
        for k, clause in enumerate(split_clauses(str(text))):
            out.append({"id": f"clause-{rid}-{k}", "lang": lang, "corpus": "revsat_clause",
                        "text": clause, "sentiment": None, "split": "train",
                        "source": "clause"})
        if len(out) >= n:
            break
    return pd.DataFrame(out[:n], columns=["id", "lang", "corpus", "text", "sentiment", "split",
                                          "source"])


def dimension_rows(shared: Path, folds: int = 5, project_labels: bool = False,
                   project_fraction: float = 1.0, seed: int = 0,
                   clause_labels: bool = False, sentence_labels: bool = False,
                   extra_files: Sequence[str] | None = None) -> pd.DataFrame:
    """Seed-labelled rows (with ``split`` and ``fold``), plus the project's hand-written
    examples and, with ``project_labels``, its own labels of corpus rows, with
    ``clause_labels`` its labelled Chinese clauses and with ``sentence_labels`` its labelled
    English sentences (all training only, ``fold`` -1; ``extra_files`` picks the written
    files, :func:`extra_rows`); ``source`` says which (``seed``, ``written``, ``project``,
    ``clause_label``).

    ``project_labels`` and ``sentence_labels`` are off by default so that the configs of
    models trained before those labels existed still select the same rows.
    """
    seeds = add_split(load_seed_labels(shared), folds=folds).assign(source="seed")
    parts = [seeds]
    if project_labels:
        project = project_labelled_rows(shared, set(seeds["id"]), project_fraction, seed)
        parts.append(project.assign(fold=-1, source="project"))
    if clause_labels or sentence_labels:
        kinds = "c" * clause_labels + "s" * sentence_labels
        clauses = clause_labelled_rows(shared, set(seeds["id"]), kinds)
        parts.append(clauses.assign(split="train", fold=-1, source="clause_label"))
    parts.append(extra_rows(extra_files).assign(fold=-1, source="written"))
    return pd.concat(parts, ignore_index=True)


def training_sets(config: TrainConfig, shared: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows a training run learns from and calibrates on: ``(train_rows, dev_rows)``.

    Train: sentiment rows, the dimension-labelled rows ``dimension_repeats`` times,
    ``mixed_pairs`` synthetic mixed reviews, ``neutral_pairs`` synthetic neutral ones and
    ``clause_rows`` unlabelled clauses, without any contrast-set review (nor a clause of one).
    Dev: a sample of the dev split's sentiment rows and its dimension rows (the temperatures are
    fitted there).
    """
    sent = sentiment_rows(shared, config.sentiment_rows, config.seed, config.corpus_caps)
    dims = dimension_rows(shared, project_labels=config.project_labels,
                          project_fraction=config.project_label_fraction, seed=config.seed,
                          clause_labels=config.clause_labels,
                          sentence_labels=config.sentence_labels,
                          extra_files=config.extra_files)
    # held-out reviews leave the pools first, so no pair or clause is made of one
    pool = drop_held_out(pd.concat([sent[sent["split"] == "train"].assign(_part="sentiment"),
                                    dims[dims["split"] == "train"].assign(_part="dimensions")],
                                   ignore_index=True), shared)
    part = pool.pop("_part")
    sent_train = pool.loc[part == "sentiment", list(sent.columns)]
    dim_train = pool.loc[part == "dimensions", list(dims.columns)]
    parts = [sent_train, *[dim_train] * config.dimension_repeats]
    if config.mixed_pairs:
        parts.append(synthetic_mixed(dim_train, config.mixed_pairs, config.seed))
    if config.neutral_pairs:
        parts.append(neutral_pairs(dim_train, config.neutral_pairs, config.seed))
    if config.clause_rows:
        parts.append(clause_rows(pd.concat([dim_train, sent_train]), config.clause_rows,
                                 config.seed))
    train_rows = drop_held_out(pd.concat(parts, ignore_index=True), shared)
    if config.languages:
        train_rows = train_rows[train_rows["lang"].isin(config.languages)].reset_index(drop=True)
    dev_sent = sent[sent["split"] == "dev"]
    dev_sent = dev_sent.sample(n=min(config.dev_sentiment_rows, len(dev_sent)),
                               random_state=config.seed)
    dev_rows = pd.concat([dev_sent, dims[dims["split"] == "dev"]], ignore_index=True)
    return train_rows, dev_rows


def label_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Rows per ``source`` (sentiment-only rows count as ``corpus``), for logs and cards."""
    source = rows["source"] if "source" in rows else pd.Series(index=rows.index, dtype=object)
    return {str(k): int(v) for k, v in source.fillna("corpus").value_counts().items()}
