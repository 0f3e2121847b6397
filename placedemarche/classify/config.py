"""What to train: :class:`TrainConfig`, its blocks (one per extractor) and groups of modalities."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from placedemarche.data.catalog import TextField
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.classify.finetune import FineTuneConfig
from placedemarche.classify.threshold import TARGET_PRECISION, check_target

FUSIONS = ("concat", "mean")
#: How a model below the first level learns the tree (:mod:`placedemarche.classify.hierarchy`).
HIERARCHIES = ("flat", "per-level")


def _spec_list(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v]


@dataclass
class TrainConfig:
    """What to train and how to evaluate it.

    Attributes:
        text: text extractor spec (``"tfidf"``, ``"bert"``), a list of several, or None.
        image: image extractor spec (``"mobilenet:alpha=0.75"``), a list of several, or None;
            with ``finetune`` one Keras backbone that is fine-tuned instead of used frozen.
        text_field: which product text the text extractors read: name, description or both.
        classifier: spec of the classifier head plugin on frozen features (``pm train
            --classifier``): ``logreg`` (default), ``"logreg:C=0.5"``, ``linear-svm``, ``svm``,
            ``rf``, ``knn``, ``mlp``, ``hist-gb`` or a third-party head.
        C: inverse regularisation, given to heads that take a ``C`` parameter unless their
            spec sets one. Every block is scaled to unit mean row norm, so one value suits
            dense CNN features and sparse TF-IDF alike (10 measured best among 1, 10, 100 on
            the Flipkart folds; accuracy moves by under 0.01).
        fusion: how several blocks combine: ``concat`` (one head on the blocks' concatenated
            features) or ``mean`` (average of the blocks' probabilities, each extractor voting
            with the same weight). A fine-tuned image block always combines by ``mean``.
        folds: stratified folds of the cross-validation (0: train only, no evaluation).
        seed: seed of the folds and of the heads (their ``random_state`` unless the spec sets it).
        class_weight: weigh classes inversely to their frequency (``class_weight="balanced"``
            for heads that take a ``class_weight`` parameter, unless their spec sets one).
        finetune: fine-tuning settings (``FineTuneConfig``) when the image block is fine-tuned.
        target_precision: the precision the automatically accepted predictions must reach;
            the decision threshold that gives it is measured on the out-of-fold predictions
            (:mod:`placedemarche.classify.threshold`) and kept in model.json.
        hierarchy: how a model trained below the first level of the category tree learns it:
            ``per-level`` (one head per level, combined along the valid paths; the default: same
            accuracy as ``flat`` on the Flipkart folds, more products answered down to the leaf at
            the target precision) or ``flat`` (one head over the leaves, summed up the tree; about
            3 times faster to train); :mod:`placedemarche.classify.hierarchy`.
        category_level: the level of the tree the model's categories are at; set by
            :func:`placedemarche.classify.train` from the catalogue (``at_level``).
    """

    text: str | list[str] | None = None
    image: str | list[str] | None = None
    text_field: TextField = "both"
    classifier: str = "logreg"
    C: float = 10.0
    fusion: str = "concat"
    folds: int = 5
    seed: int = 0
    class_weight: bool = False
    finetune: FineTuneConfig | None = None
    target_precision: float = TARGET_PRECISION
    hierarchy: str = "per-level"
    category_level: int = 1

    def check(self) -> None:
        from placedemarche.core.plugins import check_specs

        if not self.text_specs and not self.image_specs:
            raise PlaceDeMarcheError("nothing to train on: give a text and/or an image extractor")
        for option, specs in (("--text", self.text_specs), ("--image", self.image_specs)):
            twice = sorted({spec for spec in specs if specs.count(spec) > 1})
            if twice:
                raise PlaceDeMarcheError(f"{option} {twice[0]} is given twice: give each extractor once")
        check_specs({"classifier": [self.classifier]})  # registered, installed, known parameters
        if self.fusion not in FUSIONS:
            raise PlaceDeMarcheError(f"unknown fusion '{self.fusion}': use {' or '.join(FUSIONS)}")
        if self.folds == 1 or self.folds < 0:
            raise PlaceDeMarcheError(f"--folds must be 0 (no evaluation) or at least 2, got {self.folds}")
        check_target(self.target_precision)
        if self.hierarchy not in HIERARCHIES:
            raise PlaceDeMarcheError(f"unknown hierarchy '{self.hierarchy}': use {' or '.join(HIERARCHIES)}")
        if self.C <= 0:
            raise PlaceDeMarcheError(f"C must be positive, got {self.C}")
        if self.finetune is not None:
            if len(self.image_specs) != 1:
                raise PlaceDeMarcheError("fine-tuning needs an image backbone: give one --image "
                                         f"(got {len(self.image_specs)})")
            self.finetune.check()

    @property
    def text_specs(self) -> list[str]:
        return _spec_list(self.text)

    @property
    def image_specs(self) -> list[str]:
        return _spec_list(self.image)

    @property
    def modalities(self) -> list[str]:
        return [kind for kind, specs in (("text", self.text_specs), ("image", self.image_specs)) if specs]

    @property
    def blocks(self) -> list[tuple[str, str, str]]:
        """``(key, kind, spec)`` of every block. The key is the kind (``"text"``) when the
        kind has one extractor, ``"kind:spec"`` (``"text:tfidf"``) when it has several."""
        out = []
        for kind, specs in (("text", self.text_specs), ("image", self.image_specs)):
            out += [(kind if len(specs) == 1 else f"{kind}:{spec}", kind, spec) for spec in specs]
        return out

    @property
    def groups(self) -> dict[str, list[str]]:
        """The predictions the model makes, named by the modalities they use (``"text"``,
        ``"image"``, ``"text+image"``), with the keys of the blocks each combines."""
        groups = {kind: [key for key, k, _ in self.blocks if k == kind] for kind in self.modalities}
        if len(groups) == 2:
            groups["text+image"] = groups["text"] + groups["image"]
        return groups

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finetune"] = self.finetune.to_dict() if self.finetune else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        if data.get("finetune"):
            data["finetune"] = FineTuneConfig(**data["finetune"])
        return cls(**data)
