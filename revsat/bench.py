"""``revsat bench``: end-to-end throughput, time per stage and peak memory of the real scoring
flow on a generated input, next to a naive baseline (eager PyTorch, batch size 1) on the same
model and rows. A benchmark, not a test: it is never part of the test suite."""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Settings, data_dir, shared_dir
from pipeline.training.corpora import load_sentiment_corpora

log = logging.getLogger("revsat")


def text_pool(shared: Path | None = None) -> list[str]:
    """Review texts to sample from: the bundled sample, plus the corpora when present."""
    sample = pd.read_csv(data_dir() / "sample" / "reviews.csv", dtype=str,
                         keep_default_na=False)["text"]
    texts = [t for t in sample if t.strip()]
    found = shared_dir(shared)
    if found is not None:
        texts += list(load_sentiment_corpora(found)["text"])
    return texts


def build_input(path: Path, n: int, shared: Path | None = None, short: bool = False,
                seed: int = 0) -> dict[str, float | str]:
    """Write a CSV of ``n`` reviews sampled from :func:`text_pool` (with replacement).

    ``short`` keeps texts of 30-70 characters (the "about 50 characters" case); otherwise the
    corpora's own length distribution is kept. Returns the mean and median text length, and
    where the texts came from: with the corpora they are about four times longer than the
    sample's, so a speed figure means little without it.
    """
    pool = pd.Series(text_pool(shared))
    found = shared_dir(shared)
    if short:
        pool = pool[pool.str.len().between(30, 70)]
    rng = np.random.default_rng(seed)
    texts = pool.to_numpy()[rng.integers(0, len(pool), n)]
    frame = pd.DataFrame({
        "review_id": [f"bench-{i:08d}" for i in range(n)],
        "product_id": rng.choice([f"P{i:03d}" for i in range(50)], n),
        "category": rng.choice(["electronics", "apparel", "food", "home", "travel"], n),
        "created_at": (pd.Timestamp("2026-11-01")
                       + pd.to_timedelta(rng.integers(0, 14, n), "D")).strftime("%Y-%m-%d"),
        "rating": rng.integers(1, 6, n).astype(str),
        "text": texts,
    })
    frame.to_csv(path, index=False)
    lengths = frame["text"].str.len()
    return {"mean_chars": round(float(lengths.mean()), 1),
            "median_chars": float(lengths.median()),
            "texts_from": "the bundled sample" if found is None
            else f"the bundled sample and the corpora of {found}"}


def naive_baseline(model_dir: Path, texts: list[str]) -> float:
    """Reviews/s of a first attempt on the same model: eager PyTorch, one review per forward
    pass (tokenised alone, no batching, no length sorting, no ONNX Runtime)."""
    import torch

    from pipeline.models.load import resolve
    from pipeline.models.transformer import persistence

    # transformers' own module and tokenizer, in fp32, as a first attempt would load them
    model, tokenizer, meta = persistence.load(resolve(model_dir))
    prefix, width = meta.get("prefix", "query: "), int(meta.get("max_length", 256))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(prefix + text, truncation=True, max_length=width,
                            return_tensors="pt")
            model.flat(enc["input_ids"], enc["attention_mask"])
    return len(texts) / (time.perf_counter() - t0)


def model_only(model: str, texts: list[str], settings: Settings | None = None) -> float:
    """Reviews/s of the classifier alone (what ``model`` does per batch: for the default, the
    transformer and the baseline it is averaged with) on already normalised and segmented
    texts; model loading and a warm-up batch are not timed."""
    from pipeline.models.load import load
    from pipeline.text.preprocess import preprocess

    clf = load(model, settings or Settings(model=model))
    data = preprocess(pd.DataFrame({"text": texts}))
    clf.predict_batch(data.head(64))
    t0 = time.perf_counter()
    clf.predict_batch(data)
    return len(texts) / (time.perf_counter() - t0)


def _timed(args: list[str], repeats: int) -> dict:
    """Median wall seconds of ``revsat ARGS`` as a fresh process (after one untimed run), its
    exit status and the largest peak memory of the timed runs (by GNU time, where present)."""
    import os
    import statistics
    import subprocess
    import sys

    walls, codes = [], set()
    peak = 0.0
    for i in range(repeats + 1):
        # GNU time reports the child's own peak (a child forked from this big process would
        # count this process's pages); without it no peak is given
        timer = ["/usr/bin/time", "-f", "%M"] if os.access("/usr/bin/time", os.X_OK) else []
        t0 = time.perf_counter()
        done = subprocess.run([*timer, sys.executable, "-m", "revsat.cli", *args],
                              capture_output=True, env={**os.environ, "COLUMNS": "100"},
                              check=False)
        wall = time.perf_counter() - t0
        if i:  # the first run warms the disk cache, the ONNX cache and the local server
            walls.append(wall)
            codes.add(done.returncode)
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["0"]
            if timer and last[0].isdigit():
                peak = max(peak, int(last[0]) / 1024)
    return {"wall_seconds": round(statistics.median(walls), 2),
            "wall_min_max": [round(min(walls), 2), round(max(walls), 2)],
            "exit": sorted(codes), "peak_memory_mb": round(peak, 0)}


