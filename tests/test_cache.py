"""The content-addressed feature cache."""

from __future__ import annotations

import json
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from placedemarche import TextExtractor
from placedemarche.features.cache import FeatureCache, extractor_key, fingerprint_images, fingerprint_texts
from placedemarche.features.extraction import extract_features
from placedemarche.core.plugins import create_plugin

TEXTS = ["steel analog watch", "cotton baby romper", "steel kitchen pan", "baby cotton towel"]


def test_second_extraction_comes_from_cache(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    ext = create_plugin("text", "tfidf:min_df=1")
    first = extract_features(ext, TEXTS, cache=cache)
    second = extract_features(create_plugin("text", "tfidf:min_df=1"), TEXTS, cache=cache)
    assert not first.from_cache and second.from_cache
    assert scipy.sparse.issparse(second.matrix)
    assert np.allclose(first.matrix.toarray(), second.matrix.toarray())
    assert cache.info().entries == 1


def test_key_changes_with_params_and_inputs():
    a = create_plugin("text", "tfidf")
    b = create_plugin("text", "tfidf:max_df=0.5")
    fp = fingerprint_texts(TEXTS)
    assert extractor_key(a, fp) != extractor_key(b, fp)
    assert extractor_key(a, fp) != extractor_key(a, fingerprint_texts(TEXTS[::-1]))
    assert extractor_key(a, fp) == extractor_key(create_plugin("text", "tfidf"), fp)


def test_image_fingerprint_follows_content_not_name(tmp_path):
    one, two = tmp_path / "a.jpg", tmp_path / "b.jpg"
    one.write_bytes(b"same bytes")
    two.write_bytes(b"same bytes")
    assert fingerprint_images([one]) == fingerprint_images([two])
    two.write_bytes(b"other bytes")
    assert fingerprint_images([one]) != fingerprint_images([two])


def test_dense_roundtrip_damaged_entry_and_clear(tmp_path):
    cache = FeatureCache(tmp_path)
    path = cache.arrays.save("ab" + "0" * 62, np.arange(6, dtype=np.float32).reshape(3, 2))
    assert np.array_equal(cache.arrays.load("ab" + "0" * 62), np.arange(6).reshape(3, 2))
    path.write_bytes(b"garbage")
    assert cache.arrays.load("ab" + "0" * 62) is None  # recomputed rather than crashing
    assert cache.clear().entries == 1
    assert cache.info().entries == 0


def test_key_changes_when_nltk_data_appears_or_disappears(monkeypatch):
    from placedemarche.data import text as textmod

    ext = create_plugin("text", "tfidf")
    fp = fingerprint_texts(TEXTS)
    with_data = extractor_key(ext, fp)
    monkeypatch.setattr(textmod, "resource_state", lambda language="english": {"wordnet": False})
    assert extractor_key(ext, fp) != with_data


# -- damaged entries, checksums, file modes, leftovers ----------------------------------------
KEY = "cd" + "1" * 62


def _dense():
    return np.arange(12, dtype=np.float32).reshape(4, 3)


def _sparse():
    return scipy.sparse.random(5, 7, density=0.4, format="csr", dtype=np.float32, random_state=0)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04  # inside the values of an .npy, inside the compressed stream of an .npz
    path.write_bytes(bytes(data))


def _empty(path):
    path.write_bytes(b"")


DAMAGE = {
    "truncated": lambda data, meta: _truncate(data),
    "bit-flipped": lambda data, meta: _flip_a_bit(data),
    "zero bytes": lambda data, meta: _empty(data),
    "metadata missing": lambda data, meta: meta.unlink(),
    "metadata truncated": lambda data, meta: _truncate(meta),
    "metadata not an object": lambda data, meta: meta.write_text("[1, 2]"),
}


@pytest.mark.parametrize("make", [_dense, _sparse], ids=["dense", "sparse"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_any_damaged_entry_loads_as_missing(tmp_path, make, damage):
    cache = FeatureCache(tmp_path)
    data = cache.arrays.save(KEY, make())
    DAMAGE[damage](data, data.with_suffix(".json"))
    assert cache.arrays.load(KEY) is None
    assert cache.info(verify=True).damaged == 1


@pytest.mark.parametrize("make", [_dense, _sparse], ids=["dense", "sparse"])
def test_save_then_load_gives_back_the_same_array(tmp_path, make):
    cache = FeatureCache(tmp_path)
    original = make()
    cache.arrays.save(KEY, original, meta={"plugin": "test"})
    loaded = cache.arrays.load(KEY)
    assert loaded.shape == original.shape and loaded.dtype == original.dtype
    dense = lambda m: m.toarray() if scipy.sparse.issparse(m) else np.asarray(m)  # noqa: E731
    assert scipy.sparse.issparse(loaded) == scipy.sparse.issparse(original)
    assert np.array_equal(dense(loaded), dense(original))
    assert cache.info(verify=True).damaged == 0


def test_truncated_sparse_entry_is_recomputed_and_overwritten(tmp_path):
    cache = FeatureCache(tmp_path)
    first = extract_features(create_plugin("text", "tfidf:min_df=1"), TEXTS, cache=cache)
    (entry,) = tmp_path.rglob("part-*.parquet")
    _truncate(entry)  # what a full disk or a killed copy leaves behind
    second = extract_features(create_plugin("text", "tfidf:min_df=1"), TEXTS, cache=cache)
    third = extract_features(create_plugin("text", "tfidf:min_df=1"), TEXTS, cache=cache)
    assert not second.from_cache and third.from_cache
    assert np.allclose(first.matrix.toarray(), third.matrix.toarray())


@pytest.mark.parametrize("error", [zipfile.BadZipFile("bad"), ValueError("bad"), OSError("bad"),
                                   EOFError("bad"), KeyError("arr_0"), pickle.UnpicklingError("bad"),
                                   RuntimeError("bad")], ids=type)
def test_any_decoding_error_loads_as_missing(tmp_path, monkeypatch, error):
    cache = FeatureCache(tmp_path)
    cache.arrays.save(KEY, _dense())
    cache.arrays.save(KEY[::-1], _sparse())

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(np, "load", fail)
    monkeypatch.setattr(scipy.sparse, "load_npz", fail)
    assert cache.arrays.load(KEY) is None and cache.arrays.load(KEY[::-1]) is None


def test_entry_of_the_previous_version_is_kept_and_given_a_checksum(tmp_path):
    # nobody recomputes a whole cache after an upgrade: an old entry that decodes is migrated
    cache = FeatureCache(tmp_path)
    old = tmp_path / KEY[:2] / f"{KEY}.npy"
    old.parent.mkdir()
    np.save(old, _dense())
    old.with_suffix(".json").write_text(json.dumps({"plugin": "tfidf", "rows": 4}))
    assert np.array_equal(cache.arrays.load(KEY), _dense())
    entry = json.loads(old.with_suffix(".json").read_text())
    assert entry["meta"] == {"plugin": "tfidf", "rows": 4} and len(entry["sha256"]) == 64
    # from now on it is checked like any entry
    old.write_bytes(old.read_bytes()[:-4] + b"\xff\xff\xff\xff")
    assert cache.arrays.load(KEY) is None


def test_damaged_entry_of_the_previous_version_is_recomputed(tmp_path):
    import scipy.sparse

    cache = FeatureCache(tmp_path)
    old = tmp_path / KEY[:2] / f"{KEY}.npz"
    old.parent.mkdir()
    scipy.sparse.save_npz(old, scipy.sparse.csr_matrix(_dense()))
    old.write_bytes(old.read_bytes()[:50])  # the truncated .npz that broke every run
    old.with_suffix(".json").write_text(json.dumps({"plugin": "tfidf", "rows": 4}))
    assert cache.arrays.load(KEY) is None
    cache.arrays.save(KEY, _dense())
    assert np.array_equal(cache.arrays.load(KEY), _dense())


def test_a_save_interrupted_before_its_metadata_leaves_no_usable_entry(tmp_path, monkeypatch):
    from placedemarche.features import store as store_module
    from placedemarche.core.files import atomic_writer as real

    cache = FeatureCache(tmp_path)
    cache.arrays.save(KEY, np.ones((4, 3), np.float32))

    def dying_on_metadata(path, *args, **kwargs):
        if Path(path).suffix == ".json":
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    # raising=False: so that this test fails, rather than errors, on a cache without atomic_writer
    monkeypatch.setattr(store_module, "atomic_writer", dying_on_metadata, raising=False)
    with pytest.raises(KeyboardInterrupt):
        cache.arrays.save(KEY, _dense())
    assert cache.arrays.load(KEY) is None  # new data, old metadata: not trusted


def test_cache_files_honour_the_umask(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    previous = os.umask(0o022)
    try:
        cache.arrays.save(KEY, _dense(), meta={"plugin": "x"})
        cache.arrays.save(KEY[::-1], _sparse())
        cache.save_features(KEY[:-1] + "2", _dense(), meta={"plugin": "x"})
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "c").rglob("*") if p.is_file()}
    assert len(modes) == 6 and set(modes.values()) == {0o644}, modes


def _leftover_temp_files(root):
    """What a process killed while writing leaves: atomic_writer's and the previous version's names."""
    shard = root / KEY[:2]
    shard.mkdir(parents=True, exist_ok=True)
    leftovers = [shard / f".{KEY}.npy.k2j4h1.tmp", shard / ".tmp-abc123.npz"]
    for path in leftovers:
        path.write_bytes(b"partial")
    return leftovers


def test_clear_removes_temporary_files_too(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.arrays.save(KEY, _dense())
    leftovers = _leftover_temp_files(tmp_path)
    info = cache.info()
    assert info.entries == 1 and info.temp_files == 2
    cache.clear()
    assert not any(p.exists() for p in leftovers)
    assert list(tmp_path.iterdir()) == []


def test_cli_cache_info_counts_damaged_entries_and_clear_removes_leftovers(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from placedemarche.cli.main import cli

    monkeypatch.setenv("PM_CACHE_DIR", str(tmp_path / "c"))
    cache = FeatureCache(tmp_path / "c")
    cache.arrays.save(KEY, _dense())
    _truncate(cache.arrays.save(KEY[::-1], _sparse()))
    extract_features(create_plugin("text", "tfidf:min_df=1"), TEXTS, cache=cache)
    (shard,) = (tmp_path / "c").rglob("part-*.parquet")
    _flip_a_bit(shard)
    extract_features(create_plugin("text", "tfidf:min_df=2"), TEXTS, cache=cache)
    result = CliRunner().invoke(cli, ["cache", "info"])
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())  # as one line, however the console wrapped it
    assert "2 feature set(s), 2 array file(s)" in line and "2 damaged" in line

    result = CliRunner().invoke(cli, ["cache", "clear", "--yes"])
    assert result.exit_code == 0, result.output
    assert "2 feature set(s), 2 array file(s)" in " ".join(result.output.split())
    assert list((tmp_path / "c").iterdir()) == []

    cache.clear()
    leftovers = _leftover_temp_files(tmp_path / "c")
    result = CliRunner().invoke(cli, ["cache", "clear", "--yes"])
    assert result.exit_code == 0, result.output
    assert "nothing to clear" not in result.output and "2 temporary file(s)" in result.output
    assert not any(p.exists() for p in leftovers)


# -- feature matrices are feature sets of the store's format -----------------------------------
class DenseWords(TextExtractor):
    """A dense text extractor (float64 output, as a third-party plugin may give) for the tests."""

    name = "dense-words"
    description = "letter counts (test plugin)"

    def __init__(self, size: int = 6):
        self.size = size

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        out = np.zeros((len(X), self.size))
        for r, text in enumerate(X):
            for ch in text:
                out[r, ord(ch) % self.size] += 1
        return out


EXTRACTORS = {"dense": lambda: DenseWords(), "sparse": lambda: create_plugin("text", "tfidf:min_df=1")}


def _as_dense(matrix):
    return matrix.toarray() if scipy.sparse.issparse(matrix) else np.asarray(matrix)


@pytest.mark.parametrize("storage", list(EXTRACTORS))
def test_features_round_trip_through_a_feature_set(tmp_path, storage, monkeypatch):
    from placedemarche.features import store as store_module
    from placedemarche.features.store import FeatureSet

    monkeypatch.setattr(store_module, "CACHE_SHARD_ROWS", 3)  # 4 rows: two shards
    cache = FeatureCache(tmp_path)
    first = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    second = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    assert not first.from_cache and second.from_cache and second.key == first.key
    for feats in (first, second):
        assert scipy.sparse.issparse(feats.matrix) == (storage == "sparse")
        assert feats.matrix.dtype == np.float32 and feats.matrix.shape[0] == len(TEXTS)
    assert np.array_equal(_as_dense(first.matrix), _as_dense(second.matrix))
    writable = second.matrix.data if storage == "sparse" else second.matrix
    assert writable.flags.writeable  # scaled in place downstream, as an .npy matrix could be

    # the store's layout: a set directory named by the key, shards and a manifest, no .npy/.npz
    set_dir = tmp_path / first.key[:2] / first.key
    assert sorted(p.name for p in set_dir.iterdir()) == ["manifest.json", "part-00000.parquet", "part-00001.parquet"]
    assert not list(tmp_path.rglob("*.np[yz]"))
    feature_set = FeatureSet(set_dir)
    assert feature_set.complete and feature_set.manifest["storage"] == storage
    assert feature_set.manifest["key"] == first.key and feature_set.manifest["plugin"] == first.extractor.name
    ids, matrix = feature_set.read()  # any store reader reads it
    assert ids == ["0", "1", "2", "3"] and np.array_equal(_as_dense(matrix), _as_dense(first.matrix))
    info = cache.info(verify=True)
    assert (info.entries, info.feature_sets, info.damaged) == (1, 1, 0)


SHARD_DAMAGE = {
    "truncated shard": lambda d: _truncate(d / "part-00000.parquet"),
    "bit-flipped shard": lambda d: _flip_a_bit(d / "part-00000.parquet"),
    "shard missing": lambda d: (d / "part-00000.parquet").unlink(),
    "manifest missing": lambda d: (d / "manifest.json").unlink(),
    "manifest truncated": lambda d: _truncate(d / "manifest.json"),
}


@pytest.mark.parametrize("storage", list(EXTRACTORS))
@pytest.mark.parametrize("damage", list(SHARD_DAMAGE))
def test_a_damaged_feature_set_is_recomputed_and_overwritten(tmp_path, storage, damage):
    cache = FeatureCache(tmp_path)
    first = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    SHARD_DAMAGE[damage](tmp_path / first.key[:2] / first.key)
    assert cache.info(verify=True).damaged == 1
    second = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    third = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    assert not second.from_cache and third.from_cache
    assert np.array_equal(_as_dense(first.matrix), _as_dense(third.matrix))
    assert cache.info(verify=True).damaged == 0


@pytest.mark.parametrize("storage", list(EXTRACTORS))
@pytest.mark.parametrize("version", ["current", "first"])
def test_a_feature_entry_of_the_npy_format_is_read_then_migrated(tmp_path, storage, version):
    # what extract_features saved before feature sets: an .npy/.npz entry through FeatureCache.save
    cache = FeatureCache(tmp_path)
    extractor = EXTRACTORS[storage]()
    key = extractor_key(extractor, fingerprint_texts(TEXTS))
    old = extractor.fit_transform(TEXTS)
    old = old.tocsr() if scipy.sparse.issparse(old) else np.asarray(old, dtype=np.float32)
    meta = {"plugin": extractor.name, "rows": len(TEXTS)}
    data = cache.arrays.save(key, old, meta=meta)
    if version == "first":  # metadata without a version or checksum
        data.with_suffix(".json").write_text(json.dumps(meta))
    assert data.suffix == (".npz" if storage == "sparse" else ".npy")

    found = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    assert found.from_cache and np.allclose(_as_dense(found.matrix), _as_dense(old))
    assert scipy.sparse.issparse(found.matrix) == (storage == "sparse")
    # moved into the feature-set format: read from there from now on
    assert not data.exists() and not data.with_suffix(".json").exists()
    set_dir = tmp_path / key[:2] / key
    assert (set_dir / "manifest.json").is_file()
    assert json.loads((set_dir / "manifest.json").read_text())["rows"] == len(TEXTS)
    again = extract_features(EXTRACTORS[storage](), TEXTS, cache=cache)
    assert again.from_cache and np.array_equal(_as_dense(again.matrix), _as_dense(found.matrix))
    assert cache.info(verify=True).entries == 1


def test_a_damaged_feature_entry_of_the_npy_format_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    key = extractor_key(DenseWords(), fingerprint_texts(TEXTS))
    _truncate(cache.arrays.save(key, DenseWords().fit_transform(TEXTS).astype(np.float32)))
    found = extract_features(DenseWords(), TEXTS, cache=cache)
    assert not found.from_cache
    assert extract_features(DenseWords(), TEXTS, cache=cache).from_cache
    assert not list(tmp_path.rglob("*.np[yz]"))  # the new set replaced it


def test_an_interrupted_set_save_is_damaged_and_clear_removes_it(tmp_path, monkeypatch):
    from placedemarche.features.store import FeatureSet

    cache = FeatureCache(tmp_path)
    extract_features(DenseWords(), TEXTS, cache=cache)

    def dying(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureSet, "save_manifest", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_features(DenseWords(size=4), TEXTS, cache=cache)  # shard written, manifest never
    monkeypatch.undo()
    info = cache.info(verify=True)
    assert (info.feature_sets, info.damaged) == (2, 1)
    assert not extract_features(DenseWords(size=4), TEXTS, cache=cache).from_cache
    cache.clear()
    assert list(tmp_path.iterdir()) == []


def test_a_feature_set_of_other_rows_is_not_used(tmp_path):
    cache = FeatureCache(tmp_path)
    first = extract_features(DenseWords(), TEXTS, cache=cache)
    assert cache.load_features(first.key, rows=len(TEXTS) + 1) is None
    # a set moved under another key (a hand-made copy) is not another key's features
    moved = cache.keyed_path(first.key[::-1])
    moved.parent.mkdir(parents=True, exist_ok=True)
    cache.keyed_path(first.key).rename(moved)
    assert cache.load_features(first.key[::-1], rows=len(TEXTS)) is None
    cache.keyed_path(first.key).parent.mkdir(parents=True, exist_ok=True)
    moved.rename(cache.keyed_path(first.key))
    assert cache.load_features(first.key, rows=len(TEXTS)) is not None


def test_the_cache_is_a_content_addressed_feature_store(tmp_path, tiny_catalog):
    # one store concept: the cache is a FeatureStore, and any store (a pm extract one here)
    # keeps content-addressed sets and arrays beside its named sets
    from placedemarche.data.catalog import load_catalog
    from placedemarche.features.driver import extract_to_store
    from placedemarche.features.store import FeatureStore

    assert isinstance(FeatureCache(tmp_path / "c"), FeatureStore)
    catalog = load_catalog(tiny_catalog)
    extract_to_store(catalog, ["char-ngrams:n_features=64"], [], tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    first = extract_features(DenseWords(), TEXTS, cache=store)
    store.arrays.save(KEY, _dense(), meta={"what": "tsne-embedding"})
    again = FeatureStore(tmp_path / "store")
    assert extract_features(DenseWords(), TEXTS, cache=again).from_cache and not first.from_cache
    assert np.array_equal(again.arrays.load(KEY), _dense())
    assert [s.spec for s in again.sets()] == ["char-ngrams:n_features=64"]  # the named sets only
    info = again.info(verify=True)
    assert (info.feature_sets, info.array_files, info.damaged, info.temp_files) == (2, 1, 0, 0)
