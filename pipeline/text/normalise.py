"""Text normalisation and language detection.

``normalise`` produces the text the classifier and segmenter read; the original text is
always kept alongside it. ``to_simplified`` is used only for segmentation so that Traditional
Chinese reviews hit the same dictionary entries as Simplified ones.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

_TAG = re.compile(r"<[^>]{0,200}>")
# Control, format (zero-width, BOM, bidi) and private-use characters carry no meaning here;
# tabs and newlines are folded into spaces below instead of being dropped.
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
                        r"\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ue000-\uf8ff]")
_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uac00-\ud7af\u1100-\u11ff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def normalise(text: str) -> str:
    """Return ``text`` cleaned for modelling.

    Steps, in order: decode HTML entities (twice, for double-escaped exports), drop tags,
    NFKC (full-width letters and digits become ASCII), remove control and zero-width
    characters, fold runs of whitespace to one space, strip.
    """
    text = html.unescape(html.unescape(text))
    text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    return _SPACE.sub(" ", text).strip()


def detect_language(text: str) -> str:
    """Classify normalised text as ``zh``, ``en``, ``mixed`` or ``other``.

    Script counting, not a statistical detector: reviews are short, and the only question
    downstream is which segmenter and which share of the training data applies.
    ``mixed`` means at least two Han characters and at least two Latin words, each script
    carrying at least 20 % of the letters. Text with kana or hangul, or with neither script
    (emoji only, digits, empty), is ``other``.
    """
    han = len(_CJK.findall(text))
    if _KANA_HANGUL.search(text):
        return "other"
    latin_words = _LATIN_WORD.findall(text)
    latin = sum(len(w) for w in latin_words)
    if han == 0 and not latin_words:
        return "other"
    # A Latin letter carries about a third of the information of a Han character.
    han_weight, latin_weight = han, latin / 3
    total = han_weight + latin_weight
    if han >= 2 and len(latin_words) >= 2 and min(han_weight, latin_weight) >= 0.2 * total:
        return "mixed"
    return "zh" if han_weight >= latin_weight else "en"


@lru_cache(maxsize=1)
def _converter():
    import zhconv  # imported lazily: only Chinese text needs it

    return zhconv


def to_simplified(text: str) -> str:
    """Convert Traditional Chinese characters to Simplified (for segmentation only)."""
    if not _CJK.search(text):
        return text
    return _converter().convert(text, "zh-cn")
