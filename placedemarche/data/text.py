"""Text normalisation shared by the text plugins: tokenise, drop stopwords, stem or lemmatise.

NLTK's data (punkt_tab, stopwords, WordNet) is used when NLTK finds it, e.g. through the
``NLTK_DATA`` environment variable. When a resource is missing, a documented built-in
fallback is used instead and a one-line :class:`TextResourceWarning` says so:

- tokeniser: a regular expression splitting on non-alphanumeric characters;
- stopwords: the built-in English list :data:`BUILTIN_STOPWORDS`;
- lemmatiser: none (tokens are kept as they are); the Snowball stemmer needs no data.

Speed: the output is exactly NLTK's ``word_tokenize`` followed by the per-token rules of
:class:`TextPreprocessor`, but nothing is computed twice. Punkt's sentence-break decisions
are memoised per context, each distinct whitespace-separated chunk of a sentence is tokenised
and normalised once (see :func:`_chunk_keys` for why a chunk's tokens do not depend on the
rest of its sentence), each distinct token is lemmatised once, and
:meth:`TextPreprocessor.many` spreads large batches over the CPUs. The caches are
per-process, bounded (:data:`CACHE_SIZE` entries each) and never pickled.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import warnings
from functools import lru_cache
from itertools import chain
from typing import Callable, Iterable, Literal

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

#: Entries per cache (chunks, tokens, sentence-break contexts); a full cache is emptied and
#: refilled, so memory stays bounded (roughly 100 MB per cache when full) at any catalogue size.
CACHE_SIZE = 400_000
#: From this many texts on, :meth:`TextPreprocessor.many` forks worker processes (where the
#: platform can fork); below, sending the tokens back and the caches each worker fills on its
#: own cost about what the second core saves.
PARALLEL_MIN_TEXTS = 50_000
_BATCH = 5_000

#: Whitespace, kept as single characters between the chunks.
_WHITESPACE = re.compile(r"(\s)")
#: Whitespace other than a space.
_OTHER_SPACE = re.compile(r"[^\S ]")
#: Whitespace to ``str.split`` that NLTK's regular expressions treat as ordinary characters:
#: a sentence holding one is tokenised whole.
_ODD_SPACE = re.compile("[\x1c-\x1f]")
#: Characters NLTK's final-period rule reads through after the period.
_CLOSERS = "])}>\"'\u00bb\u201d\u2019"
#: A chunk ending with one of these may be changed by the rules anchored at the sentence end.
_END_CHARS = ".:," + _CLOSERS


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


def _untimed(punkt) -> None:
    """Make Punkt run its regular expressions directly. NLTK wraps each in a timeout guard
    (against hostile caller-supplied patterns) that costs more per call than these matches
    do; the patterns, hence the matches, are the same. Left as is if this NLTK version lays
    them out differently."""
    def raw(pattern):
        return getattr(pattern, "_rx", pattern)

    try:
        base, token = type(punkt._lang_vars), punkt._Token
        lang_vars = type("UntimedLangVars", (base,), {
            "__slots__": (), "re_boundary_realignment": raw(base.re_boundary_realignment)})()
        lang_vars._re_period_context = raw(punkt._lang_vars.period_context_re())
        lang_vars._re_word_tokenizer = raw(punkt._lang_vars._word_tokenizer_re())
        punkt._Token = type("UntimedToken", (token,), {"__slots__": (), **{
            name: raw(getattr(token, name)) for name in dir(token) if name.startswith("_RE_")}})
        punkt._lang_vars = lang_vars
    except (AttributeError, TypeError):
        pass


class _NltkWordTokenizer:
    """NLTK's ``word_tokenize``: Punkt sentences, then NLTK's word tokeniser on each one.
    Punkt's break decision for a candidate period is a pure function of a few characters
    around it, so it is memoised."""

    def __init__(self, language: str):
        from nltk.tokenize import PunktTokenizer
        from nltk.tokenize.destructive import NLTKWordTokenizer

        punkt = PunktTokenizer(language)
        punkt.text_contains_sentbreak = lru_cache(maxsize=CACHE_SIZE)(punkt.text_contains_sentbreak)
        _untimed(punkt)
        self.punkt = punkt.tokenize
        self.ends = tuple(punkt._lang_vars.sent_end_chars)
        self.words = NLTKWordTokenizer().tokenize

    def sentences(self, text: str) -> list[str]:
        if any(end in text for end in self.ends):
            return self.punkt(text)
        text = text.rstrip()  # no candidate break: what Punkt returns, without its machinery
        return [text] if text else []

    def __call__(self, text: str) -> list[str]:
        return [token for sentence in self.sentences(text) for token in self.words(sentence)]


@lru_cache(maxsize=None)
def _tokenizer(language: str) -> Callable[[str], list[str]]:
    if _nltk_has(f"tokenizers/punkt_tab/{language}"):
        return _NltkWordTokenizer(language)
    _warn("NLTK punkt_tab tokeniser not found (set NLTK_DATA); using a regular-expression tokeniser")
    return _TOKEN.findall


@lru_cache(maxsize=None)
def _normaliser(kind: Normalise, language: str) -> Callable[[str], str]:
    if kind == "none":
        return lambda token: token
    if kind == "stem":
        from nltk.stem.snowball import SnowballStemmer

        return SnowballStemmer(language).stem
    if kind == "lemma":
        if language == "english" and _nltk_has("corpora/wordnet"):
            from nltk.stem import WordNetLemmatizer

            return WordNetLemmatizer().lemmatize
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


def _remember(cache: dict, key, value):
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value


def _chunk_keys(sentence: str) -> list | None:
    """Cut a sentence into pieces whose NLTK tokens can be computed apart, or None.

    NLTK's word tokeniser is a sequence of regular-expression substitutions followed by a
    split on whitespace. Except for the rules anchored at the end of the sentence (the final
    period, which reads through closing brackets, quotes and spaces, and a final ``:`` or
    ``,``) and the ones about a quote opening it, every rule matches inside one
    whitespace-free chunk plus at most the whitespace character on either side of it. So a
    chunk's tokens are those it gets between any two other words with the same whitespace
    around it, and are cached under the chunk alone when that whitespace is two spaces, else
    under ``before + chunk + after``. A sentence's first chunk counts as preceded by a space
    (NLTK pads the sentence with one) unless it opens with a quote: ``("first", chunk +
    after)``. The *tail* (the last chunk holding anything but closers, and what follows it)
    is ``("tail", before + tail)``, tokenised with the real end of the sentence, unless no
    end rule applies to it (it is then an ordinary chunk followed by a space) or it just
    ends with a period, which NLTK splits off and normalisation drops.
    """
    if sentence[:1] not in ("", " ") and sentence[-1] != " " and not _OTHER_SPACE.search(sentence):
        chunks = sentence.split(" ")  # the usual case: only spaces, the last chunk is the tail
        if chunks[-1].strip(_CLOSERS):
            chunks[-1] = _tail_key(chunks[-1], " " if len(chunks) > 1 else "")
            if len(chunks) > 1 and chunks[0][0] in "\"'":
                chunks[0] = ("first", chunks[0] + " ")
            return chunks
    if _ODD_SPACE.search(sentence):
        return None
    parts = _WHITESPACE.split(sentence)  # chunk, whitespace, chunk, ...; chunks may be empty
    tail = len(parts) - 1
    while tail >= 0 and not parts[tail].strip(_CLOSERS):
        tail -= 2
    if tail < 0:
        return None
    keys: list = [_around(parts[i - 1], parts[i], parts[i + 1]) if i else
                  ("first", parts[0] + parts[1]) if parts[0][0] in "\"'" else _around(" ", parts[0], parts[1])
                  for i in range(0, tail, 2) if parts[i]]
    if tail == len(parts) - 1:
        return [*keys, _tail_key(parts[tail], parts[tail - 1] if tail else "")]
    return [*keys, ("tail", "".join(parts[tail - 1 if tail else 0:]))]


def _around(before: str, chunk: str, after: str) -> str:
    return chunk if before == after == " " else before + chunk + after


def _tail_key(chunk: str, before: str):
    """The key of a sentence's last chunk (``before``: the whitespace before it, if any)."""
    if before or chunk[0] not in "\"'":
        if chunk[-1] not in _END_CHARS:
            return _around(before or " ", chunk, " ")
        if chunk[-1] == "." and len(chunk) > 1 and chunk[-2] != ".":
            return _around(before or " ", chunk[:-1], " ")
    return ("tail", before + chunk)


