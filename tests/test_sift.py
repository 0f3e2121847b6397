"""The sift image extractor: visual words from fit images only, TF-IDF rows, bad images."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import CatalogError, ImageReadError, PluginConfigError
from placedemarche.core.plugins import available_plugins, create_plugin
from placedemarche.core.progress import reporting

SMALL = "sift:n_words=16,workers=2"


@pytest.fixture
def tiny_paths(tiny_catalog) -> list:
    return list(load_catalog(tiny_catalog).image_paths)


def write_image(path, array) -> str:
    import cv2

    cv2.imwrite(str(path), array)
    return str(path)


class ThreadCheckingReporter:
    """Records progress and the threads it was called from (the core must use the main one)."""

    def __init__(self):
        self.tasks: list[list] = []
        self.threads: set[int] = set()

    def start(self, description, total):
        self.threads.add(threading.get_ident())
        self.tasks.append([description, total, 0])
        return len(self.tasks) - 1

    def advance(self, handle, amount):
        self.threads.add(threading.get_ident())
        self.tasks[handle][2] += amount

    def stop(self, handle):
        pass


def test_sift_is_listed_with_its_alias():
    assert "sift" in available_plugins("image")
    assert type(create_plugin("image", "bovw")).name == "sift"


def test_rows_are_unit_tfidf_histograms_over_the_vocabulary(tiny_paths):
    ext = create_plugin("image", SMALL)
    X = ext.fit_transform(tiny_paths)
    assert X.shape == (len(tiny_paths), ext.n_words_) and X.dtype == np.float32
    assert ext.n_words_ <= 16 and ext.vocabulary_.n_clusters == ext.n_words_
    assert np.isfinite(X).all() and (X >= 0).all()
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)  # every generated image has keypoints
    # fit_transform reuses the fit descriptors but gives what fit then transform gives
    assert np.allclose(X, create_plugin("image", SMALL).fit(tiny_paths).transform(tiny_paths))


def test_same_random_state_same_features_whatever_the_threads(tiny_paths):
    a = create_plugin("image", "sift:n_words=16,workers=1,random_state=5").fit_transform(tiny_paths)
    b = create_plugin("image", "sift:n_words=16,workers=3,random_state=5").fit_transform(tiny_paths)
    assert np.array_equal(a, b)


def test_vocabulary_and_idf_come_from_fit_images_only(tiny_catalog, tiny_paths, tmp_path):
    from helpers import make_catalog

    ext = create_plugin("image", SMALL).fit(tiny_paths[:12])  # two of the three categories
    centres, idf = ext.vocabulary_.cluster_centers_.copy(), ext.idf_.copy()
    unseen = list(load_catalog(make_catalog(tmp_path / "other", per_category=2, seed=7)).image_paths)
    X = ext.transform(unseen)
    assert X.shape == (len(unseen), ext.n_words_) and np.isfinite(X).all()
    assert np.array_equal(ext.vocabulary_.cluster_centers_, centres)
    assert np.array_equal(ext.idf_, idf)
    refit = create_plugin("image", SMALL).fit(tiny_paths)
    assert not np.array_equal(refit.idf_, idf) or not np.allclose(
        refit.vocabulary_.cluster_centers_, centres)


def test_vocabulary_shrinks_when_descriptors_are_few(tiny_paths):
    ext = create_plugin("image", "sift:n_words=500,max_keypoints=4").fit(tiny_paths)
    descriptors = 18 * 4
    assert ext.n_words_ == max(8, descriptors // 10) < 500
    capped = ext._describe_one(tiny_paths[0])
    assert capped.dtype == np.uint8 and capped.shape[1] == 128 and 0 < len(capped) <= 4


def test_large_images_are_downscaled_to_max_side(tmp_path):
    from placedemarche.plugins.image.sift import read_grayscale

    rng = np.random.default_rng(0)
    path = write_image(tmp_path / "big.png", rng.integers(0, 255, (300, 600, 3), dtype=np.uint8))
    assert read_grayscale(path, 150).shape == (75, 150)
    assert read_grayscale(path, 1000).shape == (300, 600)


def test_blank_image_gives_a_zero_row(tiny_paths, tmp_path):
    blank = write_image(tmp_path / "blank.png", np.full((80, 80, 3), 255, np.uint8))
    ext = create_plugin("image", SMALL).fit(tiny_paths)
    X = ext.transform([tiny_paths[0], blank])
    assert X[0].any() and not X[1].any()
    assert ext.fit_transform(tiny_paths + [blank])[-1].sum() == 0


def test_unreadable_images_raise_image_read_error_naming_the_file(tiny_paths, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    ext = create_plugin("image", SMALL)
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        ext.fit_transform(tiny_paths + [corrupt])  # its features are asked for: no row to give
    # fit alone learns from the images it can read (pm extract then lists the others as failed
    # rows): the same vocabulary as without the unreadable one
    ext.fit(tiny_paths + [corrupt])
    assert ext.unreadable_in_fit_ == 1
    clean = create_plugin("image", SMALL).fit(tiny_paths)
    np.testing.assert_array_equal(ext.vocabulary_.cluster_centers_, clean.vocabulary_.cluster_centers_)
    np.testing.assert_array_equal(ext.idf_, clean.idf_)
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        ext.transform([corrupt])
    ext.fit(tiny_paths)
    with pytest.raises(ImageReadError, match="missing.png"):
        ext.transform([tmp_path / "missing.png"])
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg"):
        ext.transform([tmp_path / "empty.jpg"])


def test_images_without_keypoints_cannot_teach_a_vocabulary(tmp_path):
    blanks = [write_image(tmp_path / f"b{i}.png", np.full((64, 64), 200, np.uint8)) for i in range(3)]
    with pytest.raises(CatalogError, match="0 keypoints in the 3 images"):
        create_plugin("image", SMALL).fit(blanks)


def test_bad_parameters_and_transform_before_fit(tiny_paths):
    with pytest.raises(PluginConfigError, match="n_words"):
        create_plugin("image", "sift:n_words=1").fit(tiny_paths)
    with pytest.raises(PluginConfigError, match="before transform"):
        create_plugin("image", SMALL).transform(tiny_paths)


def test_progress_counts_every_image_from_the_main_thread(tiny_paths):
    reporter = ThreadCheckingReporter()
    with reporting(reporter):
        create_plugin("image", "sift:n_words=16,workers=4").fit(tiny_paths)
    assert reporter.tasks == [["sift: descriptors (fit)", len(tiny_paths), len(tiny_paths)]]
    assert reporter.threads == {threading.get_ident()}


@pytest.mark.slow
def test_flipkart_subset_gives_finite_features(flipkart_dir):
    catalog = load_catalog(flipkart_dir)
    paths = [p for p in catalog.image_paths if p is not None and p.is_file()][:200]
    # 100 words and a 20,000-descriptor sample keep the k-means under ~30 s on 2 busy cores
    ext = create_plugin("image", "sift:n_words=100,max_descriptors_fit=20000")
    X = ext.fit_transform(paths)
    assert X.shape == (200, 100) and np.isfinite(X).all()
    # product photos are textured: nearly every one has keypoints (a zero row means none)
    assert (np.linalg.norm(X, axis=1) > 0).mean() > 0.95
    # the vocabulary is learned from the 20,000 sampled descriptors, not from all of them
    assert ext.n_words_ == 100 and ext.vocabulary_.cluster_centers_.shape == (100, 128)


def test_sift_reads_images_from_urls_and_bytes_like_files(tiny_paths, httpserver):
    from pathlib import Path

    from placedemarche.plugins.image.sift import read_grayscale

    path = Path(tiny_paths[0])
    httpserver.expect_request("/a.jpg").respond_with_data(path.read_bytes(), content_type="image/jpeg")
    expected = read_grayscale(path, 48)
    for source in (path.as_uri(), path.read_bytes(), httpserver.url_for("/a.jpg")):
        assert np.array_equal(read_grayscale(source, 48), expected)
    ext = create_plugin("image", SMALL).fit(tiny_paths)
    assert np.allclose(ext.transform([path.as_uri(), path.read_bytes()]), ext.transform([path, path]))
    with pytest.raises(ImageReadError, match=r"^sift: cannot decode image <0 bytes>"):
        read_grayscale(b"", 48)
