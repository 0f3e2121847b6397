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
