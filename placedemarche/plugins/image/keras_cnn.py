"""Keras CNN backbones (transfer learning): one image extractor plugin per architecture.

Each plugin is ``keras.applications.<Arch>(include_top=False, pooling="avg")`` with the
architecture's own ``preprocess_input``. ``weights="imagenet"`` is resolved through the Keras
cache (``$KERAS_HOME/models``, default ``~/.keras/models``): online, Keras downloads the file
there once; offline, a missing file gives an error naming it. ``weights`` may also be the
path of a local ``.h5`` file, or None (random initialisation, for tests only).

``backend="openvino"`` runs the same network with OpenVINO instead of TensorFlow: the Keras
model is converted once by ``openvino.convert_model`` (fp32, same function: per-row cosine to
Keras >= 0.9999) and kept in the model cache like the torch extractors' exports (see
``placedemarche.features.inference``); with ``weights=None`` the random network is converted in
memory each time, never cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from placedemarche import ImageExtractor, hookimpl
from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.progress import task
from placedemarche.core.runtime import quiet_tensorflow


BACKENDS = ("keras", "openvino")


class WeightsUnavailableError(PlaceDeMarcheError):
    """Pretrained weights are neither in the Keras cache nor downloadable."""


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


class KerasBackbone(ImageExtractor):
    """Base class: a headless keras.applications CNN with global average pooling.

    Subclasses set ``application`` (the keras.applications class name), ``preprocess_module``
    (the keras.applications module whose ``preprocess_input`` applies), ``weights_file`` (the
    name of the ImageNet no-top weights file in the Keras cache; MobileNets fill in ``{alpha}``
    and ``{size}``) and, where 224 is not right, ``default_size``.

    Args:
        weights: "imagenet", a path to a local .h5 weights file, or None.
        batch_size: images per forward pass.
        input_size: square input size (architectures with a fixed size ignore other values
            only when loading ImageNet weights would fail: then an error says so).
        workers: threads decoding images.
        backend: "keras" (TensorFlow, the reference) or "openvino" (the converted model, run
            with as many threads as the process's CPU share; needs the ``openvino`` extra).

    Usage::

        X = MobileNetExtractor(alpha=0.75).fit_transform(image_paths)
    """

    requires = ("tensorflow", "keras", "cv2")
    extra = "keras"
    transient = ("model_", "session_")  # the Keras model is rebuilt on demand, never pickled
    application: ClassVar[str] = ""
    preprocess_module: ClassVar[str] = ""
    default_size: ClassVar[int] = 224
    fixed_size: ClassVar[bool] = False  # NASNetMobile with ImageNet weights needs 224
    weights_file: ClassVar[str] = ""

    def __init__(self, weights: str | None = "imagenet", batch_size: int = 32,
                 input_size: int | None = None, workers: int | None = None, backend: str = "keras"):
        self.weights = weights
        self.batch_size = batch_size
        self.input_size = input_size
        self.workers = workers
        self.backend = backend

    # -- the interface the classifier's fine-tuning builds on -----------------------------
    def image_size(self) -> int:
        return int(self.input_size or self.default_size)

    def _application_kwargs(self) -> dict:
        return {}

    def _weights_file_fields(self) -> dict:
        return {}

    def expected_weights_file(self) -> str:
        """Name of the ImageNet no-top weights file Keras looks for in its cache."""
        return self.weights_file.format(**self._weights_file_fields())

    def resolved_weights(self) -> str | None:
        """What Keras is given: None, "imagenet" (to download), or the path of a local file
        (given, or the ImageNet file found in the Keras cache)."""
        weights = self.weights
        if weights not in (None, "imagenet"):
            weights = str(Path(weights).expanduser())
            if not Path(weights).is_file():
                raise WeightsUnavailableError(f"{self.name}: weights file not found: {weights}")
        elif weights == "imagenet" and self.expected_weights_file():
            cached = keras_cache_dir() / self.expected_weights_file()
            if cached.is_file():
                # Keras reads KERAS_HOME once, at import; resolving the file here honours
                # the variable as it is now and never touches the network.
                weights = str(cached)
        return weights

    def load_base(self):
        """The headless, average-pooled backbone with this plugin's weights."""
        self.require()
        quiet_tensorflow()
        import keras

        size = self.image_size()
        if size < 32:
            raise PlaceDeMarcheError(f"{self.name}: input_size must be at least 32, got {size}")
        if self.fixed_size and self.weights == "imagenet" and size != self.default_size:
            raise PlaceDeMarcheError(
                f"{self.name}: ImageNet weights need input_size={self.default_size}, got {size}")
        weights = self.resolved_weights()
        build = getattr(keras.applications, self.application)
        try:
            return build(include_top=False, weights=weights, pooling="avg",
                         input_shape=(size, size, 3), **self._application_kwargs())
        except Exception as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            if weights is None:
                raise PlaceDeMarcheError(f"{self.name}: cannot build the network: {reason}") from None
            if weights != "imagenet":  # a local file, given or found in the cache
                raise WeightsUnavailableError(f"{self.name}: cannot load weights {weights}: {reason}") from None
            expected = keras_cache_dir() / self.expected_weights_file()
            raise WeightsUnavailableError(
                f"{self.name}: ImageNet weights not in the Keras cache ({expected}) and the "
                f"download failed ({type(exc).__name__}); connect once, copy the file there "
                "(set KERAS_HOME), or pass weights=PATH.h5"
            ) from None

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        """The architecture's preprocess_input on float32 RGB 0..255 batches."""
        import importlib

        module = importlib.import_module(f"keras.applications.{self.preprocess_module}")
        return module.preprocess_input(np.array(batch, dtype=np.float32, copy=True))

    # -- extraction ----------------------------------------------------------------------
    def runtime_backend(self) -> str:
        """The backend ``transform`` runs; a one-line error names the extra when it is missing."""
        from placedemarche.features.inference import module_available

        if self.backend not in BACKENDS:
            raise PlaceDeMarcheError(f"{self.name}: unknown backend '{self.backend}': use {' or '.join(BACKENDS)}")
        self.require()
        if self.backend == "openvino" and not module_available("openvino"):
            raise MissingDependencyError(
                f'{self.name}: backend \'openvino\' needs openvino: pip install "placedemarche[openvino]"')
        return self.backend

    def runtime_params(self) -> dict:
        """What the feature cache adds to ``get_params()``: for OpenVINO, how the model was converted."""
        from placedemarche.features.inference import runtime_params

        return runtime_params(self.runtime_backend(), "fp32", source="keras")

    def fit(self, X, y=None):
        self._predictor()
        return self

    def _model(self):
        if getattr(self, "model_", None) is None:
            self.model_ = self.load_base()
        return self.model_

    def _predictor(self):
        """A function from a preprocessed batch to its features: the Keras model's compiled
        predict step, or the OpenVINO conversion of it (from the model cache)."""
        if self.runtime_backend() == "keras":
            # predict_on_batch runs Keras's compiled predict step: eager model(x) calls are
            # markedly slower, and predict() would rebuild a dataset per batch
            return self._model().predict_on_batch
        if getattr(self, "session_", None) is None:
            self.session_ = self._openvino_session()
        return lambda batch: self.session_.run({self.session_.input_names[0]: batch})

    def _openvino_session(self):
        from placedemarche.features import inference

        def convert():
            import warnings

            import openvino as ov

            model = self._model()
            with warnings.catch_warnings():
                # Keras warns that the traced input is a tensor, not a list of one: harmless
                warnings.simplefilter("ignore", UserWarning)
                return ov.convert_model(model)  # the batch axis stays dynamic

        threads = inference.default_threads()
        weights = self.resolved_weights()
        if weights is None or weights == "imagenet":  # random, or downloaded by Keras: nothing to key on
            return inference.ExportedModel(convert(), "openvino", threads)
        file = Path(weights)
        spec = {"model_name": self.name, "source": "keras", "application": self.application,
                "kwargs": self._application_kwargs(), "size": self.image_size(), "backend": "openvino",
                "precision": "fp32", "weights": [file.name, file.stat().st_size, file.stat().st_mtime_ns]}
        path = inference.cached_export(spec, lambda: inference.openvino_ir_bytes(convert()), suffix=".ovir")
        return inference.ExportedModel(path, "openvino", threads)

    def transform(self, X):
        from placedemarche.data.images import iter_image_batches

        paths = list(X)
        predict = self._predictor()
        out = None
        start = 0
        with task(f"{self.name}: images", total=len(paths)) as bar:
            for batch in iter_image_batches(paths, self.image_size(), self.batch_size, self.workers):
                features = np.asarray(predict(self.preprocess(batch)), dtype=np.float32)
                if out is None:
                    out = np.zeros((len(paths), features.shape[-1]), dtype=np.float32)
                out[start:start + len(batch)] = features
                start += len(batch)
                bar.advance(len(batch))
        if out is None:  # no images: the width from the model
            out = np.zeros((0, self._model().output_shape[-1]), dtype=np.float32)
        return out


class VGG16Extractor(KerasBackbone):
    name = "vgg16"
    description = "VGG16 ImageNet features (Keras), 512-d"
    application = "VGG16"
    preprocess_module = "vgg16"
    weights_file = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


class ResNet50Extractor(KerasBackbone):
    name = "resnet50"
    aliases = ("resnet",)
    description = "ResNet50 ImageNet features (Keras), 2048-d"
    application = "ResNet50"
    preprocess_module = "resnet"
    weights_file = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


class EfficientNetB0Extractor(KerasBackbone):
    name = "efficientnetb0"
    aliases = ("efficientnet",)
    description = "EfficientNetB0 ImageNet features (Keras), 1280-d"
    application = "EfficientNetB0"
    preprocess_module = "efficientnet"
    weights_file = "efficientnetb0_notop.h5"


class NASNetMobileExtractor(KerasBackbone):
    name = "nasnetmobile"
    aliases = ("nasnet",)
    description = "NASNetMobile ImageNet features (Keras), 1056-d"
    application = "NASNetMobile"
    preprocess_module = "nasnet"
    fixed_size = True
    weights_file = "nasnet_mobile_no_top.h5"


class _AlphaBackbone(KerasBackbone):
    """A MobileNet: ``alpha`` scales the width. ImageNet weights exist for a few alphas and
    input sizes; at another size Keras loads the 224 weights (the convolutions fit any size).
    ``weights_file`` takes ``{alpha}`` (spelt as in ``alpha_names``, else as a float) and
    ``{size}``."""

    imagenet_alphas: ClassVar[tuple[float, ...]] = ()
    imagenet_sizes: ClassVar[tuple[int, ...]] = ()
    alpha_names: ClassVar[dict[float, str]] = {}

    def __init__(self, weights: str | None = "imagenet", alpha: float = 1.0, batch_size: int = 32,
                 input_size: int | None = None, workers: int | None = None, backend: str = "keras"):
        super().__init__(weights=weights, batch_size=batch_size, input_size=input_size, workers=workers,
                         backend=backend)
        self.alpha = alpha

    def _application_kwargs(self):
        return {"alpha": self.alpha}

    def _weights_file_fields(self):
        alpha = float(self.alpha)
        size = self.image_size()
        return {"alpha": self.alpha_names.get(alpha, str(alpha)),
                "size": size if size in self.imagenet_sizes else 224}

    def load_base(self):
        if self.weights == "imagenet" and float(self.alpha) not in self.imagenet_alphas:
            raise PlaceDeMarcheError(
                f"{self.name}: no ImageNet weights for alpha={self.alpha}: use one of "
                f"{', '.join(f'{a:g}' for a in self.imagenet_alphas)}, or weights=None")
        return super().load_base()


class MobileNetExtractor(_AlphaBackbone):
    name = "mobilenet"
    aliases = ("mobilenetv1",)
    description = "MobileNet v1 ImageNet features (Keras; alpha sets the width)"
    application = "MobileNet"
    preprocess_module = "mobilenet"
    imagenet_alphas = (0.25, 0.5, 0.75, 1.0)
    imagenet_sizes = (128, 160, 192, 224)
    alpha_names = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
    weights_file = "mobilenet_{alpha}_{size}_tf_no_top.h5"


class MobileNetV2Extractor(_AlphaBackbone):
    name = "mobilenetv2"
    description = "MobileNetV2 ImageNet features (Keras; alpha sets the width)"
    application = "MobileNetV2"
    preprocess_module = "mobilenet_v2"
    imagenet_alphas = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    imagenet_sizes = (96, 128, 160, 192, 224)
    weights_file = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5"


BACKBONES = (VGG16Extractor, ResNet50Extractor, EfficientNetB0Extractor, NASNetMobileExtractor,
             MobileNetExtractor, MobileNetV2Extractor)


@hookimpl
def register_image_extractors(register):
    for backbone in BACKBONES:
        register(backbone)
