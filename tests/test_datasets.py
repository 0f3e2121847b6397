"""Dataset download against a real local HTTP server: verify, unpack, resume, errors."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from click.testing import CliRunner
from werkzeug import Response

from placedemarche.cli.main import cli
from placedemarche.core import datasets
from placedemarche.core.datasets import DatasetError, download_dataset, resolve_data

CSV = b"uniq_id,product_name,description,image,product_category_tree\n1,Watch,Steel,a.jpg,\"[\"\"Watches >> x\"\"]\"\n"


def make_zip(csv_bytes=CSV) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Flipkart/flipkart_com-ecommerce_sample_1050.csv", csv_bytes)
        archive.writestr("Flipkart/Images/a.jpg", b"\xff\xd8fake")
    return buffer.getvalue()


@pytest.fixture
def fake_flipkart(monkeypatch, httpserver):
    dataset = datasets.Dataset("flipkart", httpserver.url_for("/data.zip"),
                               "Flipkart/flipkart_com-ecommerce_sample_1050.csv",
                               hashlib.sha256(CSV).hexdigest())
    monkeypatch.setitem(datasets.DATASETS, "flipkart", dataset)
    return dataset


def test_download_verifies_and_unpacks(fake_flipkart, httpserver, tmp_path):
    httpserver.expect_request("/data.zip").respond_with_data(make_zip(), content_type="application/zip")
    path = download_dataset("flipkart", home=tmp_path)
    assert path == tmp_path / "flipkart"
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV
    assert (path / "Images" / "a.jpg").is_file()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".flipkart-*"))
    # already there: no second request
    assert download_dataset("flipkart", home=tmp_path) == path
    assert len(httpserver.log) == 1


def test_resume_sends_a_range_request(fake_flipkart, httpserver, tmp_path):
    payload = make_zip()
    (tmp_path / "flipkart.zip.part").write_bytes(payload[:100])

    def handler(request):
        start = int(request.headers["Range"].split("=")[1].rstrip("-"))
        return Response(payload[start:], status=206, headers={"Content-Range": f"bytes {start}-{len(payload) - 1}/{len(payload)}"})

    httpserver.expect_request("/data.zip").respond_with_handler(handler)
    path = download_dataset("flipkart", home=tmp_path)
    assert httpserver.log[0][0].headers["Range"] == "bytes=100-"
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV


def test_server_without_range_support_restarts(fake_flipkart, httpserver, tmp_path):
    (tmp_path / "flipkart.zip.part").write_bytes(b"stale partial bytes")
    httpserver.expect_request("/data.zip").respond_with_data(make_zip())
    path = download_dataset("flipkart", home=tmp_path)
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").is_file()


def test_checksum_mismatch_leaves_nothing_in_place(fake_flipkart, httpserver, tmp_path):
    httpserver.expect_request("/data.zip").respond_with_data(make_zip(b"other,csv\n"))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_dataset("flipkart", home=tmp_path)
    assert not (tmp_path / "flipkart").exists()


def test_http_error_and_bad_zip(fake_flipkart, httpserver, tmp_path):
    httpserver.expect_oneshot_request("/data.zip").respond_with_data("nope", status=404)
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_dataset("flipkart", home=tmp_path)
    httpserver.expect_oneshot_request("/data.zip").respond_with_data(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a valid zip"):
        download_dataset("flipkart", home=tmp_path)


def test_zip_slip_is_refused(fake_flipkart, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../escape.txt", b"x")
    with pytest.raises(DatasetError, match="escapes"):
        download_dataset("flipkart", url=str(evil), home=tmp_path / "home")
    assert not (tmp_path / "escape.txt").exists()


def test_resolve_data(tmp_path, monkeypatch, flipkart_dir):
    monkeypatch.setenv("PM_DATA_HOME", str(flipkart_dir.parent))
    assert resolve_data(None) == flipkart_dir
    assert resolve_data("flipkart") == flipkart_dir
    assert resolve_data(str(tmp_path)) == tmp_path
    monkeypatch.setenv("PM_DATA_HOME", str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="pm dataset download flipkart"):
        resolve_data(None)
    with pytest.raises(DatasetError, match="no such file or directory"):
        resolve_data(str(tmp_path / "missing.csv"))


def test_cli_download_list_path(fake_flipkart, httpserver, tmp_path, monkeypatch):
    monkeypatch.setenv("PM_DATA_HOME", str(tmp_path))
    runner = CliRunner()
    assert "pm dataset download flipkart" in runner.invoke(cli, ["dataset", "list"]).output
    httpserver.expect_request("/data.zip").respond_with_data(make_zip())
    result = runner.invoke(cli, ["dataset", "download", "flipkart"])
    assert result.exit_code == 0, result.output
    assert "ready in" in result.output
    assert runner.invoke(cli, ["dataset", "path", "flipkart"]).output.strip() == str(tmp_path / "flipkart")
    bad = runner.invoke(cli, ["dataset", "download", "nope"])
    assert bad.exit_code == 1 and "unknown dataset 'nope'" in bad.output