class _CachedPipeline:
    """One :class:`TextPreprocessor` configuration with its per-process caches."""

    def __init__(self, lowercase: bool, stopwords: str | None, normalise: Normalise,
                 min_length: int, keep_numbers: bool, language: str):
        self.lowercase = lowercase
        self.tokenize = _tokenizer(language)
        self.drop = stopword_list(stopwords) if stopwords else frozenset()
        self.norm = _normaliser(normalise, language)
        self.min_length = min_length
        self.keep_numbers = keep_numbers
        self.tokens: dict[str, str | None] = {}  # raw token -> normalised token, None if dropped
        #: a key of _chunk_keys, or ("sentence", sentence) -> normalised tokens
        self.pieces: dict[str, list[str]] = {}

    def _token(self, token: str) -> str | None:
        token = token.strip("'\u2019")
        if not any(ch.isalnum() for ch in token):
            return None
        if not self.keep_numbers and not any(ch.isalpha() for ch in token):
            return None
        if len(token) < self.min_length or token in self.drop:
            return None
        token = self.norm(token)
        return token if len(token) >= self.min_length and token not in self.drop else None

    def _normalised(self, tokens: Iterable[str]) -> list[str]:
        cache, out = self.tokens, []
        for raw in tokens:
            token = cache.get(raw, "")
            if token == "":  # never a result of _token: not seen yet
                token = _remember(cache, raw, self._token(raw))
            if token is not None:
                out.append(token)
        return out

    def _words(self, text: str, sentinel: str, before: bool = False, after: bool = False) -> list[str]:
        """NLTK's tokens of ``text``, tokenised with a sentinel word before and/or after it."""
        words = self.tokenize.words((sentinel if before else "") + text + (sentinel if after else ""))
        if (before and words[:1] != [sentinel]) or (after and words[-1:] != [sentinel]):
            raise AssertionError(f"text normalisation: {text!r} did not tokenise apart")  # see _chunk_keys
        return words[1 if before else 0:-1 if after else None]

    def _fill(self, keys: set) -> None:
        """Tokenise and normalise the pieces not cached yet: the chunks in a few long NLTK
        calls (its cost per call is far above its cost per character), the rest one by one."""
        chunks = [key for key in keys if isinstance(key, str)]
        around = [key if key[:1].isspace() else f" {key} " for key in chunks]
        used = set("".join(around)).union(*(key[1] for key in keys if not isinstance(key, str)))
        sentinel = next(chr(c) for c in chain(range(0xE000, 0xF900), range(0xF0000, 0xFFFFE))
                        if chr(c) not in used)  # a private-use character no text here holds
        for start in range(0, len(chunks), 2_000):
            group = around[start:start + 2_000]
            words = self._words(sentinel.join(group), sentinel, True, True)
            cuts = [-1, *(i for i, word in enumerate(words) if word == sentinel), len(words)]
            if len(cuts) != len(group) + 1:
                raise AssertionError("text normalisation: chunks did not tokenise apart")  # see _chunk_keys
            for key, cut, next_cut in zip(chunks[start:start + 2_000], cuts, cuts[1:]):
                self.pieces[key] = self._normalised(words[cut + 1:next_cut])
        for key in keys:
            if not isinstance(key, str):
                kind, text = key  # an opening chunk with a quote, a sentence's tail, a sentence
                self.pieces[key] = self._normalised(self._words(
                    text, sentinel, kind == "tail" and text[0].isspace(), kind == "first"))

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        if not isinstance(self.tokenize, _NltkWordTokenizer):
            return [self._normalised(self.tokenize(t.lower() if self.lowercase else t)) for t in texts]
        pieces, plans = self.pieces, []
        for text in texts:
            plan: list = []
            for sentence in self.tokenize.sentences(text.lower() if self.lowercase else text):
                plan += _chunk_keys(sentence) or [("sentence", sentence)]
            plans.append(plan)
        needed = set(chain.from_iterable(plans)).difference(pieces)
        if len(pieces) + len(needed) > CACHE_SIZE:  # make room; keep what these texts need
            pieces.clear()
            needed = set(chain.from_iterable(plans))
        if needed:
            self._fill(needed)
        return [list(chain.from_iterable(map(pieces.__getitem__, plan))) for plan in plans]


