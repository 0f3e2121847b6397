"""Shared fixtures: paths to the shared assets, tiny generated catalogues, a clean plugin state.

The tiny catalogue (``tiny_catalog``, helpers.make_catalog) is easy on purpose: each product name
starts with its category and the texts and images are drawn per category. Scores asserted on it
(accuracy, ARI) check that the pipeline is wired right, not that a method is good; claims about
quality rest on the shared Flipkart sample, in the tests marked ``slow``.

Plain helpers (constants, make_catalog, free_port, reference implementations, test plugins) are
in helpers.py: test modules import them from there, never from conftest or from each other."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from helpers import FLIPKART, KERAS_HOME, NLTK_DATA, make_catalog


def pytest_configure(config):
    import tempfile

    if NLTK_DATA.is_dir():
        os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))
    os.environ.setdefault("MPLBACKEND", "Agg")
    # ONNX/OpenVINO exports and extracted model weights: built once per test session, never in
    # the user's own model cache
    os.environ.setdefault("PM_MODEL_CACHE", tempfile.mkdtemp(prefix="pm-test-models-"))


# A test that asks for one of these fixtures loads real model weights: it must be marked slow.
REAL_WEIGHTS_FIXTURES = {"keras_home"}


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if REAL_WEIGHTS_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(f"real model weights without @pytest.mark.slow: {', '.join(unmarked)}")


@pytest.fixture
def flipkart_dir() -> Path:
    if not (FLIPKART / "flipkart_com-ecommerce_sample_1050.csv").is_file():
        pytest.skip(f"shared Flipkart sample not found in {FLIPKART} (set PM_SHARED)")
    return FLIPKART


@pytest.fixture
def keras_home(monkeypatch) -> Path:
    if not KERAS_HOME.is_dir():
        pytest.skip(f"shared Keras cache not found in {KERAS_HOME} (set PM_SHARED)")
    monkeypatch.setenv("KERAS_HOME", str(KERAS_HOME))
    return KERAS_HOME


@pytest.fixture
def tiny_catalog(tmp_path) -> Path:
    """A 3-category, 18-product catalogue with generated texts and images."""
    return make_catalog(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Each test gets its own feature cache and data home, and a freshly loaded plugin set."""
    from placedemarche.core.plugins import reset_plugins

    monkeypatch.setenv("PM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PM_DATA_HOME", str(tmp_path / "data-home"))
    # pm evaluate / pm train fetch a missing dataset: never from the internet in a test
    monkeypatch.setenv("PM_NO_DOWNLOAD", "1")
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def offline(monkeypatch):
    """No name resolves except localhost, as on a machine without network: nothing can leak
    out, and a DNS failure is immediate and certain."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in ("localhost", "127.0.0.1", b"localhost", b"127.0.0.1"):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def mean_colour():
    """The mean-colour test image extractor, registered for one test."""
    from helpers import MeanColourPlugin
    from placedemarche.core import plugins

    name = plugins.register_plugin(MeanColourPlugin, name="mean-colour-plugin", provider="tests")
    yield
    plugins.unregister_plugin(name)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium for the browser tests (playwright drives it; no browser download).
    Missing, the test is skipped on a developer's machine and fails in CI (CI=true), where
    .ci/run installs it: a browser test must not vanish silently."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    message = "no Chromium binary found (apt-get install chromium): the browser test needs one"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
