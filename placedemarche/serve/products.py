"""A product as the engine takes it (:class:`Product`), made from a request's fields: text cut
to the service's limit, photo checked, and refused when the model can read nothing of it.

Uploaded photos are checked before they reach a model: base64 decoded, size bounded, the header
read for the pixel count (a decompression bomb is refused from it, never decoded), then decoded
once (at reduced scale where the format allows), so a truncated or corrupt file is refused
with its reason instead of failing a whole batch."""

from __future__ import annotations

import base64
import binascii
import struct
import time
import uuid
from dataclasses import dataclass, field

from placedemarche.classify import ClassifierModel
from placedemarche.data.catalog import Catalog


class PhotoError(Exception):
    """An uploaded photo that cannot be used; ``status`` is the HTTP status it answers."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def decode_base64(text: str, max_bytes: int) -> bytes:
    """The bytes of a base64 photo (a ``data:image/...;base64,`` prefix is accepted). The
    decoded size is bounded from the text's length before decoding."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > max_bytes + 3:
        raise PhotoError(f"photo is over the upload limit ({max_bytes / 1048576:g} MB)", status=413)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PhotoError("photo is not valid base64: send the file's bytes encoded in base64") from None


def check_photo(data: bytes, max_bytes: int) -> None:
    """Raise :class:`PhotoError` naming the problem when ``data`` is not a usable image."""
    from PIL import Image, UnidentifiedImageError

    from placedemarche.data.images import open_image, pixel_limit, too_large

    if not data:
        raise PhotoError("photo is empty")
    if len(data) > max_bytes:
        raise PhotoError(f"photo is over the upload limit ({max_bytes / 1048576:g} MB)", status=413)
    try:
        with open_image(data) as image:
            problem = too_large(image.size)
            if problem:
                raise PhotoError(f"photo refused: {problem}")
            image.draft("RGB", (256, 256))  # JPEG: decode at 1/2..1/8 scale, still reading every byte
            image.load()
    except Image.DecompressionBombError:
        raise PhotoError(f"photo refused: image too large (more than {pixel_limit()} pixels)") from None
    except (UnidentifiedImageError, struct.error, IndexError):  # a format's probe fails on a few bytes
        raise PhotoError("photo is not an image (expected JPEG, PNG, WebP, GIF...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PhotoError(f"photo cannot be decoded, the file is truncated or corrupt ({reason})") from None


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
    if "text" not in kinds and (product.name.strip() or product.description.strip()):
        product.notes.append("this model reads no text: answered from the photo")
    return product

