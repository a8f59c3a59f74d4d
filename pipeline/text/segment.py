"""Word segmentation: jieba with the project's e-commerce user dictionary, plain words for
English. Tokens feed the baseline model, the theme lexicon and the complaint-term evidence."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

from pipeline.config import data_dir

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_KEEP = re.compile(r"[\w\u3400-\u9fff]", re.UNICODE)


@lru_cache(maxsize=4)
def get_tokenizer(userdict: str | None = None):
    """Return a jieba ``Tokenizer`` with the user dictionary loaded (built once per process).

    ``userdict`` defaults to ``data/userdict.txt``; a missing file is an error, because
    silently segmenting without it would split terms like 快递小哥 that the lexicon needs whole.
    """
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    path = Path(userdict) if userdict else data_dir() / "userdict.txt"
    if not path.is_file():
        raise FileNotFoundError(f"jieba user dictionary not found: {path}")
    tok.load_userdict(str(path))
    return tok


def segment(text: str, lang: str, userdict: str | None = None) -> list[str]:
    """Split normalised (Simplified) ``text`` into lower-cased word tokens.

    Chinese and mixed text go through jieba (which keeps Latin words whole); English text is
    split on word characters. Punctuation and whitespace tokens are dropped.
    """
    if lang in ("zh", "mixed"):
        tokens = get_tokenizer(userdict).lcut(text)
        return [t.lower() for t in tokens if _KEEP.search(t) and not t.isspace()]
    return _WORD.findall(text.lower())
