from pathlib import Path

import pytest

from pipeline.config import data_dir
from pipeline.text.segment import get_tokenizer, segment


@pytest.mark.parametrize("term", ["快递小哥", "七天无理由", "顺丰", "客服", "自营", "好评返现"])
def test_user_dictionary_terms_stay_whole(term):
    tokens = segment(f"这次{term}真的很不错，下次还来", "zh")
    assert term in tokens


def test_without_user_dictionary_jieba_splits_a_term(tmp_path: Path):
    # Guards the test above: jieba alone would not keep this term whole.
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert "七天无理由" not in get_tokenizer(str(empty)).lcut("支持七天无理由退货")


def test_every_userdict_line_is_well_formed():
    for line in (data_dir() / "userdict.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        assert 1 <= len(parts) <= 3, line
        if len(parts) >= 2:
            assert parts[1].isdigit(), line


def test_english_and_mixed_tokens():
    assert segment("Arrived DAMAGED, box crushed!", "en") == ["arrived", "damaged", "box",
                                                               "crushed"]
    tokens = segment("客服response太慢", "mixed")
    assert "response" in tokens and "客服" in tokens


def test_punctuation_dropped():
    assert segment("好！！！", "zh") == ["好"]


def test_dictionary_cache_segments_as_jieba_does_and_survives_damage(tmp_path: Path):
    import jieba

    userdict = data_dir() / "userdict.txt"
    text = "快递小哥把箱子压坏了，七天无理由退货，客服态度很好"
    built = get_tokenizer(str(userdict), tmp_path)  # builds and writes the cache
    (cache,) = tmp_path.glob("prefix-*.marshal")
    get_tokenizer.cache_clear()
    cached = get_tokenizer(str(userdict), tmp_path)  # reads it
    plain = jieba.Tokenizer()
    plain.load_userdict(str(userdict))
    assert cached is not built
    assert cached.lcut(text) == plain.lcut(text) == built.lcut(text)
    assert (cached.FREQ, cached.total) == (plain.FREQ, plain.total)

    cache.write_bytes(b"not marshal data")  # a damaged cache is rebuilt, not an error
    get_tokenizer.cache_clear()
    assert get_tokenizer(str(userdict), tmp_path).lcut(text) == plain.lcut(text)
    assert cache.stat().st_size > 1000

    # another user dictionary gets its own cache file
    other = tmp_path / "other.txt"
    other.write_text("箱子压坏 5\n", encoding="utf-8")
    assert "箱子压坏" in get_tokenizer(str(other), tmp_path).lcut(text)
    assert len(list(tmp_path.glob("prefix-*.marshal"))) == 2
