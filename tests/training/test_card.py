"""The model card says what the model was trained on and how."""

from __future__ import annotations

import json

from pipeline.training.card import write_model_card


def test_card_names_the_clause_labels_and_the_mixed_review_recipe(tmp_path):
    (tmp_path / "revsat_model.json").write_text(json.dumps({"name": "m", "clauses": True}))
    config = {"contrast_weight": 4.0, "neutral_pairs": 1500, "init_from": "models/default",
              "keep_layers": [0, 1, 2], "teacher": "work/s3e", "distill_heads": ["sentiment"]}
    card = write_model_card(tmp_path, config, {}, project_label_rows=12,
                            clause_label_rows=2031).read_text(encoding="utf-8")
    assert "12 corpus rows the project labelled itself" in card
    assert "2031 clauses of Chinese reviews labelled one by one" in card
    assert "weigh 4 times in the loss" in card
    assert "1500 synthetic reviews praise and criticise one dimension" in card
    assert "soft labels on the sentiment head(s) only" in card
    plain = write_model_card(tmp_path, {}, {}).read_text(encoding="utf-8")
    assert "clauses of Chinese reviews labelled" not in plain and "Mixed reviews:" not in plain
