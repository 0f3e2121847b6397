"""Inference backends for the deep extractors: torch, or an ONNX export run by onnxruntime or OpenVINO.

An extractor builds its network in torch (the reference), and for the ``onnx`` / ``openvino``
backends exports it once with ``torch.onnx.export`` into the model cache (``PM_MODEL_CACHE``,
default ``<user cache dir>/placedemarche/models``, under ``exports/``). An export is keyed by
what it was made from: the model's identity, backend, precision, the shapes it takes and the
versions of torch, onnx and the runtime; it is written atomically with a sidecar recording its
sha256, so a corrupt, cut or stale file is rebuilt, never half-read.

``int8`` quantises the fp32 export with onnxruntime's tools: statically (QDQ, calibrated on
sample inputs the extractor supplies) for CNNs, dynamically (weights int8, activations
quantised on the fly) for transformers. ``bf16`` runs the fp32 export in bfloat16 where the
processor has bf16 arithmetic (AMX / AVX512-BF16, detected at run time: OpenVINO's
``OPTIMIZATION_CAPABILITIES``, else the CPU flags); ``auto`` is bf16 there and fp32 elsewhere.

The Keras backbones use the same cache for their OpenVINO conversion (``openvino.convert_model``
of the Keras model, packed into one ``.ovir`` file by ``openvino_ir_bytes``).

Nothing heavy is imported at module level (``pm list-extractors`` must stay instant).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.runtime import default_threads  # noqa: F401 (plugins' thread budget)
from placedemarche.core.files import atomic_write_bytes, atomic_write_text

BACKENDS = ("auto", "torch", "onnx", "openvino")
PRECISIONS = ("fp32", "int8", "bf16", "auto")
EXPORT_FORMAT = 2  # bump when the way models are exported changes (2: fused transformer attention)
OPSET = 17

#: The extra that installs each backend's runtime.
BACKEND_EXTRAS = {"onnx": "onnx", "openvino": "openvino"}
#: Modules each backend needs (onnxruntime's quantisation tools also serve OpenVINO's int8).
BACKEND_MODULES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported, checked without importing it (a ``None`` entry in
    ``sys.modules`` counts as absent, as it blocks the import)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(backend: str) -> list[str]:
    return [m for m in BACKEND_MODULES.get(backend, ()) if not module_available(m)]


def resolve_backend(backend: str, who: str, precision: str = "fp32") -> str:
    """The backend to run: ``auto`` is ``onnx`` when onnxruntime (and onnx) are installed, else
    ``torch`` (``int8`` needs an exported model, so ``auto`` never picks torch for it).
    Raises a one-line error naming the extra when the backend's runtime is missing."""
    if backend not in BACKENDS:
        raise PlaceDeMarcheError(f"{who}: unknown backend '{backend}': use {', '.join(BACKENDS)}")
    if backend == "auto":
        if precision in ("bf16", "auto") and has_bf16() and not missing_modules("openvino"):
            # measured on an AMX machine: OpenVINO bf16 2.2-2.8x its fp32, where onnx fp32 gained
            # nothing over torch; on AVX2 onnx fp32 ran 1.5-1.9x torch: choose from the processor
            backend = "openvino"
        else:
            backend = "onnx" if not missing_modules("onnx") or precision == "int8" else "torch"
    missing = missing_modules(backend) if backend in BACKEND_EXTRAS else []  # torch: the plugin's own `requires`
    if missing:
        raise MissingDependencyError(
            f"{who}: backend '{backend}' needs {', '.join(missing)}: "
            f'pip install "placedemarche[{BACKEND_EXTRAS[backend]}]"')
    return backend


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """What this processor computes natively, as OpenVINO names it (``FP32``, ``INT8``, ``BF16``,
    ``FP16``...): its CPU plugin's ``OPTIMIZATION_CAPABILITIES`` when OpenVINO is installed, else
    read from the CPU flags (``BF16`` for ``avx512_bf16`` or ``amx_bf16``, ARM's ``bf16``).
    Detected once per process, on the machine that runs the work (never assumed)."""
    if module_available("openvino"):
        try:
            import openvino as ov

            return frozenset(str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # a broken OpenVINO install: fall back on the flags
            pass
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    found = {"FP32"}
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        found.add("BF16")
    return frozenset(found)


def has_bf16() -> bool:
    return "BF16" in cpu_capabilities()


def _arm() -> bool:
    import platform

    return platform.machine().lower() in ("aarch64", "arm64")


def bf16_supported(backend: str) -> bool:
    """Whether ``backend`` computes in bf16 on this processor: OpenVINO wherever the CPU has bf16
    arithmetic; onnxruntime only on ARM (its CPU provider's bf16 fast-math GEMM; on x86 it has
    no bf16 kernels); torch is not offered (its CPU bf16 autocast changed features more than
    the runtimes for no gain measured)."""
    if not has_bf16():
        return False
    return backend == "openvino" or (backend == "onnx" and _arm())


def resolve_precision(precision: str, backend: str, who: str) -> str:
    """The precision run: ``auto`` is ``bf16`` where :func:`bf16_supported`, else ``fp32``;
    any other is checked (:func:`check_precision`) and returned as given."""
    if precision == "auto":
        precision = "bf16" if bf16_supported(backend) else "fp32"
    check_precision(precision, backend, who)
    return precision


def check_precision(precision: str, backend: str, who: str) -> None:
    """``fp32`` everywhere; ``int8`` with an exported model (onnx, openvino); ``bf16`` where the
    processor has bf16 arithmetic and the backend uses it (:func:`bf16_supported`), refused with
    the reason elsewhere (emulated it is slower than fp32 and less exact); ``auto`` resolves."""
    if precision not in PRECISIONS:
        raise PlaceDeMarcheError(f"{who}: unknown precision '{precision}': use fp32, int8, bf16 or auto")
    if precision == "bf16" and not bf16_supported(backend):
        if not has_bf16():
            why = (f"this processor has no bf16 arithmetic (it offers {', '.join(sorted(cpu_capabilities()))}; "
                   "bf16 needs AMX or AVX512-BF16), and emulated bf16 is slower than fp32")
        elif backend == "torch":
            why = "backend 'torch' does not run it: use backend 'openvino'"
        else:
            why = "onnxruntime's CPU provider has no bf16 kernels on x86 processors: use backend 'openvino'"
        raise PlaceDeMarcheError(f"{who}: precision 'bf16' is not offered here: {why}; "
                                 "use fp32, int8 or auto (bf16 where the processor has it)")
    if precision == "int8" and backend == "torch":
        raise PlaceDeMarcheError(f"{who}: precision 'int8' needs backend 'onnx' or 'openvino'")
    if precision == "int8" and backend == "openvino" and not module_available("onnxruntime"):
        # the QDQ / dynamic int8 model is made with onnxruntime's quantisation tools
        raise MissingDependencyError(f"{who}: precision 'int8' needs onnxruntime to quantise the model: "
                                     'pip install "placedemarche[onnx]"')


def runtime_params(backend: str, precision: str, source: str = "torch") -> dict[str, Any]:
    """What an extractor adds to its feature cache key besides ``get_params()``: the backend
    ``auto`` resolved to, the precision run when it is bf16 (``precision`` is the resolved one,
    so ``auto`` records what it became; fp32/int8 keys stay those of earlier versions), and for an exported model how it was made (export format, library
    versions), so features are recomputed when the export changes. ``source``: the framework
    the model is built in (``torch``, or ``keras`` for the Keras backbones)."""
    if backend == source:
        return {"backend": backend}
    return {"backend": backend, "export_format": EXPORT_FORMAT, "versions": library_versions(backend, source),
            **({"precision": precision} if precision == "bf16" else {})}


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set for the block only (torch's setting is process-wide:
    put back what the caller had, so one extractor does not change the next one's)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def library_versions(backend: str, source: str = "torch") -> dict[str, str]:
    """Versions that decide what an export contains and how the runtime reads it: those of the
    framework the model is built in (``source``: torch, or keras), the converter and the runtime."""
    if source == "keras":  # converted by OpenVINO itself, from the Keras model
        names = ["tensorflow", "keras", "openvino"]
    else:
        names = ["torch", "onnx"] + (["onnxruntime"] if backend == "onnx" else ["openvino", "onnxruntime"])
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def export_dir() -> Path:
    """Where exported models are kept: ``exports/`` of the model cache."""
    from placedemarche.features.model_assets import model_cache_dir

    return model_cache_dir() / "exports"


def export_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached_export(spec: dict[str, Any], build: Callable[[], bytes], cache_dir: str | os.PathLike | None = None,
                  suffix: str = ".onnx") -> Path:
    """The path of the exported model described by ``spec``, built by ``build()`` only when the
    cache has no valid copy. ``spec`` must name everything the export depends on (model
    identity, backend, precision, shapes...; ``source``: the framework, torch by default);
    library versions and the export format are added.

    The model file ``<name>-<key><suffix>`` (``.onnx``, or ``.ovir``: see ``openvino_ir_bytes``)
    is written atomically, then its sidecar ``<same>.json`` (sha256, size, spec): a file
    without a matching sidecar, or whose bytes do not match it, is rebuilt.
    """
    versions = library_versions(spec.get("backend", "onnx"), spec.get("source", "torch"))
    full = dict(spec, format=EXPORT_FORMAT, versions=versions)
    key = export_key(full)
    root = Path(cache_dir) if cache_dir else export_dir()
    path = root / f"{spec.get('model_name', 'model')}-{spec.get('backend')}-{spec.get('precision')}-{key}{suffix}"
    sidecar = path.with_suffix(".json")
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        data = path.read_bytes()
        if recorded["sha256"] == hashlib.sha256(data).hexdigest() and recorded["size"] == len(data):
            return path  # files are only ever replaced whole (os.replace): what was checked stays
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data = build()
    # the model first, the sidecar last: a crash between the two leaves a file without a
    # matching sidecar, which the next call rebuilds
    atomic_write_bytes(path, data)
    atomic_write_text(sidecar, json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                           "spec": full}, indent=1, sort_keys=True, default=str))
    return path


