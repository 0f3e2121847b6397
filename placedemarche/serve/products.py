"""A product as the engine takes it (:class:`Product`), made from a request's fields: text cut
to the service's limit, photo checked, and refused when the model can read nothing of it."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from placedemarche.classify import ClassifierModel
from placedemarche.data.catalog import Catalog
from placedemarche.serve.photos import PhotoError, check_photo


class NothingToCategorise(Exception):
    """A product with no text and no photo the model can read (answered 422)."""


@dataclass
class Product:
    id: str
    name: str = ""
    description: str = ""
    photo: bytes | None = None
    notes: list[str] = field(default_factory=list)
    arrived: float = field(default_factory=time.perf_counter)


def make_product(model: ClassifierModel, *, id: str | None, name: str, description: str,
                 photo: bytes | None, max_text_chars: int, max_photo_bytes: int) -> Product:
    """A :class:`Product` ready for the model, or :class:`PhotoError` / :class:`NothingToCategorise`.

    Over-long texts are cut at ``max_text_chars`` characters (each extractor reads less than
    that: bert its first 256 tokens), and say so in the notes. The photo is decoded once here,
    so a bad one is refused with its reason instead of failing the batch it would join.
    """
    product = Product(id=id or uuid.uuid4().hex[:16], notes=[])
    for attr, text in (("name", name), ("description", description)):
        if len(text) > max_text_chars:
            product.notes.append(f"{attr} cut to its first {max_text_chars} characters")
            text = text[:max_text_chars]
        setattr(product, attr, text)
    kinds = model.config.modalities
    if photo is not None:
        check_photo(photo, max_photo_bytes)
        if "image" in kinds:
            product.photo = photo
    catalog = Catalog(ids=["x"], names=[product.name], descriptions=[product.description], image_paths=[None])
    has_text = "text" in kinds and bool(catalog.texts(model.config.text_field)[0].strip())
    has_photo = product.photo is not None
    what = {"name": "a name", "description": "a description", "both": "a name or description"}[model.config.text_field]
    if not has_text and not has_photo:
        if kinds == ["image"]:
            raise NothingToCategorise("this model categorises from the photo: send a photo")
        if kinds == ["text"]:
            raise NothingToCategorise(f"this model categorises from the text: send {what}")
        raise NothingToCategorise(f"send {what}, a photo, or both")
    if "text" in kinds and not has_text:
        product.notes.append("no text: answered from the photo")
    if "image" in kinds and not has_photo:
        product.notes.append("no photo: answered from the text")
    if "image" not in kinds and photo is not None:
        product.notes.append("this model reads no photo: answered from the text")
    return product


__all__ = ["NothingToCategorise", "PhotoError", "Product", "make_product"]
