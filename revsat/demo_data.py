"""Two nights of demo exports from the shared corpora, the second with a logistics problem.

``python -m revsat.demo_data --shared ../shared --rows 50000 --out work/demo`` writes
``day1.csv`` and ``day2.csv`` (columns ``review_id, product_id, category, rating, created_at,
text``) for trying history, trends and alerts::

    revsat score work/demo/day1.csv --out work/demo/out --model baseline --run-date 2026-11-14
    revsat score work/demo/day2.csv --out work/demo/out --model baseline --run-date 2026-11-15

Reviews are drawn from every corpus in :func:`pipeline.training.corpora.load_sentiment_corpora`;
``category`` is the corpus's own category (or the corpus name), ``product_id`` a synthetic id
within the category, ``created_at`` a random time in the seven days before the run date.
On day 2, reviews that look like logistics complaints (negative overall and naming delivery,
courier or packaging) make up ``shift`` times their day-1 share. Texts are read from
``shared/`` and never copied into the project.
"""

from __future__ import annotations

import argparse
import re
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import shared_dir
from pipeline.training.corpora import load_sentiment_corpora

#: Delivery words that mark a negative review as a likely logistics complaint.
LOGISTICS = re.compile(
    r"物流|快递|送货|发货|配送|送餐|外卖小哥|送到|包装|破损|shipping|shipped|delivery|delivered|"
    r"arrived|package|courier|box was",
    re.IGNORECASE,
)


def _exports(corpora: pd.DataFrame, rows: int, shift: float, seed: int,
             run_dates: tuple[date, date]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    corpora = corpora.assign(
        category=corpora["category"].fillna(corpora["corpus"]).astype(str),
        complaint=(corpora["sentiment"] == "negative")
        & corpora["text"].str.contains(LOGISTICS, regex=True),
    )
    # ~40 products per category, skewed so that a few products carry most reviews.
    corpora["product_id"] = [
        f"P-{zlib.crc32(c.encode()) % 10_000:04d}-{int(k):02d}"
        for c, k in zip(corpora["category"], rng.zipf(1.6, len(corpora)) % 40, strict=True)
    ]
    complaints = corpora[corpora["complaint"]]
    others = corpora[~corpora["complaint"]]
    share = len(complaints) / len(corpora)
    n_complaints_2 = min(round(rows * share * shift), rows)
    day1 = corpora.sample(n=rows, replace=rows > len(corpora), random_state=seed)
    day2 = pd.concat([
        complaints.sample(n=n_complaints_2, replace=n_complaints_2 > len(complaints),
                          random_state=seed + 1),
        others.sample(n=rows - n_complaints_2, replace=rows - n_complaints_2 > len(others),
                      random_state=seed + 2),
    ]).sample(frac=1.0, random_state=seed + 3)
    out = []
    for day, frame in zip(run_dates, (day1, day2), strict=True):
        start = pd.Timestamp(day - timedelta(days=7))
        offsets = pd.to_timedelta(rng.integers(0, 7 * 86_400, len(frame)), unit="s")
        out.append(pd.DataFrame({
            "review_id": [f"{day:%Y%m%d}-{i:06d}" for i in range(len(frame))],
            "product_id": frame["product_id"].to_numpy(),
            "category": frame["category"].to_numpy(),
            "rating": frame["rating"].to_numpy(),
            "created_at": (start + offsets).strftime("%Y-%m-%dT%H:%M:%S"),
            "text": frame["text"].to_numpy(),
        }))
    return out[0], out[1]


def build_demo(shared: Path | None, out: Path, rows: int = 50_000, shift: float = 3.0,
               seed: int = 7, run_dates: tuple[date, date] = (date(2026, 11, 14),
                                                               date(2026, 11, 15))
               ) -> tuple[Path, Path]:
    """Write ``day1.csv`` and ``day2.csv`` into ``out``; returns their paths."""
    folder = shared_dir(shared)
    if folder is None:
        raise FileNotFoundError("shared corpora not found: pass --shared or set REVSAT_SHARED_DIR")
    day1, day2 = _exports(load_sentiment_corpora(folder), rows, shift, seed, run_dates)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "day1.csv", out / "day2.csv"
    for frame, path in zip((day1, day2), paths, strict=True):
        frame.to_csv(path, index=False)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command line of ``python -m revsat.demo_data``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("work/demo"))
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for path in build_demo(args.shared, args.out, args.rows, args.shift, args.seed):
        print(path)


if __name__ == "__main__":
    main()
