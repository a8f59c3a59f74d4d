"""The model card, generated from the training run's own config and held-out metrics by the
Jinja2 template ``templates/model_card.md.j2`` (as setfit's ``model_card_template.md``)."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader

from pipeline.training.evaluate import summary_table


def _template():
    """``templates/model_card.md.j2`` (Markdown: no HTML autoescaping)."""
    env = Environment(loader=PackageLoader("pipeline.training", "templates"),
                      autoescape=False, keep_trailing_newline=True)
    return env.get_template("model_card.md.j2")


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
                     project_label_rows: int = 0, clause_label_rows: int = 0) -> Path:
    """Write ``README.md`` (the card) into the model folder (``project_label_rows``,
    ``clause_label_rows``: rows of ``data/labels/`` and ``data/clause_labels/`` among the
    training rows)."""
    meta = json.loads((directory / "revsat_model.json").read_text(encoding="utf-8"))
    table = markdown_table(summary_table(results)) if results else "(not evaluated)"
    calib = meta.get("calibration_dev", {})
    calib_rows = "\n".join(
        f"| {head} | {c['n']} | {c['temperature']} | {c['ece_before']} | {c['ece_after']} |"
        for head, c in calib.items()
    )
    heads = config.get("distill_heads")
    taught = ("the teacher's soft labels on every row, including the dimension heads on corpus "
              "rows that have no dimension labels" if not heads else
              f"the teacher's soft labels on the {', '.join(heads)} head(s) only; the other "
              "heads learn from the gold labels alone")
    distilled = (
        f" Distilled from the teacher `{config['teacher']}` (gold-label loss weight "
        f"{config.get('distill_alpha')}, temperature {config.get('distill_temperature')}): the "
        f"student also learns {taught}."
        if config.get("teacher") else ""
    )
    project = (f" and {project_label_rows} corpus rows the project labelled itself "
               "(`data/labels/`, train split only)" if project_label_rows else "")
    if clause_label_rows:
        project += (f", and {clause_label_rows} clauses of Chinese reviews labelled one by one "
                    "(`data/clause_labels/`)")
    weighting = []
    if config.get("contrast_weight", 1.0) > 1.0:
        weighting.append(f"dimension labels that differ from the review's overall sentiment "
                         f"weigh {config['contrast_weight']:g} times in the loss")
    if config.get("neutral_pairs"):
        weighting.append(f"{config['neutral_pairs']} synthetic reviews praise and criticise "
                         "one dimension and are labelled neutral on it")
    if weighting:
        distilled += " Mixed reviews: " + "; ".join(weighting) + "."
    pooling = ("Per-dimension attention pooling: sentiment from the mean-pooled vector, each "
               "dimension from the mean-pooled vector and an attention pool with its own learned "
               "query." if meta.get("pooling") == "attention"
               else "Mean pooling, one linear layer for all heads.")
    if meta.get("clauses"):
        pooling += (" Chinese and mixed reviews are scored clause by clause: mention from the "
                    "whole review, polarity from the clauses that mention the dimension.")
    if (directory / "combiner.json").exists():
        pooling += (" A polarity combiner (`combiner.json`, a logistic regression per language "
                    "over the whole-review, clause and sentence readings) re-splits each "
                    "mentioned dimension's polarity; it was fitted on the contrast and seed "
                    "**dev** splits, so the dev figures below are in-sample for it and the "
                    "test figures are the held-out ones.")
    card = _template().render(
        pooling=pooling, name=meta.get("name"), layers=_layers(config), prefix=meta.get("prefix"),
        train_seconds=meta.get("train_seconds"), distilled=distilled,
        config_json=json.dumps(config, indent=2, ensure_ascii=False), project=project,
        table=table, calib_rows=calib_rows, size_mb=_size_mb(directory), extra=extra,
    )
    path = directory / "README.md"
    path.write_text(card, encoding="utf-8")
    return path