def export_onnx(module, example_inputs: tuple, input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """``module`` (eval mode) exported to ONNX by torch's TorchScript-based exporter.

    The dynamo exporter (torch's default) needs onnxscript, which is not a dependency; the
    TorchScript one handles these models and gives the same graphs. Its deprecation and
    tracer warnings are about the exporter, not the model, so they are silenced here.
    """
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example_inputs, buffer, dynamo=False, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, opset_version=OPSET,
                          do_constant_folding=True)
    return buffer.getvalue()


def fuse_transformer(model: bytes, model_type: str, num_heads: int, hidden_size: int) -> bytes:
    """onnxruntime's transformer optimiser: attention, embedding layer norm, skip layer norms and
    GELU as single fused operators (com.microsoft ops: onnxruntime only, not OpenVINO). The model
    must be exported with eager attention, whose graph the optimiser recognises (the SDPA graph
    of transformers 5.x is left unfused). Models it does not know are returned unchanged.

    Measured on MiniLM (2 cores, batches of 16): 1.2-1.5x the unfused export, same vectors."""
    if model_type not in ("bert",):
        return model
    from onnxruntime.transformers import optimizer

    with tempfile.TemporaryDirectory(prefix="pm-fuse-") as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "fused.onnx"
        source.write_bytes(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = optimizer.optimize_model(str(source), model_type=model_type, num_heads=num_heads,
                                             hidden_size=hidden_size)
            fused.save_model_to_file(str(target))
        return target.read_bytes()


@contextmanager
def eager_attention(model) -> Iterator[None]:
    """A transformers model switched to its eager attention for the block (the graph
    ``fuse_transformer`` recognises), then back to what it was."""
    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    if previous is None or previous == "eager" or not callable(switch):
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(previous)


def quantize_static_qdq(model: bytes, calibration: list[dict[str, Any]]) -> bytes:
    """int8 QDQ model: weights per channel (int8), activations (uint8) calibrated (min/max) on
    ``calibration``, a list of input feeds such as ``{"pixels": array}``.

    ``reduce_range`` (7-bit weights): without VNNI (AVX2 CPUs) the uint8 x int8 products
    saturate their 16-bit sums; measured on EfficientNet-Lite0 it raised the worst per-row
    cosine to fp32 from 0.88 to 0.93."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="pm-quant-") as tmp:
        source, prepared, target = (Path(tmp) / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        source.write_bytes(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
        return target.read_bytes()


def quantize_dynamic_int8(model: bytes) -> bytes:
    """int8 weights of the MatMuls (per output channel, 7-bit range: see ``quantize_static_qdq``),
    activations quantised per batch at run time (the usual scheme for transformers: no
    calibration, their activations' ranges vary per input). Measured on MiniLM, per channel
    with the reduced range gave a worst per-row cosine to fp32 of 0.989, per tensor 0.76-0.91."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="pm-quant-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # DefaultTensorType: shape inference cannot type the outputs of fused (com.microsoft) ops
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Attention"], per_channel=True, reduce_range=True,
                             extra_options={"DefaultTensorType": 1})  # onnx.TensorProto.FLOAT
        return target.read_bytes()


OVIR_MAGIC = b"PMOVIR1\n"  # an OpenVINO IR (.xml + .bin) packed into one file of the export cache


def openvino_ir_bytes(model) -> bytes:
    """An ``openvino.Model`` as one file: magic, the IR's XML length (8 bytes, little endian),
    the XML, then the weights (.bin), fp32 as converted (not compressed to fp16)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="pm-ovir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        graph, weights = xml.read_bytes(), xml.with_suffix(".bin").read_bytes()
    return OVIR_MAGIC + len(graph).to_bytes(8, "little") + graph + weights


def read_openvino_ir(core, data: bytes):
    """The ``openvino.Model`` packed by ``openvino_ir_bytes``."""
    import numpy as np
    import openvino as ov

    if not data.startswith(OVIR_MAGIC):
        raise PlaceDeMarcheError("not a packed OpenVINO model")
    start = len(OVIR_MAGIC) + 8
    end = start + int.from_bytes(data[len(OVIR_MAGIC):start], "little")
    return core.read_model(model=data[start:end], weights=ov.Tensor(np.frombuffer(data[end:], dtype=np.uint8)))


class ExportedModel:
    """An exported model run by onnxruntime or OpenVINO: ``run(feeds) -> first output``.

    onnxruntime gets ``intra_op_num_threads=threads`` (one inter-op thread, no spinning) and
    the CUDA provider before the CPU one when onnxruntime offers it; OpenVINO gets
    ``INFERENCE_NUM_THREADS=threads`` and the inference precision asked (fp32 unless
    ``precision="bf16"``: its CPU plugin would otherwise pick bf16 by itself on CPUs that have
    it); onnxruntime on ARM gets its bf16 fast-math GEMM for ``bf16``. ``model``: an ONNX file, a packed OpenVINO IR
    (``.ovir``, OpenVINO only) or an ``openvino.Model`` in memory.
    """

    def __init__(self, model, backend: str, threads: int, device: str | None = None, precision: str = "fp32"):
        self.backend = backend
        self.precision = precision
        self.threads = max(1, int(threads))
        if backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            # waiting threads sleep instead of spinning: on cores shared with other work
            # (workers side by side, other jobs), spinning takes the CPU the working thread
            # needs; measured on MiniLM at load 12-17 on 2 cores, median 29 s vs 50 s
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            if precision == "bf16":
                options.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "1")
            providers = ["CPUExecutionProvider"]
            if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            self.session = ort.InferenceSession(str(model), options, providers=providers)
            self.input_names = [i.name for i in self.session.get_inputs()]
        elif backend == "openvino":
            import openvino as ov

            core = ov.Core()
            if isinstance(model, (str, os.PathLike)):
                path = Path(model)
                model = read_openvino_ir(core, path.read_bytes()) if path.suffix == ".ovir" else str(path)
            compiled = core.compile_model(model, "CPU",
                                          {"INFERENCE_NUM_THREADS": self.threads,
                                           "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})
            self.request = compiled.create_infer_request()
            self.input_names = [p.get_any_name() for p in compiled.inputs]
        else:
            raise PlaceDeMarcheError(f"no exported-model runtime for backend '{backend}'")

    def run(self, feeds: dict[str, Any]):
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self.backend == "onnx":
            return self.session.run(None, feeds)[0]
        return self.request.infer(feeds)[0].copy()  # the request reuses its output buffer
