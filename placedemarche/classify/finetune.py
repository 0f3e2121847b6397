"""Transfer learning with fine-tuning for Keras backbones: frozen base + new head, then the top
layers unfrozen at a lower learning rate, with data augmentation and early stopping.

On a CPU, running the whole network on freshly augmented images every epoch costs hours for a
1000-image, 5-fold study. The network is therefore cut in two at the fine-tuning boundary:
the frozen *bottom* runs once per image and per augmented view (view 0 is the image itself,
the others are random flips, rotations, zooms and contrast changes from Keras preprocessing
layers), and only the *top* (the unfrozen layers and the new head) trains, on those cached
activations. Every epoch sees every view; the set of views is fixed rather than redrawn each
epoch, which is the price of making the study run in minutes. Cross-validation computes the
bottleneck of every image once and trains one top per fold on the training rows only: an
image's own views never reach a model that tests on it.

The saved model is the whole network (bottom + fine-tuned top + head) in one ``.keras`` file.

Usage::

    split = BackboneSplit(create_plugin("image", "mobilenetv2:alpha=0.35"), unfreeze=10)
    B = split.bottleneck(paths, views=3, seed=0)
    top, history = train_top(split, B, y, n_classes=3, config=FineTuneConfig(epochs=5))
    model = FineTunedImageModel.from_parts(split, top)
    proba = model.predict_proba(new_paths)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.progress import task


@dataclass
class FineTuneConfig:
    """Settings of the fine-tuning.

    Attributes:
        backbone: Keras image extractor spec (``"mobilenet:alpha=0.75"``).
        unfreeze: number of top layers of the backbone that train in the second phase
            (0: only the new head trains). The cut must fall where the network is a plain chain.
        epochs: most epochs of the first phase (base frozen, head only).
        finetune_epochs: most epochs of the second phase (top layers unfrozen; 0 skips it).
        learning_rate / finetune_learning_rate: Adam learning rates of the two phases.
        batch_size: training batch size.
        augment: random flips, rotations, zooms and contrast changes of the training images.
        views: images per product seen in training: the original plus ``views - 1`` augmented
            copies (1 when ``augment`` is off).
        patience: early stopping patience (epochs without a better validation loss).
        validation_fraction: share of the training rows held out for early stopping.
        dropout: dropout before the new softmax layer.
        class_weight: weigh classes inversely to their frequency in the loss.
        seed: seed of the augmentation, the validation split and the weights' initialisation.
    """

    backbone: str = "mobilenet:alpha=0.75"
    unfreeze: int = 6
    epochs: int = 15
    finetune_epochs: int = 10
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    batch_size: int = 32
    augment: bool = True
    views: int = 4
    patience: int = 3
    validation_fraction: float = 0.1
    dropout: float = 0.2
    class_weight: bool = False
    seed: int = 0

    def check(self) -> None:
        if self.unfreeze < 0:
            raise PlaceDeMarcheError(f"--unfreeze must be 0 or more, got {self.unfreeze}")
        if self.epochs < 1 or self.finetune_epochs < 0:
            raise PlaceDeMarcheError("fine-tuning needs --epochs >= 1 and --finetune-epochs >= 0")
        if self.views < 1:
            raise PlaceDeMarcheError(f"--views must be 1 or more, got {self.views}")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise PlaceDeMarcheError(
                f"validation fraction must be in [0, 0.5), got {self.validation_fraction}")

    def n_views(self) -> int:
        return self.views if self.augment else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def augmentation_layers(seed: int):
    """The augmentation pipeline (Keras preprocessing layers, which replace the deprecated
    ``ImageDataGenerator``): horizontal flip, small rotation and zoom, contrast change. The
    product photos sit on white, so pixels brought in by a rotation or zoom are white."""
    import keras

    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.08, fill_mode="constant", fill_value=255.0, seed=seed + 1),
        keras.layers.RandomZoom((-0.15, 0.1), fill_mode="constant", fill_value=255.0, seed=seed + 2),
        keras.layers.RandomContrast(0.2, seed=seed + 3),
    ], name="augmentation")


class BackboneSplit:
    """A Keras backbone cut into a frozen bottom and a top of ``unfreeze`` trainable layers.

    Args:
        backbone: a :class:`~placedemarche.plugins.image.keras_cnn.KerasBackbone` instance.
        unfreeze: number of the backbone's last layers (before its pooling) that fine-tune.
    """

    def __init__(self, backbone, unfreeze: int):
        if not hasattr(backbone, "load_base"):
            raise PlaceDeMarcheError(
                f"image extractor '{getattr(backbone, 'name', backbone)}' is not a Keras backbone: "
                "fine-tuning needs one of vgg16, resnet50, efficientnetb0, nasnetmobile, mobilenet, "
                "mobilenetv2")
        from placedemarche.core.runtime import quiet_tensorflow

        quiet_tensorflow()
        import keras

        self.backbone = backbone
        self.unfreeze = unfreeze
        self.base = backbone.load_base()
        layers = self.base.layers
        pool = layers[-1]
        if not isinstance(pool, keras.layers.GlobalAveragePooling2D):
            raise PlaceDeMarcheError(f"{backbone.name}: expected a global-average-pooled backbone")
        body = layers[:-1]
        if unfreeze >= len(body) - 1:
            raise PlaceDeMarcheError(
                f"{backbone.name}: cannot unfreeze {unfreeze} layers, the network has {len(body) - 1}")
        self.top_layers = body[len(body) - unfreeze:] if unfreeze else []
        self._check_chain(body, unfreeze)
        cut = body[len(body) - unfreeze - 1]
        self.bottom = keras.Model(self.base.input, cut.output, name="bottom")
        self.bottleneck_shape = tuple(int(d) for d in cut.output.shape[1:])
        self.bottom.trainable = False

    def _check_chain(self, body, unfreeze: int) -> None:
        """The layers above the cut must form a plain chain (no skip connection crosses it)."""
        for previous, layer in zip(body[len(body) - unfreeze - 1:], self.top_layers):
            inbound = [t._keras_history.operation for t in _as_list(layer.input)]
            if inbound != [previous]:
                raise PlaceDeMarcheError(
                    f"{self.backbone.name}: cannot cut the network {unfreeze} layers from the top "
                    f"(layer '{layer.name}' has a skip connection); try another --unfreeze value")

    def bottleneck(self, paths: Sequence, views: int = 1, seed: int = 0) -> np.ndarray:
        """Bottom activations ``(views, n, *bottleneck_shape)`` as float16; view 0 is unaugmented."""
        from placedemarche.data.images import iter_image_batches

        paths = list(paths)
        size = self.backbone.image_size()
        batch = int(getattr(self.backbone, "batch_size", 32) or 32)
        out = np.zeros((views, len(paths), *self.bottleneck_shape), dtype=np.float16)
        augment = augmentation_layers(seed) if views > 1 else None
        start = 0
        with task(f"{self.backbone.name}: frozen base x {views} view(s)", total=len(paths) * views) as bar:
            for images in iter_image_batches(paths, size, batch, getattr(self.backbone, "workers", None)):
                images = images.astype(np.float32)
                for view in range(views):
                    x = images if view == 0 else np.clip(
                        np.asarray(augment(images, training=True)), 0.0, 255.0)
                    out[view, start:start + len(images)] = np.asarray(
                        self.bottom(self.backbone.preprocess(x), training=False), dtype=np.float16)
                    bar.advance(len(images))
                start += len(images)
        return out

    def build_top(self, n_classes: int, dropout: float, seed: int):
        """Fresh copies of the top layers (with the backbone's weights) and a new softmax head."""
        import keras

        keras.utils.set_random_seed(seed)
        inputs = keras.Input(self.bottleneck_shape, name="bottleneck")
        x = inputs
        for layer in self.top_layers:
            clone = layer.__class__.from_config(layer.get_config())
            x = clone(x)
            clone.set_weights(layer.get_weights())
            if isinstance(clone, keras.layers.BatchNormalization):
                clone.trainable = False  # keeps the ImageNet statistics: inference mode
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
        return keras.Model(inputs, outputs, name="top")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _set_top_trainable(top, trainable: bool) -> None:
    import keras

    for layer in top.layers:
        if layer.name in ("head", "head_dropout", "pool") or isinstance(layer, keras.layers.InputLayer):
            continue
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def _validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    counts = np.bincount(y)
    if fraction <= 0 or counts[counts > 0].min() < 2 or int(round(fraction * len(y))) < len(counts):
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(val)


def train_top(split: BackboneSplit, B: np.ndarray, y: Sequence[int], n_classes: int,
              config: FineTuneConfig):
    """Train the head (phase 1), then the unfrozen top layers (phase 2) on bottleneck views.

    ``B`` is ``(views, n, ...)`` from :meth:`BackboneSplit.bottleneck` for the training rows.
    Returns the trained top model and its history: a list of per-epoch dicts with ``phase``,
    ``loss``, ``accuracy`` and (when a validation split exists) ``val_loss``, ``val_accuracy``.
    """
    import keras

    y = np.asarray(y, dtype=np.int64)
    train, val = _validation_split(y, config.validation_fraction, config.seed)
    views = B.shape[0]
    X_train = B[:, train].reshape(-1, *B.shape[2:])
    y_train = np.tile(y[train], views)
    validation = (B[0, val].astype(np.float32), y[val]) if len(val) else None
    class_weight = None
    if config.class_weight:
        counts = np.bincount(y, minlength=n_classes).astype(float)
        class_weight = {c: float(len(y) / (n_classes * n)) for c, n in enumerate(counts) if n}

    top = split.build_top(n_classes, config.dropout, config.seed)
    history: list[dict[str, Any]] = []
    phases = [("head", config.epochs, config.learning_rate, False)]
    if config.finetune_epochs and split.unfreeze:
        phases.append(("finetune", config.finetune_epochs, config.finetune_learning_rate, True))
    for phase, epochs, rate, trainable in phases:
        _set_top_trainable(top, trainable)
        top.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
        monitor = "val_loss" if validation else "loss"
        callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience,
                                                   restore_best_weights=True)]
        with task(f"fine-tuning: {phase}", total=epochs) as bar:
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: bar.advance(1)))
            fit = top.fit(X_train, y_train, batch_size=config.batch_size, epochs=epochs, verbose=0,
                          shuffle=True, validation_data=validation, class_weight=class_weight,
                          callbacks=callbacks)
        keys = list(fit.history)
        for epoch in range(len(fit.history[keys[0]])):
            history.append({"phase": phase, **{k: float(fit.history[k][epoch]) for k in keys}})
    return top, history


