"""A model folder's tokenizer for scoring, without ``transformers``."""

from __future__ import annotations

import json
from pathlib import Path


class FastTokenizer:
    """The folder's ``tokenizer.json`` through the ``tokenizers`` library directly: the same ids
    as ``transformers``' fast tokenizer for what inference asks of it, without importing
    transformers (seconds of start-up)."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._truncating: int | None = None
        config = {}
        if (directory / "tokenizer_config.json").is_file():
            config = json.loads((directory / "tokenizer_config.json").read_text("utf-8"))
        pad = config.get("pad_token", "<pad>")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token_id = self._tok.token_to_id(pad) if pad else None

    def __call__(self, texts, truncation: bool = False, max_length: int | None = None,
                 verbose: bool = False) -> dict:
        want = max_length if truncation and max_length else None
        if want != self._truncating:
            if want:
                self._tok.enable_truncation(want)
            else:
                self._tok.no_truncation()
            self._truncating = want
        if isinstance(texts, str):
            return {"input_ids": self._tok.encode(texts).ids}
        return {"input_ids": [e.ids for e in self._tok.encode_batch(list(texts))]}
