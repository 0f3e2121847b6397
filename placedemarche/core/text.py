"""Text normalisation shared by the text plugins: tokenise, drop stopwords, stem or lemmatise.

NLTK's data (punkt_tab, stopwords, WordNet) is used when NLTK finds it, e.g. through the
``NLTK_DATA`` environment variable. When a resource is missing, a documented built-in
fallback is used instead and a one-line :class:`TextResourceWarning` says so:

- tokeniser: a regular expression splitting on non-alphanumeric characters;
- stopwords: the built-in English list :data:`BUILTIN_STOPWORDS`;
- lemmatiser: none (tokens are kept as they are); the Snowball stemmer needs no data.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from functools import lru_cache
from typing import Callable, Literal

Normalise = Literal["lemma", "stem", "none"]

BUILTIN_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


class TextResourceWarning(UserWarning):
    """An NLTK resource is missing and a built-in fallback is used instead."""


def _warn(message: str) -> None:
    warnings.warn(message, TextResourceWarning, stacklevel=3)


@lru_cache(maxsize=None)
def _nltk_has(resource: str) -> bool:
    try:
        import nltk

        nltk.data.find(resource)
        return True
    except LookupError:
        return False


@lru_cache(maxsize=None)
def stopword_list(language: str = "english") -> frozenset[str]:
    if _nltk_has(f"corpora/stopwords/{language}"):
        from nltk.corpus import stopwords

        return frozenset(stopwords.words(language))
    if language != "english":
        _warn(f"NLTK stopwords for '{language}' not found (set NLTK_DATA); no stopwords removed")
        return frozenset()
    _warn("NLTK stopwords not found (set NLTK_DATA); using the built-in English list")
    return BUILTIN_STOPWORDS


@lru_cache(maxsize=None)
def _tokenizer(language: str) -> Callable[[str], list[str]]:
    if _nltk_has(f"tokenizers/punkt_tab/{language}"):
        from nltk.tokenize import word_tokenize

        return lambda text: word_tokenize(text, language=language)
    _warn("NLTK punkt_tab tokeniser not found (set NLTK_DATA); using a regular-expression tokeniser")
    return _TOKEN.findall


@lru_cache(maxsize=None)
def _normaliser(kind: Normalise, language: str) -> Callable[[str], str]:
    if kind == "none":
        return lambda token: token
    if kind == "stem":
        from nltk.stem.snowball import SnowballStemmer

        return lru_cache(maxsize=100_000)(SnowballStemmer(language).stem)
    if kind == "lemma":
        if language == "english" and _nltk_has("corpora/wordnet"):
            from nltk.stem import WordNetLemmatizer

            lemmatizer = WordNetLemmatizer()
            return lru_cache(maxsize=100_000)(lemmatizer.lemmatize)
        _warn(f"NLTK WordNet for '{language}' not found (set NLTK_DATA); words are not lemmatised")
        return lambda token: token
    raise ValueError(f"unknown normalisation '{kind}': use lemma, stem or none")


def resource_state(language: str = "english") -> dict[str, bool]:
    """Which NLTK resources are found: text features differ with and without them, so the
    feature cache keys on this."""
    return {name: _nltk_has(path) for name, path in (
        ("punkt_tab", f"tokenizers/punkt_tab/{language}"),
        ("stopwords", f"corpora/stopwords/{language}"),
        ("wordnet", "corpora/wordnet"),
    )}


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


class TextPreprocessor:
    """Callable turning a text into a list of normalised tokens.

    Args:
        lowercase: lower-case the text first.
        stopwords: language whose stopwords are removed, or None to keep them all.
        normalise: ``"lemma"`` (WordNet), ``"stem"`` (Snowball) or ``"none"``.
        min_length: drop tokens shorter than this.
        keep_numbers: keep purely numeric tokens.
        language: language for the tokeniser and stemmer.

    Usage::

        >>> TextPreprocessor(normalise="stem")("Cotton curtains, pack of 2")
        ['cotton', 'curtain', 'pack']
    """

    def __init__(self, lowercase: bool = True, stopwords: str | None = "english",
                 normalise: Normalise = "lemma", min_length: int = 2,
                 keep_numbers: bool = False, language: str = "english"):
        self.lowercase = lowercase
        self.stopwords = stopwords
        self.normalise = normalise
        self.min_length = min_length
        self.keep_numbers = keep_numbers
        self.language = language

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        tokens = _tokenizer(self.language)(text)
        drop = stopword_list(self.stopwords) if self.stopwords else frozenset()
        norm = _normaliser(self.normalise, self.language)
        out = []
        for token in tokens:
            token = token.strip("'\u2019")
            if not any(ch.isalnum() for ch in token):
                continue
            if not self.keep_numbers and not any(ch.isalpha() for ch in token):
                continue
            if len(token) < self.min_length or token in drop:
                continue
            token = norm(token)
            if len(token) >= self.min_length and token not in drop:
                out.append(token)
        return out

    def params(self) -> dict:
        return dict(lowercase=self.lowercase, stopwords=self.stopwords, normalise=self.normalise,
                    min_length=self.min_length, keep_numbers=self.keep_numbers,
                    language=self.language)
