"""bf16 where the processor has it (features/inference.py): capability detected at run time,
``precision="auto"``, refusals with their reason elsewhere, the precision used in cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin
from placedemarche.features import inference

NO_BF16 = frozenset({"FP32", "INT8", "BIN", "EXPORT_IMPORT"})
WITH_BF16 = frozenset({"FP32", "BF16", "INT8", "BIN", "EXPORT_IMPORT"})
CNN = "efficientnet-lite0:weights=None"


@pytest.fixture
def processor(monkeypatch):
    """Pretend to run on a processor with (or without) bf16 arithmetic."""
    def choose(capabilities, arm=False):
        monkeypatch.setattr(inference, "cpu_capabilities", lambda: capabilities)
        monkeypatch.setattr(inference, "_arm", lambda: arm)
    return choose


def test_capabilities_are_read_from_this_machine():
    inference.cpu_capabilities.cache_clear()
    found = inference.cpu_capabilities()
    assert "FP32" in found
    if inference.module_available("openvino"):
        import openvino as ov

        reported = {c.upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
        assert found == reported and inference.has_bf16() == ("BF16" in reported)


def test_without_bf16_it_is_refused_with_the_reason_and_auto_is_fp32(processor):
    processor(NO_BF16)
    for backend in ("openvino", "onnx", "torch"):
        assert inference.resolve_precision("auto", backend, "x") == "fp32"
        with pytest.raises(PlaceDeMarcheError) as info:
            inference.check_precision("bf16", backend, "efficientnet-lite0")
        message = str(info.value)
        assert "\n" not in message and "this processor has no bf16 arithmetic" in message
        assert "BIN, EXPORT_IMPORT, FP32, INT8" in message and "use fp32, int8 or auto" in message
    assert inference.resolve_backend("auto", "x", "auto") in ("onnx", "torch")


def test_with_bf16_openvino_runs_it_and_auto_chooses_it(processor):
    processor(WITH_BF16)
    inference.check_precision("bf16", "openvino", "bert")
    assert inference.resolve_precision("auto", "openvino", "bert") == "bf16"
    assert inference.resolve_precision("fp32", "openvino", "bert") == "fp32"
    with pytest.raises(PlaceDeMarcheError, match="no bf16 kernels on x86"):
        inference.check_precision("bf16", "onnx", "bert")
    assert inference.resolve_precision("auto", "onnx", "bert") == "fp32"
    with pytest.raises(PlaceDeMarcheError, match="backend 'torch' does not run it"):
        inference.check_precision("bf16", "torch", "bert")
    if inference.module_available("openvino"):
        assert inference.resolve_backend("auto", "bert", "auto") == "openvino"
        assert inference.resolve_backend("auto", "bert", "fp32") in ("onnx", "torch")
    processor(WITH_BF16, arm=True)
    assert inference.resolve_precision("auto", "onnx", "bert") == "bf16"


def test_the_precision_used_is_in_the_cache_key(processor):
    pytest.importorskip("openvino")
    processor(WITH_BF16)
    auto = create_plugin("image", f"{CNN},backend='openvino',precision='auto'")
    assert auto.runtime_precision() == "bf16" and auto.runtime_params()["precision"] == "bf16"
    fp32 = create_plugin("image", f"{CNN},backend='openvino'")
    assert "precision" not in fp32.runtime_params()  # fp32 keys stay those of earlier versions
    processor(NO_BF16)
    assert auto.runtime_precision() == "fp32" and "precision" not in auto.runtime_params()


def test_openvino_is_asked_for_bf16_inference(tmp_path):
    """The bf16 hint reaches OpenVINO's compiled model; on a processor without bf16 it runs fp32
    (what the model reports), which is why the precision is checked before, not assumed."""
    pytest.importorskip("openvino")
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(8, 4).eval()
    path = tmp_path / "linear.onnx"
    torch.onnx.export(model, (torch.zeros(1, 8),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}}, dynamo=False)
    exported = inference.ExportedModel(path, "openvino", threads=1, precision="bf16")
    x = np.random.default_rng(0).random((3, 8), dtype=np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(exported.run({"x": x}), expected, atol=0.05)  # bf16 keeps ~3 significant digits


@pytest.mark.slow
@pytest.mark.skipif(not inference.has_bf16(), reason="the processor has no bf16 arithmetic (AMX / AVX512-BF16)")
def test_bf16_features_stay_close_to_fp32(flipkart_dir):
    """On a processor with bf16: efficientnet-lite0 bf16 features against fp32 (measured elsewhere
    at cosine >= 0.9955)."""
    paths = sorted((flipkart_dir / "images").glob("*.jpg"))[:16]
    fp32 = create_plugin("image", "efficientnet-lite0:backend='openvino'").fit_transform(paths)
    bf16 = create_plugin("image", "efficientnet-lite0:backend='openvino',precision='bf16'").fit_transform(paths)
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() >= 0.99
