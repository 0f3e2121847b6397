"""The parallel image loader: order, shapes, square padding, bounded batches, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.errors import ImageReadError
from placedemarche.core.images import iter_image_batches, load_image


def _write(path, h, w, colour):
    import cv2

    image = np.zeros((h, w, 3), np.uint8)
    image[:] = colour
    cv2.imwrite(str(path), image)
    return path


def test_batches_keep_order_and_size(tmp_path):
    paths = [_write(tmp_path / f"{i}.png", 20, 20, (i * 20, 0, 0)) for i in range(7)]
    batches = list(iter_image_batches(paths, 16, batch_size=3, workers=2))
    assert [len(b) for b in batches] == [3, 3, 1]
    images = np.concatenate(batches)
    assert images.shape == (7, 16, 16, 3) and images.dtype == np.uint8
    # BGR (i*20, 0, 0) on disk is RGB (0, 0, i*20)
    assert [int(im[8, 8, 2]) for im in images] == [i * 20 for i in range(7)]


def test_wide_image_is_padded_with_white_not_stretched(tmp_path):
    image = load_image(_write(tmp_path / "wide.png", 10, 40, (0, 0, 0)), 40)
    assert image.shape == (40, 40, 3)
    assert image[0, 20].tolist() == [255, 255, 255] and image[20, 20].tolist() == [0, 0, 0]


def test_corrupt_image_in_a_batch_is_named(tmp_path):
    good = _write(tmp_path / "good.png", 8, 8, (1, 2, 3))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        list(iter_image_batches([good, bad, good], 8, batch_size=2))


def test_formats_opencv_cannot_read_go_through_pillow_on_white(tmp_path):
    from PIL import Image

    image = Image.new("RGBA", (30, 30), (0, 0, 0, 0))  # transparent background
    image.paste((0, 0, 255, 255), (10, 10, 20, 20))
    image.save(tmp_path / "logo.tga")
    loaded = load_image(tmp_path / "logo.tga", 30)
    assert loaded[2, 2].tolist() == [255, 255, 255] and loaded[15, 15].tolist() == [0, 0, 255]


def test_missing_and_empty_files_are_named(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("absent.png", "empty.png"):
        with pytest.raises(ImageReadError, match=name):
            load_image(tmp_path / name, 8)


def test_decoding_runs_at_most_a_few_batches_ahead(tmp_path, monkeypatch):
    import time

    from placedemarche.core import images

    path = _write(tmp_path / "one.png", 8, 8, (0, 0, 0))
    decoded = []
    real = images.load_image

    def counting(p, size):
        decoded.append(p)
        return real(p, size)

    monkeypatch.setattr(images, "load_image", counting)
    batches = iter_image_batches([path] * 400, 8, batch_size=4, workers=4, prefetch=2)
    first = next(batches)
    time.sleep(0.3)  # let the threads run as far ahead as they are allowed to
    assert first.shape == (4, 8, 8, 3)
    assert 4 <= len(decoded) <= 3 * 4  # the batch handed out, plus `prefetch` batches in flight
    assert sum(len(b) for b in batches) == 396
