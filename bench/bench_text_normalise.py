"""Text normalisation throughput, the original one-text-at-a-time code vs the cached one, and
`tfidf` fit_transform time, on Flipkart texts resampled to 10k and 100k products.

    python bench/bench_text_normalise.py [--sizes 10000 100000] [--old-sample 3000] [--old-full]
                                         [--old-tfidf-max 10000] [--jobs N] [--seed 0]

Synthetic catalogues: each product is a random Flipkart text (name and description) whose
words are shuffled and about 15 % of them dropped, so every text is distinct while the
vocabulary, the punctuation and the whitespace stay those of real product texts.

- old: ``word_tokenize`` then the per-token rules with an LRU-cached lemmatiser, text by
  text (TextPreprocessor.__call__ before the caching work, copied below). Its throughput does
  not depend on the catalogue size, so by default it is measured on ``--old-sample`` texts of
  each catalogue (--old-full: on all of them; 100k takes many minutes).
- new: ``TextPreprocessor.many`` with empty caches, in this process (``jobs=1``) and with
  the default workers (forked processes, one per CPU available, from 50k texts); both
  outputs are checked against the old one on the old sample.
- tfidf: ``create_plugin("text", "tfidf").fit_transform`` (new) vs a TfidfVectorizer with
  the old normaliser as its tokenizer (old: up to --old-tfidf-max texts, or all with --old-full).

Wall and CPU seconds are printed (CPU: this process and its finished workers); on a shared
machine compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import sys
import time
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def old_preprocessor():
    """The original TextPreprocessor() (lemma, English stopwords) as a function of one text."""
    from nltk.corpus import stopwords
    from nltk.stem import WordNetLemmatizer
    from nltk.tokenize import word_tokenize

    drop = frozenset(stopwords.words("english"))
    norm = lru_cache(maxsize=100_000)(WordNetLemmatizer().lemmatize)

    def preprocess(text: str) -> list[str]:
        out = []
        for token in word_tokenize(text.lower(), language="english"):
            token = token.strip("'\u2019")
            if not any(ch.isalnum() for ch in token):
                continue
            if not any(ch.isalpha() for ch in token):
                continue
            if len(token) < 2 or token in drop:
                continue
            token = norm(token)
            if len(token) >= 2 and token not in drop:
                out.append(token)
        return out

    return preprocess


def synthetic_texts(texts: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = re.split(r"(\s+)", rng.choice(texts))
        words = [w for w in parts[::2] if w and rng.random() > 0.15]
        rng.shuffle(words)
        spaces = parts[1::2] or [" "]
        out.append("".join(w + spaces[i % len(spaces)] for i, w in enumerate(words)).strip())
    return out


def clock():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fresh_caches() -> None:
    """Empty the caches of this process (forked workers inherit them)."""
    from placedemarche.data.text import TextPreprocessor, clear_caches

    clear_caches()
    TextPreprocessor()("warm up")  # reloads the NLTK resources: loading is not normalising


def timed(fn, *args):
    wall, cpu = clock()
    result = fn(*args)
    wall2, cpu2 = clock()
    return result, wall2 - wall, cpu2 - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--old-sample", type=int, default=3_000)
    parser.add_argument("--old-full", action="store_true")
    parser.add_argument("--old-tfidf-max", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes for the new code (default: auto)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shared = Path(os.environ.get("PM_SHARED", REPO.parent / "shared"))
    os.environ.setdefault("NLTK_DATA", str(shared / "models" / "nltk_data"))

    from placedemarche.data import text as textmod
    from placedemarche.data.catalog import load_catalog
    from placedemarche.core.plugins import create_plugin

    flipkart = load_catalog(shared / "data" / "flipkart").texts("both")
    old = old_preprocessor()
    old("warm up wordnet"), textmod.TextPreprocessor()("warm up wordnet")  # loading is not normalising
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  "
          f"parallel from {textmod.PARALLEL_MIN_TEXTS} texts")
    for n in args.sizes:
        texts = synthetic_texts(flipkart, n, args.seed + n)
        sample = texts if args.old_full else texts[:args.old_sample]
        old_out, old_wall, old_cpu = timed(lambda: [old(t) for t in sample])
        rows = [("old", len(sample), old_wall, old_cpu)]
        for label, jobs in (("new jobs=1", 1), ("new auto", args.jobs)):
            fresh_caches()
            new_out, wall, cpu = timed(lambda: textmod.TextPreprocessor().many(texts, n_jobs=jobs))
            assert new_out[:len(sample)] == old_out, f"{label}: tokens differ from the old code's"
            rows.append((label, n, wall, cpu))
        print(f"\n== {n} texts: normalisation (tokens identical to the old code's on {len(sample)} texts)")
        for label, count, wall, cpu in rows:
            print(f"  {label:<11} {count:>7} texts  {wall:8.2f} s wall  {cpu:8.2f} s cpu  "
                  f"{count / wall:9.0f} texts/s  x{(count / wall) / (len(sample) / old_wall):.1f} vs old")

        fresh_caches()
        _, new_fit, new_fit_cpu = timed(lambda: create_plugin("text", "tfidf").fit_transform(texts))
        line = f"  tfidf fit_transform: new {new_fit:.2f} s wall ({new_fit_cpu:.2f} s cpu)"
        if args.old_full or n <= args.old_tfidf_max:
            from sklearn.feature_extraction.text import TfidfVectorizer

            reference = TfidfVectorizer(tokenizer=old, lowercase=False, token_pattern=None, min_df=2,
                                        max_df=0.95, sublinear_tf=True)
            _, old_fit, _ = timed(lambda: reference.fit_transform(texts))
            line += f", old {old_fit:.2f} s wall: x{old_fit / new_fit:.1f}"
        else:
            estimate = n * old_wall / len(sample)
            line += f", old not run (its normalisation alone: ~{estimate:.0f} s at the rate above; --old-full)"
        print(line)


if __name__ == "__main__":
    main()
