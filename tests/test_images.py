"""The parallel image loader: order, shapes, square padding, bounded batches, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.errors import ImageReadError
from placedemarche.data.images import iter_image_batches, load_image


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

    from placedemarche.data import images

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


# -- decompression bombs -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory):
    """A 20000×20000 PNG of about 50 kB: past twice Image.MAX_IMAGE_PIXELS, where Pillow
    raises DecompressionBombError (written once: it takes a second or two)."""
    from PIL import Image

    assert 20000 * 20000 > 2 * Image.MAX_IMAGE_PIXELS
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    return path


@pytest.fixture(scope="session")
def warning_png(tmp_path_factory):
    """A 10000×10000 PNG: between 1× and 2× Image.MAX_IMAGE_PIXELS, where Pillow only warns."""
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS < 10000 * 10000 <= 2 * Image.MAX_IMAGE_PIXELS
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.new("1", (10000, 10000)).save(path)
    return path


def test_validation_reports_a_decompression_bomb_as_too_large(bomb_png):
    from PIL import Image

    from placedemarche.data.catalog import image_problem

    limit = 2 * Image.MAX_IMAGE_PIXELS
    assert image_problem(bomb_png) == f"image too large (20000×20000 pixels, limit {limit}): {bomb_png}"
    assert image_problem(bomb_png, check_decode=False) is None  # no decoding asked: no size check


@pytest.mark.filterwarnings("error")  # a DecompressionBombWarning would fail the test
def test_image_below_pillows_error_limit_is_accepted_without_a_warning(warning_png):
    from placedemarche.data.catalog import image_problem
    from placedemarche.data.images import check_pixel_count

    assert image_problem(warning_png) is None
    check_pixel_count(warning_png)  # the loaders' check lets it through, silently too


def test_loaders_refuse_a_decompression_bomb_in_one_line(bomb_png):
    from placedemarche.plugins.image.sift import read_grayscale

    with pytest.raises(ImageReadError, match=r"image too large \(20000×20000 pixels.*bomb\.png") as caught:
        load_image(bomb_png, 8)
    assert "\n" not in str(caught.value)
    with pytest.raises(ImageReadError, match=r"^sift: image too large \(20000×20000 pixels.*bomb\.png"):
        read_grayscale(bomb_png, 384)
    with pytest.raises(ImageReadError, match="bomb.png"):
        list(iter_image_batches([bomb_png], 8, batch_size=1))


def test_opencv_refusing_an_image_is_an_image_read_error(tmp_path, monkeypatch):
    import cv2

    from placedemarche.plugins.image.sift import read_grayscale

    path = _write(tmp_path / "ok.png", 8, 8, (0, 0, 255))

    def refuse(*args, **kwargs):  # what OpenCV does past its own CV_IO_MAX_IMAGE_PIXELS
        raise cv2.error("(-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    with pytest.raises(ImageReadError, match=r"^sift: cannot decode image .*ok\.png"):
        read_grayscale(path, 384)
    assert load_image(path, 8)[4, 4].tolist() == [255, 0, 0]  # Pillow still decodes it


def test_cli_evaluate_drops_a_decompression_bomb_row(tiny_catalog, bomb_png, tmp_path, monkeypatch):
    import json
    import shutil

    from click.testing import CliRunner

    from placedemarche.cli.main import cli
    from placedemarche.evaluate import evaluator as evaluate

    # the 2-D map's t-SNE is most of the run time and has nothing to do with validation
    monkeypatch.setattr(evaluate, "_tsne", lambda X, seed, perplexity: np.asarray(X)[:, :2])

    shutil.copy(bomb_png, tiny_catalog.parent / "images" / "bomb.png")
    with open(tiny_catalog, "a", encoding="utf-8") as handle:
        handle.write("bomb01,Watches analog bomb,A watch.,bomb.png,Watches\n")
    out = tmp_path / "res"
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_catalog), "--image", "sift:n_words=8",
                                      "--seeds", "1", "--cluster-on", "raw", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "image too large" in result.output
    dropped = json.loads((out / "results.json").read_text())["catalog"]["dropped_rows"]
    assert [(row["id"], row["problem"].split(" (")[0]) for row in dropped] == [("bomb01", "image too large")]
    assert "20000×20000 pixels" in dropped[0]["problem"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".gif", ".bmp", ".tga", ".tiff", ".webp"])
def test_open_image_identifies_formats_as_pillow_does(tmp_path, suffix):
    from PIL import Image

    from placedemarche.data.images import open_image

    path = tmp_path / f"photo{suffix}"
    Image.new("RGB", (30, 20), (10, 200, 30)).save(path)
    with Image.open(path) as expected, open_image(path) as opened:
        assert (opened.format, opened.size, opened.mode) == (expected.format, expected.size, expected.mode)
        assert opened.convert("RGB").getpixel((5, 5)) == expected.convert("RGB").getpixel((5, 5))


# -- images from anywhere: paths, file:// URLs, bytes, http(s) ------------------------------------
def test_a_url_or_bytes_decode_exactly_like_the_path(tmp_path, httpserver):
    from placedemarche.data.images import read_image_bytes

    path = _write(tmp_path / "photo.png", 12, 30, (10, 120, 200))
    data = path.read_bytes()
    httpserver.expect_request("/photos/photo.png").respond_with_data(data, content_type="image/png")
    sources = [str(path), path.as_uri(), data, httpserver.url_for("/photos/photo.png")]
    assert all(read_image_bytes(s) == data for s in sources)
    expected = load_image(path, 16)
    for source in sources:
        assert np.array_equal(load_image(source, 16), expected), source
    batches = list(iter_image_batches(sources, 16, batch_size=4, workers=2))
    assert all(np.array_equal(image, expected) for image in batches[0])


def test_unreadable_urls_and_bytes_are_image_read_errors_naming_them(tmp_path, httpserver):
    httpserver.expect_request("/gone.jpg").respond_with_data("nope", status=404)
    url = httpserver.url_for("/gone.jpg")
    with pytest.raises(ImageReadError, match=r"cannot read image http://.*/gone\.jpg: 404") as caught:
        load_image(url, 8)
    assert "\n" not in str(caught.value)
    with pytest.raises(ImageReadError, match=r"absent\.png: not found"):
        load_image((tmp_path / "absent.png").as_uri(), 8)
    with pytest.raises(ImageReadError, match=r"cannot decode image <9 bytes>"):
        load_image(b"not a png", 8)


def test_a_url_scheme_nothing_can_read_is_a_missing_dependency(tmp_path):
    from placedemarche.core.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"cannot read nosuchfs:// images"):
        load_image("nosuchfs://bucket/photo.jpg", 8)


def test_a_decompression_bomb_given_as_bytes_is_refused_from_its_header(bomb_png):
    with pytest.raises(ImageReadError, match=r"image too large \(20000×20000 pixels.*<\d+ bytes>"):
        load_image(bomb_png.read_bytes(), 8)


@pytest.mark.parametrize("data", [b"", b"\x00", b"II", b"\x00\x00\x01"])
def test_a_few_bytes_are_not_an_image_never_a_crash(data):
    """Some format probes unpack their first bytes: a 0-3 byte upload must still be
    'cannot identify', not a struct.error from inside Pillow."""
    from PIL import UnidentifiedImageError

    from placedemarche.data.images import open_image

    with pytest.raises(UnidentifiedImageError, match="cannot identify image file"):
        with open_image(data):
            pass