def warm_model(model: str, settings: Settings) -> float:
    """Load ``model`` once in a child process before anything is timed and return its
    seconds: on a machine that has never run it, this is where its ONNX graph is exported
    (once per weights file), which is no part of a scoring run's steady cost. A child, so
    that the bench's own peak memory is the flow's."""
    import subprocess
    import sys

    code = ("import sys; from pipeline.config import Settings; "
            "from pipeline.models.load import load; "
            "clf = load(sys.argv[1], Settings.model_validate_json(sys.argv[2])); "
            "getattr(clf, 'load_routes', lambda: None)()")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, model, settings.model_dump_json()],
                   check=True, capture_output=True)
    return round(time.perf_counter() - t0, 1)


def startup_figures(work: Path, model: str = "default", repeats: int = 3) -> dict:
    """The CLI as a user meets it, each a fresh process: ``--help``, a 50-review ``score``,
    a ``nightly`` with no new files, and a missing input (an error before any model or
    server starts)."""
    work.mkdir(parents=True, exist_ok=True)
    sample = pd.read_csv(data_dir() / "sample" / "reviews.csv", dtype=str,
                         keep_default_na=False)
    night = work / "nightly-in"
    night.mkdir(exist_ok=True)
    sample.head(50).to_csv(work / "reviews-50.csv", index=False)
    sample.head(50).to_csv(night / "day-1.csv", index=False)
    out = ["--out", str(work / "out-50"), "--model", model]
    return {
        "help": _timed(["--help"], repeats),
        "score_50": _timed(["score", str(work / "reviews-50.csv"), *out, "--no-progress"],
                           repeats),
        "nightly_no_new_files": _timed(["nightly", str(night), "--out",
                                        str(work / "out-nightly"), "--model", model], repeats),
        "missing_input_error": _timed(["score", str(work / "missing.csv"), *out,
                                       "--no-progress"], repeats),
    }


def cpu_description() -> dict:
    """The CPU the figures were measured on: model, cores, and the flags that decide formats."""
    import os

    from pipeline.hardware import FAST_FORMATS, cpu_flags, cpu_model

    flags = cpu_flags()
    return {"model": cpu_model(), "cores": os.cpu_count(),
            "format_flags": sorted({f for v in FAST_FORMATS.values() for f in v} & flags)}


def peak_memory_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def run_bench(n: int, work: Path, model: str = "default", short: bool = False,
              naive_rows: int = 300, shared: Path | None = None,
              settings: Settings | None = None, model_rows: int = 2048,
              startup_repeats: int = 3) -> dict:
    """Build the input, run the real flow, time the naive baseline and the CLI's start-up
    figures (``startup_repeats`` 0: skip); return all figures."""
    from flows.score import score_reviews
    from pipeline.models.load import resolve

    work.mkdir(parents=True, exist_ok=True)
    source = work / f"bench-{n}{'-short' if short else ''}.csv"
    lengths = build_input(source, n, shared, short)
    settings = settings or Settings(model=model)
    out = work / "out"
    first_load = warm_model(model, settings)
    t0 = time.perf_counter()
    record = score_reviews([str(source)], str(out), model=model, settings=settings, full=True)
    wall = time.perf_counter() - t0
    # parts_wall is the chunk phase's wall time, already covered by the per-stage seconds.
    stages = {k: v for k, v in record["seconds"].items() if k != "parts_wall"}
    scoring = sum(stages.values())
    result = {
        "cpu": cpu_description(), "inference": record.get("inference"),
        "rows": n, **lengths, "model": record["model_version"],
        "wall_seconds": round(wall, 1),
        "reviews_per_second": round(n / wall, 1),
        "reviews_per_second_excluding_startup": round(n / scoring, 1),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "stage_share": {k: round(v / scoring, 3) for k, v in stages.items()},
        "peak_memory_mb": round(peak_memory_mb(), 0),
        "rows_scored": record["rows_scored"], "rows_rejected": record["rows_rejected"],
        "model_rows": record.get("model_rows"),
        "first_load_seconds": first_load,
    }
    model_dir = resolve(model)
    naive_rows = naive_rows if (model_dir / "revsat_model.json").is_file() else 0
    # The first rows only, read once (the input can be a million rows).
    texts = list(pd.read_csv(source, dtype=str, keep_default_na=False,
                             nrows=max(naive_rows, model_rows, 1))["text"])
    if naive_rows:
        naive = naive_baseline(model_dir, texts[:naive_rows])
        result["naive_reviews_per_second"] = round(naive, 1)
        result["speedup_vs_naive"] = round(result["reviews_per_second"] / naive, 1)
    if model_rows:
        result["model_only_reviews_per_second"] = round(
            model_only(model, texts[:model_rows], settings), 1)
    if startup_repeats:
        result["cli"] = startup_figures(work / "cli", model, startup_repeats)
    return result
