import pandas as pd
from conftest import sample_labelled

from pipeline.catalog import DIMENSIONS
from pipeline.text.lexicon import Lexicon, default_lexicon
from pipeline.text.preprocess import preprocess


def test_longest_match_wins():
    lex = Lexicon([("fresh", "quality", "positive"), ("not fresh", "quality", "negative")])
    hits = lex.match(["the", "fruit", "was", "not", "fresh"])
    assert [(h.term, h.polarity) for h in hits] == [("not fresh", "negative")]


def test_shipped_lexicon_uses_label_vocabulary_and_matches_chinese_terms():
    lex = default_lexicon()
    assert len(lex.entries) > 300
    tokens = preprocess(pd.DataFrame({"text": ["快递小哥态度很好，包装破损了"]}))["tokens"].iloc[0]
    # the user dictionary keeps both terms whole, so both match as whole tokens
    assert {"快递小哥", "包装破损"} <= set(tokens)
    assert [(h.term, h.dimension, h.polarity) for h in lex.match(tokens)] == [
        ("快递小哥", "logistics", "neutral"), ("包装破损", "logistics", "negative")]
    # a neutral and a negative logistics hit: negative wins; nothing else is mentioned
    assert lex.weak_labels(tokens) == {"logistics": "negative", "quality": "none",
                                       "service": "none", "privacy": "none"}


def test_weak_labels_agree_with_hand_labels_on_detection():
    # The lexicon is evidence, not the model: it should find a clear majority of the
    # sample's hand-labelled mentions while rarely firing on unmentioned dimensions.
    data = preprocess(sample_labelled())
    lex = default_lexicon()
    weak = pd.DataFrame([lex.weak_labels(t) for t in data["tokens"]])
    for dim in DIMENSIONS:
        gold = data[dim] != "none"
        found = weak[dim] != "none"
        recall = (gold & found).sum() / gold.sum()
        precision = (gold & found).sum() / max(found.sum(), 1)
        assert recall > 0.5 and precision > 0.6, (dim, recall, precision)
