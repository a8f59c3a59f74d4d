import pytest

from pipeline.text.normalise import detect_language, normalise, to_simplified


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("物流很快，质量也不错", "zh"),
        ("Fast shipping and the quality is great", "en"),
        ("物流很快, quality is great and price ok", "mixed"),
        ("客服 response 太慢了 and rude", "mixed"),
        ("👍👍👍", "other"),
        ("", "other"),
        ("12345 !!!", "other"),
        ("とても良い商品です", "other"),
        ("手机不错 OK", "zh"),  # one Latin word does not make a review mixed
        ("Great phone, 好", "en"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(normalise(text)) == lang


def test_normalise_fullwidth_html_and_invisible_characters():
    raw = "ＡＢＣ１２３ &amp; <b>好</b>\u200b评\x07 \n\t很好"
    assert normalise(raw) == "ABC123 & 好 评 很好"


def test_normalise_double_escaped_entities():
    assert normalise("it&amp;#39;s fine") == "it's fine"


def test_traditional_is_converted_for_segmentation_only():
    assert to_simplified("質量很好，物流也快") == "质量很好，物流也快"
    assert to_simplified("plain English") == "plain English"