@lru_cache(maxsize=8)
def _pipeline(key: tuple) -> _CachedPipeline:
    return _CachedPipeline(*key)


def clear_caches() -> None:
    """Forget the resources found and every cached token (e.g. after changing ``nltk.data.path``)."""
    for cached in (_nltk_has, stopword_list, _tokenizer, _normaliser, _pipeline):
        cached.cache_clear()


#: A forked worker's configuration and texts, inherited from the parent (never pickled).
_WORKER_INPUT: tuple = ((), [])


def _start_worker(key: tuple, texts: list[str]) -> None:
    global _WORKER_INPUT
    _WORKER_INPUT = (key, texts)


def _normalise_slice(bounds: tuple[int, int]) -> list[list[str]]:
    """A worker process's share of :meth:`TextPreprocessor.many`."""
    key, texts = _WORKER_INPUT
    return _pipeline(key).many(texts[bounds[0]:bounds[1]])


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
        >>> TextPreprocessor().many(["Red towels", "Steel watches"])
        [['red', 'towel'], ['steel', 'watch']]
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

    def _key(self) -> tuple:
        return (self.lowercase, self.stopwords, self.normalise, self.min_length,
                self.keep_numbers, self.language)

    def __call__(self, text: str) -> list[str]:
        return _pipeline(self._key()).many([text])[0]

    def many(self, texts: Iterable[str], description: str | None = None,
             n_jobs: int | None = None) -> list[list[str]]:
        """The tokens of each text, in order; ``description`` names a progress task. From
        :data:`PARALLEL_MIN_TEXTS` texts on, the work is spread over ``n_jobs`` forked worker
        processes (default: the CPUs this process may use); without ``fork`` (Windows), in a
        daemonic process or in a Ray driver, it stays in this one."""
        import multiprocessing

        from placedemarche.core.progress import task

        texts = list(texts)
        run = _pipeline(self._key())  # resolves the resources (and warns) before any fork
        if n_jobs is None:
            from placedemarche.core.runtime import default_threads

            n_jobs = default_threads() if len(texts) >= PARALLEL_MIN_TEXTS else 1
        bounds = [(start, start + _BATCH) for start in range(0, len(texts), _BATCH)]
        pool = None
        ray = sys.modules.get("ray")  # a Ray driver's gRPC threads do not survive a fork
        if (n_jobs > 1 and len(bounds) > 1 and "fork" in multiprocessing.get_all_start_methods()
                and not multiprocessing.current_process().daemon and not (ray and ray.is_initialized())):
            # Forked workers start in milliseconds with NLTK loaded, read the texts from the
            # memory they share with this process, and inherit WordNet and the caches that the
            # first batch, done here, loads and fills.
            first = run.many(texts[:_BATCH])
            pool = multiprocessing.get_context("fork").Pool(
                min(n_jobs, len(bounds) - 1), initializer=_start_worker, initargs=(self._key(), texts))
            results = chain([first], pool.imap(_normalise_slice, bounds[1:]))
        else:
            results = (run.many(texts[start:stop]) for start, stop in bounds)
        out: list[list[str]] = []
        try:
            with task(description or "normalising texts", total=len(texts)) as progress:
                for result in results:
                    out += result
                    progress.advance(len(result))
        finally:
            if pool is not None:
                pool.terminate()
        return out

    def params(self) -> dict:
        return dict(lowercase=self.lowercase, stopwords=self.stopwords, normalise=self.normalise,
                    min_length=self.min_length, keep_numbers=self.keep_numbers,
                    language=self.language)
