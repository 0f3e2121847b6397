"""pm evaluate / pm train on a fresh machine: the default dataset, missing from the data home,
is downloaded first (verified, resumable, said in one line) from a real HTTP server on
127.0.0.1, unless --no-download or PM_NO_DOWNLOAD=1 forbids it; offline, a one-line error."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from placedemarche.cli.main import cli
from placedemarche.data import datasets

CSV_MEMBER = "Flipkart/flipkart_com-ecommerce_sample_1050.csv"
EVAL = ["--text", "char-ngrams:n_features=256", "--cluster-on", "raw", "--seeds", "1", "--no-fuse",
        "--no-progress", "--jobs", "1"]


def _archive(catalog_csv: Path) -> bytes:
    """The tiny catalogue packed as the Flipkart archive is: the CSV and its images in Flipkart/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(CSV_MEMBER, catalog_csv.read_bytes())
        for image in sorted((catalog_csv.parent / "images").iterdir()):
            archive.writestr(f"Flipkart/images/{image.name}", image.read_bytes())
    return buffer.getvalue()


@pytest.fixture
def served_flipkart(tiny_catalog, monkeypatch, httpserver):
    """The registry's flipkart entry served by the local server; downloads allowed, as outside tests."""
    monkeypatch.delenv(datasets.NO_DOWNLOAD_ENV, raising=False)
    dataset = datasets.Dataset("flipkart", httpserver.url_for("/flipkart.zip"), CSV_MEMBER,
                               hashlib.sha256(tiny_catalog.read_bytes()).hexdigest(), "test copy")
    monkeypatch.setitem(datasets.DATASETS, "flipkart", dataset)
    httpserver.expect_request("/flipkart.zip").respond_with_data(_archive(tiny_catalog),
                                                                 content_type="application/zip")
    return dataset


def _lines(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines() if line.strip()]


def test_evaluate_downloads_the_missing_default_dataset_once(served_flipkart, httpserver, tmp_path):
    home = tmp_path / "data-home"  # conftest's PM_DATA_HOME, empty
    result = CliRunner().invoke(cli, ["evaluate", *EVAL, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    said = [line for line in _lines(result.output) if "downloading" in line]
    assert said == [f"flipkart: not in the data home {home}, downloading it (checked against its sha256; "
                    "run again to resume if interrupted; --no-download to forbid)"]
    assert (home / "flipkart" / "flipkart_com-ecommerce_sample_1050.csv").is_file()
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["catalog"]["products"] == 18
    # there now: read, not downloaded again
    again = CliRunner().invoke(cli, ["evaluate", *EVAL, "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert "downloading" not in again.output and len(httpserver.log) == 1


def test_train_downloads_the_missing_default_dataset(served_flipkart, httpserver, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--text", "char-ngrams:n_features=256", "--folds", "2",
                                      "--no-progress", "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert sum("downloading it" in line for line in _lines(result.output)) == 1
    assert (tmp_path / "model" / "metrics.json").is_file() and len(httpserver.log) == 1


@pytest.mark.parametrize("forbid", ["option", "environment"])
@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_no_download_keeps_the_one_line_error(served_flipkart, httpserver, tmp_path, monkeypatch, forbid, command):
    args = [command, "--text", "char-ngrams", "--out", str(tmp_path / "out")]
    if forbid == "option":
        args.append("--no-download")
    else:
        monkeypatch.setenv("PM_NO_DOWNLOAD", "1")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert _lines(result.output) == [f"error: dataset 'flipkart' is not in the data home {tmp_path / 'data-home'}: "
                                     "run `pm dataset download flipkart` or pass --data PATH"]
    assert len(httpserver.log) == 0


def test_offline_the_error_stays_one_line(tiny_catalog, monkeypatch, tmp_path):
    monkeypatch.delenv(datasets.NO_DOWNLOAD_ENV, raising=False)
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(datasets.DATASETS, "flipkart", datasets.Dataset(
        "flipkart", f"http://127.0.0.1:{port}/flipkart.zip", CSV_MEMBER, "0" * 64, "unreachable copy"))
    result = CliRunner().invoke(cli, ["evaluate", *EVAL, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert _lines(result.output)[-1] == (
        f"error: dataset 'flipkart' is not in the data home {tmp_path / 'data-home'} and downloading it failed "
        f"(connection refused by 127.0.0.1:{port}): run `pm dataset download flipkart` when online, "
        "or pass --data PATH")
    assert not (tmp_path / "data-home" / "flipkart").exists()


def test_a_path_or_a_present_dataset_is_never_fetched(tiny_catalog, monkeypatch):
    monkeypatch.delenv(datasets.NO_DOWNLOAD_ENV, raising=False)
    assert datasets.dataset_to_fetch(str(tiny_catalog)) is None
    assert datasets.dataset_to_fetch(None) == datasets.dataset_to_fetch("Flipkart") == "flipkart"
    assert datasets.dataset_to_fetch(None, allowed=False) is None
    monkeypatch.setenv("PM_NO_DOWNLOAD", "yes")
    assert datasets.dataset_to_fetch(None) is None
    monkeypatch.setenv("PM_NO_DOWNLOAD", "0")
    assert datasets.dataset_to_fetch(None) == "flipkart"
