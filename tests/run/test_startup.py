"""Start-up and numeric formats (issue 16): what scoring imports, the ONNX graph cache, the
CPU-flag format choice, the torch-free tokeniser and TF-IDF, the reused local server."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.config import models_dir
from pipeline.models.formats import choose_format
from pipeline.models.transformer import onnx as ox

shipped = pytest.mark.skipif(
    not (models_dir() / "default" / "model.safetensors").is_file(), reason="no shipped model")


def test_format_choice_follows_cpu_flags_and_the_models_checked_formats():
    checked = {"formats": ["fp32", "int8"]}
    assert choose_format("auto", checked, {"avx512_vnni"})[0] == "int8"
    assert choose_format("auto", checked, {"amx_int8"})[0] == "int8"
    assert choose_format("auto", checked, {"avx2"})[0] == "fp32"  # fallback
    assert choose_format("auto", {}, {"avx512_vnni"})[0] == "fp32"  # not checked
    assert choose_format("int8", {}, set()) == ("int8", "requested")
    assert choose_format("bf16", {}, set()) == ("bf16", "requested")
    with pytest.raises(ValueError):
        choose_format("fp16", {}, set())


def test_auto_takes_bf16_only_where_checked_the_cpu_has_it_and_the_input_repays_torch():
    both = {"formats": ["fp32", "bf16"]}
    amx = {"amx_bf16", "amx_int8", "avx512_bf16"}
    assert choose_format("auto", both, amx, input_bytes=None) == (
        "bf16", "CPU has amx_bf16; bf16 passed the model's accuracy check")
    assert choose_format("auto", both, {"avx512_bf16"}, input_bytes=2_000_000)[0] == "bf16"
    fmt, why = choose_format("auto", both, amx, input_bytes=30_000, bf16_min_bytes=500_000)
    assert fmt == "fp32" and "30,000 bytes" in why and "int8 is not among" in why
    assert choose_format("auto", both, {"avx2"}, input_bytes=None)[0] == "fp32"
    # a model not checked in bf16 never gets it, whatever the CPU
    assert choose_format("auto", {"formats": ["fp32"]}, amx)[0] == "fp32"


def test_a_run_decides_the_format_once_from_its_input_size(tmp_path, monkeypatch):
    import json

    from pipeline.config import Settings
    from pipeline.models import formats
    from pipeline.models.load import run_format

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    (folder / "revsat_model.json").write_text(json.dumps({"formats": ["fp32", "bf16"]}))
    monkeypatch.setattr(formats, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    settings = Settings(model=str(folder), bf16_min_input_mb=1.0)
    small, why = run_format(settings, folder, 40_000)
    assert small.numeric_format == "fp32" and "too small" in why
    big, why = run_format(settings, folder, 5_000_000)
    assert big.numeric_format == "bf16" and big.model_options()["numeric_format"] == "bf16"
    assert settings.numeric_format == "auto"  # the caller's settings are left as they were
    onnx, _ = run_format(settings.model_copy(update={"backend": "onnx"}), folder, 5_000_000)
    assert onnx.numeric_format == "fp32"  # ONNX Runtime by name: no torch bf16
    named, why = run_format(settings.model_copy(update={"numeric_format": "fp32"}), folder, 9e9)
    assert named.numeric_format == "fp32" and why is None


@shipped
def test_onnx_scoring_path_imports_no_torch_and_finds_the_cached_graph(tmp_path):
    # what a small run loads, on any CPU: run_format keeps a 30 kB input on ONNX Runtime
    code = ("import sys, flows.score; from pipeline.config import Settings; "
            "from pipeline.models.load import load, inference_info, run_format; "
            "s, _ = run_format(Settings(), 'default', 30_000); "
            "c = load('default', s); print(inference_info(c)['backend'], "
            "'torch' in sys.modules, 'transformers' in sys.modules, "
            "'matplotlib' in sys.modules, 'sklearn' in sys.modules, 'scipy.stats' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # exports once
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["onnx", "False", "False", "False", "False", "False"], out
    key = ox.weights_key(models_dir() / "default")
    assert any(p.is_file() for p in ox.graph_paths(models_dir() / "default", key, "fp32", None))


@shipped
def test_fast_tokenizer_equals_transformers():
    from conftest import sample_labelled
    from transformers import AutoTokenizer

    from pipeline.models.transformer.tokenizer import FastTokenizer

    folder = models_dir() / "default"
    texts = ["query: " + t for t in sample_labelled()["text"]] + ["query: " + "long text " * 300]
    ours, theirs = FastTokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    for truncation in (False, True):
        assert (ours(texts, truncation=truncation, max_length=128)["input_ids"]
                == theirs(texts, truncation=truncation, max_length=128)["input_ids"])
    assert ours.pad_token_id == theirs.pad_token_id


def test_tfidf_space_equals_sklearn(tiny_baseline_dir):
    from conftest import sample_labelled
    from sklearn.feature_extraction.text import TfidfVectorizer

    from pipeline.models.baseline import BaselineModel, _identity, _ngrams
    from pipeline.text.preprocess import preprocess

    model = BaselineModel.load(tiny_baseline_dir)
    docs = [_ngrams(t) for t in preprocess(sample_labelled())["tokens"]] + [[], ["zz-unknown"]]
    ref = TfidfVectorizer(analyzer=_identity, sublinear_tf=True)
    ref.vocabulary_, ref.idf_ = model.vectorizer.vocabulary_, model.vectorizer.idf_
    assert abs(ref.transform(docs) - model.vectorizer.transform(docs)).max() < 1e-12


def test_scipy_special_equals_scipy_stats():
    from scipy import special, stats

    from pipeline.analytics.incidents import adjust

    p = np.random.default_rng(0).random(200) ** 3
    np.testing.assert_allclose(adjust(p), stats.false_discovery_control(p, method="bh"))
    z = np.linspace(-4, 6, 50)
    np.testing.assert_allclose(special.ndtr(-z), stats.norm.sf(z))


def test_local_server_is_reused(tmp_path, monkeypatch):
    from revsat import local_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    first = local_server.ensure_local_server(idle_minutes=1, startup_timeout=180)
    try:
        assert local_server.ensure_local_server(idle_minutes=1) == first
        assert local_server._healthy(first)
    finally:
        assert local_server.stop_local_server()


def test_heartbeats_off_only_on_a_server_of_our_own(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.settings import get_current_settings as current

    from pipeline.config import Settings
    from revsat.cli import _prefect_api

    default = current().flows.heartbeat_frequency
    assert default is not None
    with _prefect_api(Settings(local_server=False)):  # Prefect's temporary server
        assert current().flows.heartbeat_frequency is None
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.example:4200/api"}):
        with _prefect_api(Settings(local_server=True)):  # a configured server: untouched
            assert current().flows.heartbeat_frequency == default
            assert PREFECT_API_URL.value() == "http://prefect.example:4200/api"
    assert current().flows.heartbeat_frequency == default


def test_two_installs_sharing_prefect_home_keep_their_own_servers(tmp_path, monkeypatch):
    # A second checkout (another interpreter or Prefect settings) once replaced the shared
    # state file, and the first server stopped itself under a running flow.
    from revsat import local_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    first = local_server.ensure_local_server(idle_minutes=1, startup_timeout=180)
    try:
        monkeypatch.setenv("PREFECT_REVSAT_TEST_OTHER_INSTALL", "1")  # another fingerprint
        second = local_server.ensure_local_server(idle_minutes=1, startup_timeout=180)
        try:
            assert second != first
            time.sleep(7)  # longer than the watchdog's 5 s check
            assert local_server._healthy(first) and local_server._healthy(second)
        finally:
            assert local_server.stop_local_server()
        monkeypatch.delenv("PREFECT_REVSAT_TEST_OTHER_INSTALL")
        assert local_server.ensure_local_server(idle_minutes=1) == first
    finally:
        assert local_server.stop_local_server()


def test_bench_loads_the_model_in_a_child_before_timing(tiny_baseline_dir):
    """The bench's warm-up (where a fresh machine exports the ONNX graph) runs in a child
    process and fails loudly for a model that does not load."""
    from pipeline.config import Settings
    from revsat.bench import warm_model

    assert warm_model(str(tiny_baseline_dir), Settings(model=str(tiny_baseline_dir))) > 0
    with pytest.raises(subprocess.CalledProcessError):
        warm_model(str(tiny_baseline_dir / "missing"), Settings())


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_fast_exit_runs_exit_handlers_flushes_and_keeps_the_code():
    done = _python("import atexit, sys; from revsat.cli import _exit_now\n"
                   "atexit.register(lambda: print('handler ran'))\n"
                   "print('partial line', end=''); sys.stderr.write('err');"
                   "_exit_now(3); print('never')")
    assert done.returncode == 3
    assert done.stdout == "partial linehandler ran\n" and done.stderr == "err"


def test_fast_exit_waits_for_a_live_thread_and_a_message_code():
    live = _python("import threading, time; from revsat.cli import _exit_now\n"
                   "t = threading.Thread(target=time.sleep, args=(0.5,)); t.start()\n"
                   "_exit_now(0); print('normal exit path')")
    assert live.returncode == 0 and "normal exit path" in live.stdout
    text = _python("from revsat.cli import _exit_now\n_exit_now('a message'); print('went on')")
    assert "went on" in text.stdout


def test_cli_run_is_complete_after_the_fast_exit(tmp_path, tiny_baseline_dir):
    """A real run in a fresh process: every table written and readable, the summary printed."""
    import duckdb
    import pandas as pd
    from conftest import SAMPLE

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "revsat.cli", "score", str(SAMPLE), "--out", str(out),
         "--model", str(tiny_baseline_dir), "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    reviews = pd.read_parquet(out / "reviews.parquet")
    with duckdb.connect(str(out / "revsat.duckdb"), read_only=True) as db:
        assert db.execute("select count(*) from reviews").fetchone()[0] == len(reviews) > 0
    assert (out / "report.html").stat().st_size > 0
    assert "report.html" in done.stdout
