"""The fitted model: :class:`ClassifierModel` predicts a catalogue (or bare texts / image
paths) by the group of modalities each product can use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import Catalog, image_problem
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.classify.blocks import Block, _combine, _items, _rows, head_proba
from placedemarche.classify.config import TrainConfig


@dataclass
class ClassifierModel:
    """A trained classifier: its blocks (one per extractor), the fusion heads of the groups
    that combine several blocks, the categories and where it came from.

    ``predict``/``predict_proba`` take a :class:`Catalog` (or, for a single-modality model,
    a list of texts or image paths).
    """

    config: TrainConfig
    categories: list[str]
    blocks: dict[str, Block]
    fusion_heads: dict[str, Any] = field(default_factory=dict)  # group -> head (concat fusion)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # the group predictions use by default: the best on the folds (None: the fused one)
    default_group: str | None = None

    @property
    def group(self) -> str:
        """The group that predicts by default: the one that scored best in cross-validation
        (the fused one on a tie, or when the model was trained without folds)."""
        return self.resolve_group(None)

    def resolve_group(self, group: str | None) -> str:
        """``group`` checked against the model's groups; None gives the default group."""
        groups = list(self.config.groups)
        group = group or self.default_group or groups[-1]  # the last group uses every modality
        if group not in groups:
            raise PlaceDeMarcheError(f"this model has no group '{group}': use one of {', '.join(groups)}")
        return group

    @property
    def label_encoder(self):
        from sklearn.preprocessing import LabelEncoder

        encoder = LabelEncoder()
        encoder.classes_ = np.array(self.categories)
        return encoder

    def _as_catalog(self, data) -> Catalog:
        if isinstance(data, Catalog):
            return data
        items = list(data)
        kinds = self.config.modalities
        if len(kinds) != 1:
            raise PlaceDeMarcheError("this model uses text and images: pass a Catalog")
        n = len(items)
        ids = [str(i) for i in range(n)]
        if kinds[0] == "text":
            texts, blank = [str(t) for t in items], [""] * n
            in_description = self.config.text_field == "description"
            return Catalog(ids=ids, names=blank if in_description else texts,
                           descriptions=texts if in_description else blank, image_paths=[None] * n)
        return Catalog(ids=ids, names=[""] * n, descriptions=[""] * n,
                       image_paths=[None if p is None else Path(p) for p in items])

    def problems(self, catalog: Catalog) -> dict[str, list[str | None]]:
        """For each modality of the model, why each product's text or image cannot be used
        (``"no usable text"``, ``"image file not found: PATH"``, ...), None where it can."""
        out: dict[str, list[str | None]] = {}
        if "text" in self.config.modalities:
            out["text"] = [None if t.strip() else "no usable text" for t in catalog.texts(self.config.text_field)]
        if "image" in self.config.modalities:
            out["image"] = [image_problem(p) for p in catalog.image_paths]
        return out

    def available(self, catalog: Catalog) -> dict[str, np.ndarray]:
        """For each modality of the model, which products have it usable (non-empty text,
        an image file that decodes)."""
        return {kind: np.array([p is None for p in reasons], dtype=bool)
                for kind, reasons in self.problems(catalog).items()}

    def predict_details(self, data, cache: FeatureCache | None = None,
                        group: str | None = None) -> tuple[np.ndarray, list[str]]:
        """Probabilities ``(n, n_categories)`` and the modality used for each product
        (``"text+image"``, ``"text"``, ``"image"`` or ``"none"``: a row of NaN).

        Products are predicted by ``group`` (default: :attr:`group`); a product lacking
        every modality of that group is predicted from the modalities it has.
        """
        catalog = self._as_catalog(data)
        n = len(catalog)
        proba = np.full((n, len(self.categories)), np.nan)
        chosen = self.resolve_group(group).split("+")
        available = self.available(catalog)
        has_chosen = np.logical_or.reduce([available[k] for k in chosen])
        # a modality outside the chosen group is used only by products that lack the group's
        has = {kind: mask & (has_chosen if kind in chosen else ~has_chosen) for kind, mask in available.items()}
        rows = {kind: np.flatnonzero(mask) for kind, mask in has.items()}
        probas: dict[str, np.ndarray] = {}
        features: dict[str, Any] = {}
        for key, block in self.blocks.items():
            if len(rows[block.kind]) == 0:
                continue
            items = _items(block.kind, catalog.subset(rows[block.kind]), self.config.text_field)
            if block.network is not None:
                probas[key] = block.network.predict_proba(items)
            else:
                features[key] = block.features(items, cache)
                probas[key] = head_proba(block.head, features[key])
        used = ["none"] * n
        for group, keys in self.config.groups.items():
            kinds = group.split("+")
            # the products whose usable modalities are exactly this group's
            mask = np.logical_and.reduce([has[k] if k in kinds else ~has[k] for k in has])
            selected = np.flatnonzero(mask)
            if len(selected) == 0:
                continue
            sub_probas, sub_features = {}, {}
            for key in keys:
                at = np.searchsorted(rows[self.blocks[key].kind], selected)
                sub_probas[key] = probas[key][at]
                if key in features:
                    sub_features[key] = _rows(features[key], at)
            proba[selected] = _combine(keys, sub_probas, sub_features, self.fusion_heads.get(group))
            for r in selected:
                used[r] = group
        return proba, used

    def predict_proba(self, data, cache: FeatureCache | None = None, group: str | None = None) -> np.ndarray:
        """Probabilities per category (columns in ``categories`` order); NaN rows for products
        with no usable modality."""
        return self.predict_details(data, cache, group)[0]

    def predict(self, data, cache: FeatureCache | None = None, group: str | None = None) -> list[str | None]:
        """The predicted category of each product (None where no modality is usable)."""
        proba = self.predict_proba(data, cache, group)
        return [None if np.isnan(row).all() else self.categories[int(np.argmax(row))] for row in proba]

