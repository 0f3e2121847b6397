"""Uploaded photos checked before they reach a model: base64 decoded, size bounded, the header
read for the pixel count (a decompression bomb is refused from it, never decoded), then decoded
once (at reduced scale where the format allows) so a truncated or corrupt file is refused
with its reason instead of failing a whole batch."""

from __future__ import annotations

import base64
import binascii


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
    except UnidentifiedImageError:
        raise PhotoError("photo is not an image (expected JPEG, PNG, WebP, GIF...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PhotoError(f"photo cannot be decoded, the file is truncated or corrupt ({reason})") from None
