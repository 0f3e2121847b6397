"""The feature store: Parquet shards and manifest, round trips, damaged shards, lookups."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse

from placedemarche.data.catalog import load_catalog
from placedemarche.features.driver import extract_to_store
from placedemarche.features.sets import FeatureSet, StoreError, decode_shard, encode_shard
from placedemarche.features.store import FeatureStore


def _empty_set(tmp_path, name="s") -> FeatureSet:
    store = FeatureStore(tmp_path / "store", create=True)
    return store.open_set(store.root / name, {"format": 1, "key": name, "spec": name, "kind": "text",
                                               "plugin": name, "params": {}, "shard_rows": 3})


def _write(feature_set, ids, matrix, shard_rows=3):
    for index, start in enumerate(range(0, len(ids), shard_rows)):
        rows = slice(start, start + shard_rows)
        feature_set.write_shard(index, ids[rows], matrix[rows], [], first_row=start)
    feature_set.manifest["complete"] = True
    feature_set.save_manifest()


def test_dense_round_trip_aligned_to_requested_ids(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(7)]
    matrix = rng.normal(size=(7, 5)).astype(np.float32)
    feature_set = _empty_set(tmp_path)
    _write(feature_set, ids, matrix)

    reread = FeatureSet(feature_set.path)
    assert reread.manifest["storage"] == "dense" and reread.dims == 5
    assert [s["rows"] for s in reread.manifest["shards"]] == [3, 3, 1]
    got_ids, got = reread.read()
    assert got_ids == ids and np.array_equal(got, matrix) and got.dtype == np.float32
    wanted = ["p5", "p0", "nope", "p3"]
    got_ids, got = reread.read(wanted)
    assert got_ids == ["p5", "p0", "p3"]
    assert np.array_equal(got, matrix[[5, 0, 3]])
    shards = list(reread.iter_shards())
    assert [len(shard_ids) for shard_ids, _ in shards] == [3, 3, 1]
    assert reread.ids() == ids


def test_sparse_round_trip_keeps_the_matrix_exactly(tmp_path):
    matrix = scipy.sparse.random(8, 30, density=0.2, format="csr", dtype=np.float32, random_state=1)
    ids = [f"p{i}" for i in range(8)]
    feature_set = _empty_set(tmp_path)
    _write(feature_set, ids, matrix)

    reread = FeatureSet(feature_set.path)
    assert reread.manifest["storage"] == "sparse" and reread.dims == 30
    got_ids, got = reread.read(ids[::-1])
    assert scipy.sparse.issparse(got) and got.shape == (8, 30)
    assert (got != matrix[::-1]).nnz == 0
    # the Parquet columns are id, indices and values
    data = (feature_set.path / "part-00000.parquet").read_bytes()
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pq.read_table(pa.BufferReader(data)).column_names == ["id", "indices", "values"]


def test_shards_with_nullable_list_items_are_still_read():
    # shards written before the items were declared non-null (a faster encoding)
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    dense = np.arange(12, dtype=np.float32).reshape(4, 3)
    sparse = scipy.sparse.random(4, 6, density=0.4, format="csr", dtype=np.float32, random_state=2)
    offsets = pa.array(sparse.indptr.astype(np.int32))
    for storage, dims, columns, expected in [
        ("dense", 3, {"features": pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)), 3)}, dense),
        ("sparse", 6, {"indices": pa.ListArray.from_arrays(offsets, pa.array(sparse.indices.astype(np.int32))),
                       "values": pa.ListArray.from_arrays(offsets, pa.array(sparse.data))}, sparse.toarray())]:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"id": pa.array(list("abcd")), **columns}), buffer)
        ids, matrix = decode_shard(buffer.getvalue(), storage, dims)
        got = matrix.toarray() if scipy.sparse.issparse(matrix) else matrix
        assert ids == list("abcd") and np.array_equal(got, expected)


def test_empty_shard_and_all_failed_shard(tmp_path):
    ids, matrix = decode_shard(encode_shard([], None, 4), "dense", 4)
    assert ids == [] and matrix.shape == (0, 4)
    feature_set = _empty_set(tmp_path)
    feature_set.write_shard(0, [], None, [("a", "unreadable")], first_row=0)
    feature_set.write_shard(1, ["b"], np.ones((1, 2), np.float32), [], first_row=1)
    feature_set.manifest["complete"] = True
    feature_set.save_manifest()
    got_ids, got = FeatureSet(feature_set.path).read()
    assert got_ids == ["b"] and got.shape == (1, 2)
    assert FeatureSet(feature_set.path).failed == [{"id": "a", "reason": "unreadable"}]


def test_a_damaged_shard_is_refused_then_recomputed(tiny_catalog, tmp_path):
    catalog = load_catalog(tiny_catalog)
    store = tmp_path / "store"
    first = extract_to_store(catalog, (), ["colour-histogram"], store, shard_rows=5)[0]
    _, before = FeatureSet(first.path).read()
    shard = first.path / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))

    damaged = FeatureSet(first.path)
    assert not damaged.shard_ok(1) and damaged.shard_ok(0)
    with pytest.raises(StoreError, match="part-00001.parquet is missing or damaged.*pm extract"):
        damaged.read()
    again = extract_to_store(catalog, (), ["colour-histogram"], store, shard_rows=5)[0]
    assert (again.shards_written, again.shards_reused) == (1, 3)
    _, after = FeatureSet(first.path).read()
    assert np.array_equal(before, after)


def test_incomplete_set_is_not_read(tmp_path):
    feature_set = _empty_set(tmp_path)
    feature_set.write_shard(0, ["a"], np.ones((1, 2), np.float32), [], first_row=0)
    with pytest.raises(StoreError, match="incomplete.*run the same pm extract again"):
        FeatureSet(feature_set.path).read()


def test_store_lists_and_finds_sets_by_plugin_parameters(tiny_catalog, tmp_path):
    catalog = load_catalog(tiny_catalog)
    store = FeatureStore(tmp_path / "store", create=True)
    small, large = "char-ngrams:n_features=1024", "char-ngrams:n_features=2048"
    extract_to_store(catalog, [small, large], ["colour-histogram"], store)
    assert sorted(s.spec for s in store.sets()) == ["char-ngrams:n_features=1024", "char-ngrams:n_features=2048",
                                                   "colour-histogram"]
    found = store.find("text", "char-ngrams:ngram_range=(3,5),n_features=2048")  # same parameters, other spelling
    assert found.spec == large and found.manifest["params"]["n_features"] == 2048 and found.dims == 2048
    assert store.find("text", "char-ngrams:n_features=512") is None
    assert store.find("text", small, text_field="name") is None  # extracted from "both"
    assert store.find("image", "colour-histogram:bins=(4,4,4)") is None
    manifest = json.loads((found.path / "manifest.json").read_text())
    for key in ("spec", "params", "dims", "storage", "rows", "shard_rows", "shards", "fit", "versions",
                "cache_version", "complete", "runtime"):
        assert key in manifest
    assert manifest["versions"]["pyarrow"] and manifest["complete"] is True


def test_bad_store_paths_are_one_line_errors(tmp_path):
    with pytest.raises(StoreError, match="feature store not found: .*pm extract --out"):
        FeatureStore(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a directory"):
        FeatureStore(tmp_path / "file", create=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not a feature-set manifest"):
        FeatureSet(tmp_path / "bad")
    assert FeatureStore(tmp_path).sets() == []  # damaged manifests are skipped when listing


def test_one_writer_per_set(tmp_path):
    store = FeatureStore(tmp_path / "store", create=True)
    path = store.root / "set"
    with store.writing(path):
        with pytest.raises(StoreError, match="another pm extract is writing"):
            with store.writing(path):
                pass
    with store.writing(path):  # released
        pass


# -- pm extract's options for the Ray workers ---------------------------------------------------
def test_pm_extract_hands_threads_and_runtime_env_to_the_ray_engine(tiny_catalog, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from placedemarche.cli.main import cli
    from placedemarche.features import driver
    from placedemarche.features.engines import LocalEngine

    made = []

    class RecordingRay(LocalEngine):  # the ray engine's options, and the local engine's work
        name = "ray"

        def __init__(self, **options):
            made.append(options)

    monkeypatch.setattr(driver, "RayEngine", RecordingRay)  # what get_engine("ray") makes
    result = CliRunner().invoke(cli, ["extract", "--text", "char-ngrams", "--data", str(tiny_catalog),
                                      "--out", str(tmp_path / "store"), "--engine", "ray", "--no-progress",
                                      "--threads-per-worker", "2", "--runtime-env", '{"env_vars": {"A": "1"}}'])
    assert result.exit_code == 0, result.output
    assert made == [{"address": None, "concurrency": None, "num_gpus_per_worker": None,
                     "threads_per_worker": 2, "runtime_env": {"env_vars": {"A": "1"}}}]
    (feature_set,) = FeatureStore(tmp_path / "store").sets()
    assert feature_set.complete and feature_set.manifest["engine"] == "ray"


@pytest.mark.parametrize("args, code, message", [
    (["--threads-per-worker", "2"], 1, "--threads-per-worker only apply to --engine ray"),
    (["--runtime-env", "{}"], 1, "--runtime-env only apply to --engine ray"),
    (["--engine", "ray", "--runtime-env", "{pip"], 2, "--runtime-env': not JSON"),
    (["--engine", "ray", "--runtime-env", '["pip"]'], 2, "expected a JSON object"),
    (["--engine", "ray", "--threads-per-worker", "0"], 2, "--threads-per-worker"),
], ids=["threads-local", "env-local", "env-not-json", "env-not-object", "threads-zero"])
def test_pm_extract_ray_options_are_checked_in_one_line(tiny_catalog, tmp_path, args, code, message):
    from click.testing import CliRunner

    from placedemarche.cli.main import cli

    result = CliRunner().invoke(cli, ["extract", "--text", "char-ngrams", "--data", str(tiny_catalog),
                                      "--out", str(tmp_path / "store"), *args])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
