"""Helpers the test modules share (constants, generated catalogues, reference implementations,
test plugins). Fixtures live in conftest.py; test modules import plain helpers from here, never
from each other or from conftest, so the suite also runs under ``--import-mode=importlib``
(pyproject puts tests/ on ``pythonpath``)."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import numpy as np

from placedemarche import ImageExtractor, hookimpl

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
    """Write a small labelled catalogue (CSV + images/) under ``root``; return the CSV path.

    Every product name starts with its category's name and every text draws on that category's
    own words, and the images differ by colour and shape per category: any extractor separates
    these categories. Accuracy or ARI asserted on it checks the plumbing (labels, folds, fusion,
    files), not the quality of a method; quality is measured on the shared Flipkart sample
    (the tests marked ``slow``, docs/benchmarks.md)."""
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
    return write_csv(root / "catalog.csv", rows)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts with the same keys, the first row's order) as a CSV catalogue."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def free_port() -> int:
    """A local port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the reference text normalisation: TextPreprocessor.__call__ as it was before caching, built
# from NLTK directly (tests/test_text.py compares the cached one with it) --

def reference_word_tokens(text: str, lowercase: bool = True, language: str = "english") -> list[str]:
    from nltk.tokenize import word_tokenize

    return word_tokenize(text.lower() if lowercase else text, language=language)


def reference_filter(tokens, stopwords="english", normalise="lemma", min_length=2,
                     keep_numbers=False, language="english") -> list[str]:
    from nltk.corpus import stopwords as nltk_stopwords
    from nltk.stem import WordNetLemmatizer
    from nltk.stem.snowball import SnowballStemmer

    drop = frozenset(nltk_stopwords.words(stopwords)) if stopwords else frozenset()
    norm = {"none": lambda token: token, "stem": SnowballStemmer(language).stem,
            "lemma": WordNetLemmatizer().lemmatize if language == "english" else lambda token: token,
            }[normalise]
    out = []
    for token in tokens:
        token = token.strip("'\u2019")
        if not any(ch.isalnum() for ch in token):
            continue
        if not keep_numbers and not any(ch.isalpha() for ch in token):
            continue
        if len(token) < min_length or token in drop:
            continue
        token = norm(token)
        if len(token) >= min_length and token not in drop:
            out.append(token)
    return out


def reference_normalise(text: str, lowercase: bool = True, language: str = "english", **params) -> list[str]:
    return reference_filter(reference_word_tokens(text, lowercase, language), language=language, **params)


# -- a test image extractor --

class MeanColour(ImageExtractor):
    name = "mean-colour"
    description = "Mean BGR colour of the image (test plugin)"

    def transform(self, X):
        import cv2

        return np.array([cv2.imread(str(p)).reshape(-1, 3).mean(0) for p in X], dtype=np.float32)


class MeanColourPlugin:
    """Registers :class:`MeanColour` (the ``mean_colour`` fixture of conftest.py does)."""

    @staticmethod
    @hookimpl
    def register_image_extractors(register):
        register(MeanColour)


#: How the browser tests start the system Chromium: headless, and quiet on this machine's
#: closed network (without the background-networking flags it keeps trying to reach Google).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def service_products(csv_path: Path) -> list[dict]:
    """A catalogue's products as the service takes them (id, name, description)."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as handle:
        return [{"id": r["uniq_id"], "name": r["product_name"], "description": r["description"]}
                for r in csv.DictReader(handle)]


def tiny_text_model(root: Path) -> dict:
    """The tiny catalogue (8 products per category), a tfidf model trained on it (3 folds) in
    ``root/text``, and its products as the service takes them: the service tests' set-up."""
    from placedemarche.classify import TrainConfig, train
    from placedemarche.data.catalog import load_catalog

    csv_path = make_catalog(root / "tiny", per_category=8)
    train(load_catalog(csv_path).validated(), TrainConfig(text="tfidf:min_df=1", folds=3), out=root / "text")
    return {"model": root / "text", "products": service_products(csv_path)}


def wait_ready(base: str, seconds: float = 120, process=None) -> None:
    """Wait until the service at ``base`` answers /readyz with 200; fail if ``process`` (a
    subprocess.Popen of pm serve) exits first or it is not ready within ``seconds``."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"pm serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} not ready after {seconds} s")