@dataclass
class FineTunedImageModel:
    """The whole fine-tuned network (bottom + top + head) and the backbone that preprocesses."""

    backbone: Any  # the KerasBackbone plugin (its config; the network lives in ``network``)
    network: Any = field(repr=False)

    @classmethod
    def from_parts(cls, split: BackboneSplit, top) -> "FineTunedImageModel":
        import keras

        inputs = keras.Input(split.base.input.shape[1:], name="image")
        outputs = top(split.bottom(inputs, training=False))
        return cls(split.backbone, keras.Model(inputs, outputs, name="finetuned"))

    def predict_proba(self, paths: Sequence) -> np.ndarray:
        from placedemarche.data.images import iter_image_batches

        paths = list(paths)
        size = self.backbone.image_size()
        out = []
        with task(f"{self.backbone.name} (fine-tuned): images", total=len(paths)) as bar:
            for images in iter_image_batches(paths, size, 32, getattr(self.backbone, "workers", None)):
                x = self.backbone.preprocess(images.astype(np.float32))
                out.append(np.asarray(self.network(x, training=False), dtype=np.float64))
                bar.advance(len(images))
        n = int(self.network.output_shape[-1])
        return np.concatenate(out) if out else np.zeros((0, n))

    def save(self, path: Path) -> None:
        self.network.save(path)

    @classmethod
    def load(cls, backbone, path: Path) -> "FineTunedImageModel":
        from placedemarche.core.runtime import quiet_tensorflow

        quiet_tensorflow()
        import keras

        return cls(backbone, keras.models.load_model(path, compile=False))
