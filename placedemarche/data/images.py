"""Parallel, bounded image loading for the CNN extractors: decode, pad to square, resize, batch.

Images are decoded by OpenCV in a thread pool (OpenCV releases the GIL), so decoding overlaps
with inference; at most ``prefetch`` batches are in flight, so memory stays bounded whatever
the catalogue size.

Images declaring more pixels than ``pixel_limit()`` (decompression bombs: a 50 kB PNG can
declare 20000×20000 pixels, 1.2 GB once decoded in colour) are refused from their header,
before anything decodes them: OpenCV's own limit (``CV_IO_MAX_IMAGE_PIXELS``, 2**30 by
default) is far higher than Pillow's.

An image source is a local path, a URL or the encoded bytes themselves (:func:`read_image_bytes`),
so the same decoding serves files on this machine, shared or object storage (``s3://``,
``gs://``, ``file://`` through fsspec and its filesystem packages, e.g. s3fs, gcsfs) and
``http(s)://`` (through requests: fsspec's HTTP filesystem needs aiohttp, which
placedemarche does not install), e.g. on Ray workers that do not see the driver's disk.
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence, Union

import numpy as np

from placedemarche.core.errors import ImageReadError, MissingDependencyError

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: A local path, a URL (``s3://``, ``gs://``, ``https://``, ``file://``...) or encoded image bytes.
ImageSource = Union[str, os.PathLike, bytes]

#: Seconds an ``http(s)://`` image may take to answer (connect, then each read).
HTTP_TIMEOUT = 30.0

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


def is_url(source: ImageSource) -> bool:
    """Whether ``source`` is a URL (``scheme://...``) rather than a local path or bytes."""
    return isinstance(source, str) and bool(_URL.match(source))


def source_label(source: ImageSource) -> str:
    """How errors name ``source``: its path or URL, or ``<N bytes>``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(source)


def read_image_bytes(source: ImageSource, who: str = "") -> bytes:
    """The encoded bytes of an image: ``bytes`` as given, a local path read from disk, an
    ``http(s)://`` URL fetched with requests, any other URL (``file://``, ``s3://``, ``gs://``,
    ...) read through fsspec. Raises ImageReadError (its message prefixed with ``who``, e.g.
    ``"sift: "``) naming the source when it cannot be read (missing file, HTTP error,
    unreachable host), and MissingDependencyError when the URL's filesystem package (s3fs,
    gcsfs...) is not installed.

    Usage::

        image = load_image(read_image_bytes("s3://bucket/photos/42.jpg"), 224)
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    label = source_label(source)
    if not is_url(source):
        try:
            with open(source, "rb") as handle:
                return handle.read()
        except OSError as exc:
            reason = "the file is missing" if isinstance(exc, FileNotFoundError) else exc.strerror or type(exc).__name__
            raise ImageReadError(f"{who}cannot read image {label}: {reason}; replace or remove it") from None
    scheme = str(source).split("://", 1)[0].lower()
    try:
        if scheme in ("http", "https"):
            import requests

            response = requests.get(str(source), timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            return response.content
        import fsspec

        with fsspec.open(str(source), "rb") as handle:
            return handle.read()
    except ImportError as exc:  # fsspec names the package its filesystem needs
        raise MissingDependencyError(f"{who}reading {scheme}:// images needs a filesystem package: "
                                     f"{str(exc).splitlines()[0]}") from None
    except ValueError as exc:
        if "protocol" in str(exc).lower():  # fsspec knows no such scheme: no row would read
            raise MissingDependencyError(f"{who}cannot read {scheme}:// images: "
                                         f"{str(exc).splitlines()[0]}") from None
        raise ImageReadError(f"{who}cannot read image {label}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - a network or storage failure is this row's failure
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if isinstance(exc, FileNotFoundError):
            reason = "not found"
        raise ImageReadError(f"{who}cannot read image {label}: {reason}; check the URL and the "
                             "workers' access to it") from None


def pixel_limit() -> int | None:
    """Most pixels an image may declare: Pillow's decompression-bomb error threshold,
    ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (178,956,970 by default), None when that is disabled.

    Between 1× and 2× ``MAX_IMAGE_PIXELS`` Pillow only warns and still decodes, so such images
    (large camera photos) are accepted here too, without the warning.
    """
    from PIL import Image

    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


def too_large(size: tuple[int, int]) -> str | None:
    """'image too large (W×H pixels, limit N)' when ``size`` is past ``pixel_limit()``, else None."""
    limit = pixel_limit()
    width, height = size
    if limit is not None and width * height > limit:
        return f"image too large ({width}×{height} pixels, limit {limit})"
    return None


@contextmanager
def open_image(path: str | os.PathLike | bytes) -> Iterator["PILImage.Image"]:
    """Open ``path`` (a local file, or encoded image bytes) with Pillow like ``Image.open``
    (header read, pixels on demand), without Pillow's decompression-bomb check: callers check
    ``too_large(image.size)`` themselves.

    ``Image.open``'s check cannot be used: its error says the pixel count but not the size,
    and between 1× and 2× its limit it warns through the process-wide warnings filters, which
    the decoding threads cannot silence locally (``warnings.catch_warnings`` is not
    thread-safe). So this tries the registered format plugins itself, as ``Image.open`` does.
    Raises ``UnidentifiedImageError`` when no plugin recognises the file.
    """
    from PIL import Image, UnidentifiedImageError

    is_bytes = isinstance(path, (bytes, bytearray, memoryview))
    with (io.BytesIO(path) if is_bytes else open(path, "rb")) as handle:
        filename = "" if is_bytes else str(path)
        prefix = handle.read(16)
        tried: set[str] = set()
        for load_plugins in (Image.preinit, Image.init):  # the common formats first, as Pillow does
            load_plugins()
            for fmt in [f for f in Image.ID if f not in tried]:
                tried.add(fmt)
                factory, accept = Image.OPEN[fmt]
                try:
                    accepted = accept(prefix) if accept else True
                except (SyntaxError, IndexError, TypeError, struct.error):  # some probes unpack a few bytes
                    continue
                if not accepted or isinstance(accepted, str):  # a str explains a refusal
                    continue
                handle.seek(0)
                try:
                    image = factory(handle, filename)
                except (SyntaxError, IndexError, TypeError, struct.error):  # not this format after all
                    continue
                with image:
                    yield image
                return
        raise UnidentifiedImageError(f"cannot identify image file {source_label(path)!r}")


def check_pixel_count(path: str | os.PathLike | bytes, who: str = "", label: str | None = None) -> None:
    """Raise ImageReadError (prefixed with ``who``, naming ``label`` or else ``path``) if the
    header of ``path`` (a local file or encoded bytes) declares more than ``pixel_limit()``
    pixels; images Pillow cannot identify are left to their decoder."""
    from PIL import Image, UnidentifiedImageError

    label = label or source_label(path)
    try:
        with open_image(path) as image:
            problem = too_large(image.size)
    except Image.DecompressionBombError:  # a few formats (ICO, DCX...) check their parts themselves
        problem = f"image too large (more than {pixel_limit()} pixels)"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return
    if problem:
        raise ImageReadError(f"{who}{problem}: {label}; downscale it or remove its row from the catalogue")


def load_image(source: ImageSource, size: int) -> np.ndarray:
    """One RGB uint8 image, padded to a square with white (product photos sit on white)
    and resized to ``size`` x ``size``; ``source`` is a local path, a URL or encoded bytes
    (see :func:`read_image_bytes`). Raises ImageReadError naming the source.

    Usage::

        pixels = load_image("https://example.com/42.jpg", 224)  # (224, 224, 3) uint8
    """
    import cv2

    label = source_label(source)
    data = read_image_bytes(source)
    image = None
    if data:
        check_pixel_count(data, label=label)
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:  # e.g. past CV_IO_MAX_IMAGE_PIXELS when Pillow's limit is disabled
            image = None
        if image is None:
            image = _decode_with_pil(data)
    if image is None:
        raise ImageReadError(f"cannot decode image {label}: the file is missing, empty or corrupt")
    h, w = image.shape[:2]
    side = max(h, w)
    # resize first (longest side to ``size``), then pad: the same picture as padding first,
    # with far fewer pixels to pad and resample
    nh, nw = max(1, round(h * size / side)), max(1, round(w * size / side))
    if (nh, nw) != (h, w):
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interpolation)
    if nh != nw:
        top, left = (size - nh) // 2, (size - nw) // 2
        image = cv2.copyMakeBorder(image, top, size - nh - top, left, size - nw - left,
                                   cv2.BORDER_CONSTANT, value=(255, 255, 255))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_with_pil(data: bytes) -> np.ndarray | None:
    """BGR image via Pillow, for what OpenCV cannot read but the catalogue accepts (GIF, ...);
    transparency is flattened onto white. None if Pillow cannot decode it either."""
    from PIL import Image, ImageOps

    try:
        # open_image rather than Image.open: the size was checked by load_image, and Pillow
        # would otherwise warn, from this worker thread, about images between 1× and 2× its limit
        with open_image(data) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _load_batch(paths: Sequence, size: int) -> np.ndarray:
    return np.stack([load_image(p, size) for p in paths])


def iter_image_batches(paths: Sequence[ImageSource], size: int, batch_size: int = 32,
                       workers: int | None = None, prefetch: int = 2) -> Iterator[np.ndarray]:
    """Yield uint8 RGB batches ``(b, size, size, 3)`` in order, decoding ahead in threads;
    ``paths`` may hold local paths, URLs or encoded bytes (see :func:`load_image`).

    Usage::

        for batch in iter_image_batches(paths, 224, batch_size=64):
            features.append(model(batch))
    """
    import cv2

    paths = list(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    # the pool already decodes images side by side: OpenCV's own threads inside each call
    # would only fight it (and the network) for the cores
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield from _decoded_ahead(paths, size, batch_size, workers, prefetch)
    finally:
        cv2.setNumThreads(cv_threads)


def _decoded_ahead(paths: list, size: int, batch_size: int, workers: int, prefetch: int) -> Iterator[np.ndarray]:
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    sub = max(1, batch_size // workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()

        def submit(chunk):
            # split a batch across threads so one batch decodes in parallel
            return [pool.submit(_load_batch, chunk[j:j + sub], size) for j in range(0, len(chunk), sub)]

        queue = iter(chunks)
        for chunk in queue:
            pending.append(submit(chunk))
            if len(pending) >= prefetch:
                break
        while pending:
            parts = pending.popleft()
            batch = np.concatenate([f.result() for f in parts])
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(submit(nxt))
            yield batch
