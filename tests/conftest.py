"""Shared fixtures: paths to the shared assets, tiny generated catalogues, a clean plugin state."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PM_SHARED", REPO.parent / "shared")).resolve()
FLIPKART = SHARED / "data" / "flipkart"
KERAS_HOME = SHARED / "models" / "keras"
NLTK_DATA = SHARED / "models" / "nltk_data"

# Words that make each generated category recognisable from its text.
CATEGORY_WORDS = {
    "Watches": "analog watch strap dial wrist steel chronograph men women",
    "Kitchen": "steel pan cooking kitchen bowl spoon cookware dining",
    "Baby Care": "baby infant cotton soft diaper romper toddler kids",
}


def pytest_configure(config):
    import tempfile

    if NLTK_DATA.is_dir():
        os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))
    os.environ.setdefault("MPLBACKEND", "Agg")
    # ONNX/OpenVINO exports and extracted model weights: built once per test session, never in
    # the user's own model cache
    os.environ.setdefault("PM_MODEL_CACHE", tempfile.mkdtemp(prefix="pm-test-models-"))


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


def draw_product_image(category_index: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A BGR image whose colour and shape depend on the category, with noise and jitter."""
    import cv2

    img = np.full((size, size, 3), 235, np.uint8)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    colour = [(40, 40, 200), (40, 170, 40), (200, 80, 30), (30, 160, 200)][category_index % 4]
    c = size // 2 + int(rng.integers(-6, 7))
    if category_index % 3 == 0:
        cv2.circle(img, (c, c), size // 3, colour, -1)
        cv2.circle(img, (c, c), size // 6, (255, 255, 255), 2)
    elif category_index % 3 == 1:
        cv2.rectangle(img, (c - size // 3, c - size // 4), (c + size // 3, c + size // 4), colour, -1)
        cv2.line(img, (c - size // 3, c), (c + size // 3, c), (0, 0, 0), 2)
    else:
        for k in range(4):
            y = 8 + k * size // 5
            cv2.line(img, (6, y), (size - 6, y + int(rng.integers(-5, 6))), colour, 3)
    return img


def make_catalog(root: Path, per_category: int = 6, seed: int = 0, categories=None,
                 image_size: int = 64) -> Path:
    """Write a small labelled catalogue (CSV + images/) under ``root``; return the CSV path."""
    import cv2

    rng = np.random.default_rng(seed)
    categories = categories or list(CATEGORY_WORDS)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for ci, category in enumerate(categories):
        words = CATEGORY_WORDS.get(category, category.lower()).split()
        for j in range(per_category):
            pid = f"{category[:3].lower()}{j:03d}"
            picked = rng.choice(words, size=6)
            name = f"{category} {' '.join(picked[:2])} {j}"
            description = f"Buy this {' '.join(picked)} product online, great {words[0]} quality."
            image_name = f"{pid}.jpg"
            cv2.imwrite(str(images / image_name), draw_product_image(ci, rng, image_size))
            rows.append({"uniq_id": pid, "product_name": name, "description": description,
                         "image": image_name, "category": category})
    path = root / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


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


def free_port() -> int:
    """A local port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
