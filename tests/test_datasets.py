"""Dataset home and download, against a real HTTP server on 127.0.0.1: verify, unpack, resume,
servers without Range support, errors, `--data` resolution and the `pm dataset` commands."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug import Response

from placedemarche.cli.main import cli
from placedemarche.data import datasets
from placedemarche.data.catalog import load_catalog
from placedemarche.data.datasets import DatasetError, data_home, dataset_path, download_dataset, resolve_data

from helpers import free_port

CSV_MEMBER = "Flipkart/flipkart_com-ecommerce_sample_1050.csv"
CSV = (b"uniq_id,product_name,description,image,product_category_tree\n"
       b'1,Steel Watch,An analog watch,a.jpg,"[""Watches >> Wrist Watches""]"\n'
       b'2,Baby Romper,Soft cotton,b.jpg,"[""Baby Care >> Clothes""]"\n')
# incompressible filler, so the archive is large enough to be cut and resumed mid-way
FILLER = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(8192))  # 256 KiB


def make_zip(csv_bytes: bytes = CSV, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(CSV_MEMBER, csv_bytes)
        archive.writestr("Flipkart/Images/a.jpg", b"\xff\xd8fake-a" + FILLER)
        archive.writestr("Flipkart/Images/b.jpg", b"\xff\xd8fake-b")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def ranged(payload: bytes):
    """A handler that honours ``Range: bytes=N-`` like S3 does."""

    def handler(request):
        header = request.headers.get("Range")
        if not header:
            return Response(payload, status=200, headers={"Accept-Ranges": "bytes"})
        start = int(header.removeprefix("bytes=").rstrip("-"))
        if start >= len(payload):
            return Response(b"", status=416, headers={"Content-Range": f"bytes */{len(payload)}"})
        return Response(payload[start:], status=206,
                        headers={"Content-Range": f"bytes {start}-{len(payload) - 1}/{len(payload)}"})

    return handler


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "data-home"  # the PM_DATA_HOME that conftest sets


@pytest.fixture
def fake_flipkart(monkeypatch, httpserver):
    """The registry's flipkart entry pointed at the local server, with the test CSV's sha256."""
    dataset = datasets.Dataset("flipkart", httpserver.url_for("/data.zip"), CSV_MEMBER,
                               hashlib.sha256(CSV).hexdigest(), "test copy")
    monkeypatch.setitem(datasets.DATASETS, "flipkart", dataset)
    return dataset


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir() if p.name != "flipkart") if home.exists() else []


def test_download_verifies_unpacks_and_the_catalogue_loader_finds_it(fake_flipkart, httpserver, home):
    httpserver.expect_request("/data.zip").respond_with_data(make_zip(), content_type="application/zip")
    path = download_dataset("flipkart")
    assert path == home / "flipkart" == dataset_path("flipkart")
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV
    assert sorted(p.name for p in (path / "Images").iterdir()) == ["a.jpg", "b.jpg"]
    assert leftovers(home) == []  # no .part, no staging directory
    catalog = load_catalog(home)  # the home itself: find_catalog_csv looks in home/flipkart
    assert catalog.labels == ["Watches", "Baby Care"]
    assert catalog.image_paths == [path / "Images" / "a.jpg", path / "Images" / "b.jpg"]
    # already there: no second request
    assert download_dataset("flipkart") == path
    assert len(httpserver.log) == 1


def test_registry_accepts_other_datasets(monkeypatch, httpserver, tmp_path):
    csv = b"id,name,label\n1,x,A\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Tiny/tiny.csv", csv)
    monkeypatch.setitem(datasets.DATASETS, "tiny", datasets.Dataset(
        "tiny", httpserver.url_for("/tiny.zip"), "Tiny/tiny.csv", hashlib.sha256(csv).hexdigest()))
    httpserver.expect_request("/tiny.zip").respond_with_data(buffer.getvalue())
    path = download_dataset("tiny", home=tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "tiny"
    assert (path / "tiny.csv").read_bytes() == csv
    assert dataset_path("tiny", tmp_path / "elsewhere") == path
    assert dataset_path("tiny") is None  # PM_DATA_HOME is another home
    monkeypatch.setenv("PM_DATA_HOME", str(tmp_path / "elsewhere"))
    assert resolve_data("tiny") == path


def test_resume_sends_a_range_request(fake_flipkart, httpserver, home):
    payload = make_zip()
    home.mkdir()
    (home / "flipkart.zip.part").write_bytes(payload[:5000])
    httpserver.expect_request("/data.zip").respond_with_handler(ranged(payload))
    path = download_dataset("flipkart")
    assert len(httpserver.log) == 1
    request, response = httpserver.log[0]
    assert request.headers["Range"] == "bytes=5000-"
    assert response.status_code == 206
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV
    assert leftovers(home) == []


def test_interrupted_download_keeps_the_part_and_resumes(fake_flipkart, httpserver, home):
    payload = make_zip()
    cut = len(payload) // 2

    def broken(request):  # announces the whole archive, sends half, closes the connection
        response = Response(payload[:cut])
        response.headers["Content-Length"] = str(len(payload))
        return response

    httpserver.expect_oneshot_request("/data.zip").respond_with_handler(broken)
    with pytest.raises(DatasetError, match="is kept: run the same command again to resume") as info:
        download_dataset("flipkart")
    assert "the connection broke mid-transfer" in str(info.value) and "\n" not in str(info.value)
    part = home / "flipkart.zip.part"
    kept = part.read_bytes()
    assert 0 < len(kept) <= cut and payload.startswith(kept)
    assert not (home / "flipkart").exists()

    httpserver.expect_oneshot_request("/data.zip").respond_with_handler(ranged(payload))
    path = download_dataset("flipkart")
    assert httpserver.log[-1][0].headers["Range"] == f"bytes={len(kept)}-"
    assert (path / "Images" / "a.jpg").read_bytes() == b"\xff\xd8fake-a" + FILLER
    assert not part.exists()


def test_complete_part_is_not_downloaded_again(fake_flipkart, httpserver, home):
    payload = make_zip()
    home.mkdir()
    (home / "flipkart.zip.part").write_bytes(payload)
    httpserver.expect_request("/data.zip").respond_with_handler(ranged(payload))
    path = download_dataset("flipkart")
    assert httpserver.log[0][1].status_code == 416
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV


def test_server_without_range_support_restarts_cleanly(fake_flipkart, httpserver, home):
    payload = make_zip()
    home.mkdir()
    (home / "flipkart.zip.part").write_bytes(b"stale partial bytes from another attempt")
    httpserver.expect_request("/data.zip").respond_with_data(payload)  # ignores Range: 200, whole body
    path = download_dataset("flipkart")
    assert httpserver.log[0][0].headers["Range"] == "bytes=40-"
    assert httpserver.log[0][1].status_code == 200
    assert (path / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV
    assert leftovers(home) == []


def test_checksum_mismatch_leaves_nothing_in_place(fake_flipkart, httpserver, home):
    httpserver.expect_request("/data.zip").respond_with_data(make_zip(b"other,csv\n"))
    with pytest.raises(DatasetError, match="checksum mismatch for Flipkart/flipkart_com") as info:
        download_dataset("flipkart")
    assert "\n" not in str(info.value)
    assert leftovers(home) == [] and not (home / "flipkart").exists()


def test_force_replaces_an_existing_copy_only_after_verification(fake_flipkart, httpserver, home):
    httpserver.expect_oneshot_request("/data.zip").respond_with_data(make_zip())
    path = download_dataset("flipkart")
    (path / "stale.txt").write_text("old copy")
    httpserver.expect_oneshot_request("/data.zip").respond_with_data(make_zip(b"tampered\n"))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_dataset("flipkart", force=True)
    assert (path / "stale.txt").is_file()  # the good copy is untouched
    httpserver.expect_oneshot_request("/data.zip").respond_with_data(make_zip())
    assert download_dataset("flipkart", force=True) == path
    assert not (path / "stale.txt").exists() and (path / "Images" / "b.jpg").is_file()
    assert leftovers(home) == []


def test_http_404_is_one_line(fake_flipkart, httpserver, home):
    httpserver.expect_request("/data.zip").respond_with_data("nope", status=404)
    with pytest.raises(DatasetError, match=r"download of http://.*/data.zip failed: HTTP 404 NOT FOUND$"):
        download_dataset("flipkart")
    assert not (home / "flipkart").exists()


def test_network_failure_and_timeout(fake_flipkart, httpserver, home, monkeypatch):
    refused = datasets.Dataset("flipkart", "http://127.0.0.1:1/data.zip", CSV_MEMBER, "0" * 64)
    monkeypatch.setitem(datasets.DATASETS, "flipkart", refused)
    with pytest.raises(DatasetError, match=r"failed \(connection refused by 127.0.0.1:1\); offline, "):
        download_dataset("flipkart", timeout=2)

    def slow(request):
        time.sleep(0.6)
        return Response(b"late")

    httpserver.expect_request("/slow.zip").respond_with_handler(slow)
    with pytest.raises(DatasetError, match=r"failed \(timed out after 0.2 s\)"):
        download_dataset("flipkart", url=httpserver.url_for("/slow.zip"), timeout=0.2)


def test_bad_zip_is_refused_and_the_download_removed(fake_flipkart, httpserver, home):
    httpserver.expect_request("/data.zip").respond_with_data(b"<html>not a zip at all</html>")
    with pytest.raises(DatasetError, match="is not a valid zip archive"):
        download_dataset("flipkart")
    assert leftovers(home) == []  # resuming a wrong file would fail forever


def test_archive_without_the_csv(fake_flipkart, tmp_path, home):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("Other/thing.csv", CSV)
    with pytest.raises(DatasetError, match=f"the archive has no {CSV_MEMBER}"):
        download_dataset("flipkart", url=str(archive))
    assert archive.is_file() and leftovers(home) == []  # a local archive is never deleted


def test_zip_slip_is_refused(fake_flipkart, tmp_path, home):
    evil = tmp_path / "evil.zip"
    evil.write_bytes(make_zip(extra={"../../escape.txt": b"x"}))
    with pytest.raises(DatasetError, match=r"escapes the target directory: \.\./\.\./escape.txt"):
        download_dataset("flipkart", url=str(evil))
    assert not list(tmp_path.rglob("escape.txt"))
    assert leftovers(home) == [] and not (home / "flipkart").exists()


def test_local_archive_path_and_file_url(fake_flipkart, tmp_path, httpserver):
    archive = tmp_path / "my copy.zip"
    archive.write_bytes(make_zip())
    assert download_dataset("flipkart", url=str(archive), home=tmp_path / "a") == tmp_path / "a" / "flipkart"
    url = archive.as_uri()  # file:///.../my%20copy.zip
    assert "%20" in url
    assert download_dataset("flipkart", url=url, home=tmp_path / "b") == tmp_path / "b" / "flipkart"
    assert not httpserver.log
    with pytest.raises(DatasetError, match="archive not found"):
        download_dataset("flipkart", url=str(tmp_path / "missing.zip"), home=tmp_path / "c")
    with pytest.raises(DatasetError, match="use an http"):
        download_dataset("flipkart", url="ftp://example.org/x.zip", home=tmp_path / "c")


def test_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PM_DATA_HOME", str(tmp_path / "here"))
    assert data_home() == tmp_path / "here"
    monkeypatch.delenv("PM_DATA_HOME")
    from platformdirs import user_cache_dir

    assert data_home() == Path(user_cache_dir("placedemarche")) / "data"


def test_resolve_data(tmp_path, monkeypatch, home):
    # nothing downloaded: a one-line hint
    with pytest.raises(DatasetError, match=r"not in the data home .*: run `pm dataset download flipkart` "
                                           r"or pass --data PATH$"):
        resolve_data(None)
    with pytest.raises(DatasetError, match="no such file or directory, and not a dataset name"):
        resolve_data(str(tmp_path / "missing.csv"))
    # both layouts: <home>/flipkart and <home>/Flipkart
    for folder in ("Flipkart", "flipkart"):
        copy = tmp_path / folder / "home" / folder
        (copy / "images").mkdir(parents=True)
        (copy / "flipkart_com-ecommerce_sample_1050.csv").write_bytes(CSV)
        monkeypatch.setenv("PM_DATA_HOME", str(copy.parent))
        assert resolve_data(None) == copy
        assert resolve_data("flipkart") == resolve_data("Flipkart") == copy
    # an existing path is taken as is
    csv = tmp_path / "mine.csv"
    csv.write_bytes(CSV)
    assert resolve_data(str(csv)) == csv
    assert resolve_data(tmp_path) == tmp_path


def test_resolve_data_on_the_shared_copy(monkeypatch, flipkart_dir):
    monkeypatch.setenv("PM_DATA_HOME", str(flipkart_dir.parent))
    assert resolve_data(None) == flipkart_dir
    assert (resolve_data(None) / "images").is_dir()


def test_cli_download_list_path(fake_flipkart, httpserver, home, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(cli, ["dataset", "list"])
    assert listed.exit_code == 0, listed.output
    assert "test copy" in listed.output and "run: pm dataset download flipkart" in listed.output
    missing = runner.invoke(cli, ["dataset", "path", "flipkart"])
    assert missing.exit_code == 1 and "run `pm dataset download flipkart`" in missing.output
    assert "Traceback" not in missing.output

    httpserver.expect_request("/data.zip").respond_with_data(make_zip())
    result = runner.invoke(cli, ["dataset", "download", "flipkart"])
    assert result.exit_code == 0, result.output
    assert f"flipkart: verified and unpacked into {home / 'flipkart'}" in result.output
    assert (home / "flipkart" / "Images" / "a.jpg").is_file()
    again = runner.invoke(cli, ["dataset", "download", "flipkart"])
    assert "already in" in again.output and len(httpserver.log) == 1

    assert runner.invoke(cli, ["dataset", "path", "flipkart"]).output.strip() == str(home / "flipkart")
    listed = runner.invoke(cli, ["dataset", "list"])
    assert "yes" in listed.output and str(home / "flipkart") in listed.output

    bad = runner.invoke(cli, ["dataset", "download", "nope"])
    assert bad.exit_code == 1 and "unknown dataset 'nope': known datasets are flipkart" in bad.output


def test_cli_url_force_and_data_home(fake_flipkart, httpserver, tmp_path):
    archive = tmp_path / "offline.zip"
    archive.write_bytes(make_zip())
    other = tmp_path / "other-home"
    runner = CliRunner()
    result = runner.invoke(cli, ["dataset", "download", "flipkart", "--url", str(archive),
                                 "--data-home", str(other)])
    assert result.exit_code == 0, result.output
    assert (other / "flipkart" / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV
    assert runner.invoke(cli, ["dataset", "path", "flipkart", "--data-home", str(other)]
                         ).output.strip() == str(other / "flipkart")
    assert str(other / "flipkart") in runner.invoke(cli, ["dataset", "list", "--data-home", str(other)]).output

    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(make_zip(b"tampered\n"))
    failed = runner.invoke(cli, ["dataset", "download", "flipkart", "--force", "--url", tampered.as_uri(),
                                 "--data-home", str(other)])
    assert failed.exit_code == 1 and "checksum mismatch" in failed.output
    assert "Traceback" not in failed.output
    assert (other / "flipkart" / "flipkart_com-ecommerce_sample_1050.csv").read_bytes() == CSV
    assert not httpserver.log


def test_cli_interrupt_says_how_to_resume(fake_flipkart, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "download_dataset", interrupted)
    result = CliRunner().invoke(cli, ["dataset", "download", "flipkart"])
    assert result.exit_code == 130
    assert "partial download is kept; run the same command again to resume" in result.output


def test_offline_download_says_how_to_use_a_local_archive(offline, home, tmp_path):
    # the real registry entry: its host cannot be resolved here
    with pytest.raises(DatasetError) as info:
        download_dataset("flipkart", timeout=2)
    message = str(info.value)
    assert message == (f"download of {datasets.FLIPKART_URL} failed (cannot resolve host "
                       "s3-eu-west-1.amazonaws.com); offline, fetch that file on a machine with network "
                       "and pass it with --url (a local .zip path or file:// URL)")
    assert leftovers(home) == []

    port = free_port()  # a mirror that refuses the connection: the hint names the origin too
    with pytest.raises(DatasetError) as info:
        download_dataset("flipkart", url=f"http://127.0.0.1:{port}/copy.zip", timeout=2)
    message = str(info.value)
    assert message == (f"download of http://127.0.0.1:{port}/copy.zip failed (connection refused by "
                       f"127.0.0.1:{port}); offline, get the archive from {datasets.FLIPKART_URL} on a "
                       "machine with network and pass it with --url (a local .zip path or file:// URL)")


def test_cli_offline_download_error_is_one_complete_line(offline, home):
    result = CliRunner().invoke(cli, ["dataset", "download", "flipkart"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: download of ")
    assert lines[0].rstrip() == (f"error: download of {datasets.FLIPKART_URL} failed (cannot resolve host "
                                 "s3-eu-west-1.amazonaws.com); offline, fetch that file on a machine with "
                                 "network and pass it with --url (a local .zip path or file:// URL)")
