"""Known datasets and the data home: download, resume, verify, unpack; resolving `--data`.

The data home is ``PM_DATA_HOME`` or ``<user cache dir>/placedemarche/data``. A dataset is
unpacked there under its own directory (``<home>/flipkart/``, holding the CSV and ``Images/``)
once the CSV's sha256 matches the registry. Downloads go to ``<home>/<name>.zip.part`` first,
which a later call resumes with an HTTP Range request.

Commands that read the default dataset (``pm evaluate``, ``pm train``) download it when it
is missing (:func:`dataset_to_fetch`, :func:`fetch_dataset`), unless ``--no-download`` or
``PM_NO_DOWNLOAD=1`` forbids it.

Usage::

    from placedemarche.data.datasets import download_dataset, resolve_data
    download_dataset("flipkart")      # no-op when already there
    catalog_dir = resolve_data(None)  # what `--data` means when it is not given
    catalog_dir = resolve_data(None, download=True)  # fetched first on a fresh machine
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.files import sha256_file
from placedemarche.core.progress import task


class DatasetError(PlaceDeMarcheError):
    """A dataset cannot be downloaded, verified or found."""


class DatasetUnreachable(DatasetError):
    """The archive's server cannot be reached (offline, most likely); ``reason`` says how."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Dataset:
    """A downloadable catalogue: its archive, the CSV inside it and that CSV's sha256.

    The directory holding ``csv_member`` in the archive (with its images beside it) is what
    lands in the data home, renamed to ``name``.
    """

    name: str
    url: str
    csv_member: str  # path of the CSV inside the archive
    sha256: str
    description: str = ""

    @property
    def csv_name(self) -> str:
        return PurePosixPath(self.csv_member).name


FLIPKART_URL = (
    "https://s3-eu-west-1.amazonaws.com/static.oc-static.com/prod/courses/files/"
    "Parcours_data_scientist/Projet+-+Textimage+DAS+V2/"
    "Dataset+projet+pre%CC%81traitement+textes+images.zip"
)

#: The registry: name -> Dataset. Tests (and mirrors of other catalogues) add entries here.
DATASETS: dict[str, Dataset] = {
    "flipkart": Dataset(
        name="flipkart",
        url=FLIPKART_URL,
        csv_member="Flipkart/flipkart_com-ecommerce_sample_1050.csv",
        sha256="7c15bcff313c827d403fedebb19a10569527c0aef6fdd6a4d1e41e37c380c20f",
        description="Flipkart sample: 1050 products, 7 categories, photos",
    ),
}

DEFAULT_DATASET = "flipkart"
#: Set to 1 (or true, yes) to forbid commands to download a missing dataset.
NO_DOWNLOAD_ENV = "PM_NO_DOWNLOAD"
_CHUNK = 1 << 16


def data_home() -> Path:
    """``PM_DATA_HOME``, else ``<user cache dir>/placedemarche/data`` (not created here)."""
    env = os.environ.get("PM_DATA_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("placedemarche")) / "data"


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise DatasetError(f"unknown dataset '{name}': known datasets are {', '.join(DATASETS)}") from None


def dataset_path(name: str, home: str | os.PathLike | None = None) -> Path | None:
    """The directory holding the dataset's CSV in the data home, or None when absent.

    Both ``<home>/flipkart/`` (what `pm dataset download` writes) and ``<home>/Flipkart/``
    (the archive's own folder name, copied by hand) are recognised.
    """
    dataset = get_dataset(name)
    home = Path(home).expanduser() if home is not None else data_home()
    for folder in dict.fromkeys((dataset.name, dataset.name.capitalize(), dataset.name.upper(),
                                 PurePosixPath(dataset.csv_member).parent.name)):
        if folder and (home / folder / dataset.csv_name).is_file():
            return home / folder
    return None


def downloads_allowed() -> bool:
    """False when ``PM_NO_DOWNLOAD`` is set to anything but empty, 0, false or no."""
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")


def dataset_to_fetch(arg: str | os.PathLike | None, *, allowed: bool = True) -> str | None:
    """The dataset to download before reading ``--data arg``: the one ``arg`` names (the default
    dataset when None) if it is missing from the data home and downloads are allowed
    (``allowed`` and no ``PM_NO_DOWNLOAD``). None otherwise (an existing path, a dataset
    already there, or downloads forbidden: :func:`resolve_data` then says how to get it)."""
    if not allowed or not downloads_allowed():
        return None
    if arg is not None and (Path(arg).expanduser().exists() or str(arg).lower() not in DATASETS):
        return None
    name = DEFAULT_DATASET if arg is None else str(arg).lower()
    return name if dataset_path(name) is None else None


def fetch_dataset(name: str, *, timeout: float = 60.0) -> Path:
    """:func:`download_dataset` for a command that needs the dataset to run: when the server
    cannot be reached, the error is that of a missing dataset, with why it was not fetched."""
    try:
        return download_dataset(name, timeout=timeout)
    except DatasetUnreachable as exc:
        raise DatasetError(f"dataset '{name}' is not in the data home {data_home()} and downloading it failed "
                           f"({exc.reason}): run `pm dataset download {name}` when online, or pass --data PATH"
                           ) from None


def resolve_data(arg: str | os.PathLike | None, *, download: bool = False) -> Path:
    """What a `--data` option names: an existing path (catalogue directory or CSV) is taken as
    is, a dataset name ("flipkart") means its directory in the data home, and None means the
    Flipkart sample in the data home; with ``download``, a dataset missing from the data home
    is downloaded first (see :func:`dataset_to_fetch`)."""
    if download:
        name = dataset_to_fetch(arg)
        if name is not None:
            return fetch_dataset(name)
    if arg is not None:
        path = Path(arg).expanduser()
        if path.exists():
            return path
        if str(arg).lower() not in DATASETS:
            raise DatasetError(
                f"--data {arg}: no such file or directory, and not a dataset name "
                f"({', '.join(DATASETS)})"
            )
    name = DEFAULT_DATASET if arg is None else str(arg).lower()
    found = dataset_path(name)
    if found is None:
        raise DatasetError(
            f"dataset '{name}' is not in the data home {data_home()}: run "
            f"`pm dataset download {name}` or pass --data PATH"
        )
    return found


def download_dataset(name: str, *, url: str | None = None, home: str | os.PathLike | None = None,
                     force: bool = False, timeout: float = 60.0) -> Path:
    """Download, verify and unpack a dataset into the data home; return its directory.

    ``url`` overrides the archive location: an http(s) URL (a mirror), a ``file://`` URL or a
    local path to a copy of the archive. An interrupted download leaves ``<name>.zip.part`` in
    the data home and the next call resumes it. Nothing is moved into place before the CSV's
    checksum matches; a downloaded archive that fails the check is deleted (resuming it would
    only fail again). ``timeout`` bounds the connection and each read, in seconds.
    """
    dataset = get_dataset(name)
    home = Path(home).expanduser() if home is not None else data_home()
    existing = dataset_path(dataset.name, home)
    if existing is not None and not force:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    source = url or dataset.url
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        archive = home / f"{dataset.name}.zip.part"
        _fetch(source, archive, timeout, dataset)
        try:
            target = _install(dataset, archive, source, home)
        except DatasetError:
            archive.unlink(missing_ok=True)
            raise
        archive.unlink(missing_ok=True)
        return target
    return _install(dataset, _local_archive(source), source, home)


def _local_archive(source: str) -> Path:
    parsed = urlparse(source)
    if parsed.scheme.lower() == "file":
        path = Path(url2pathname(unquote(parsed.path)))
    elif len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise DatasetError(f"cannot download {source}: use an http(s) URL, a file:// URL or a local path")
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetError(f"archive not found: {path}")
    return path


def _fetch(url: str, part: Path, timeout: float, dataset: Dataset) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server allows."""
    import requests

    what = dataset.name
    have = part.stat().st_size if part.exists() else 0
    # identity: byte offsets and Content-Length must refer to the archive itself
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
            if response.status_code == 416 and have:
                if _content_range(response.headers.get("Content-Range"))[1] == have:
                    return  # the partial file is already the whole archive
                part.unlink()  # larger than the archive, or the archive changed
                return _fetch(url, part, timeout, dataset)
            if response.status_code >= 400:
                raise DatasetError(f"download of {url} failed: HTTP {response.status_code} "
                                   f"{response.reason or ''}".rstrip() + _kept(part))
            if response.status_code == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:  # a range we did not ask for: start again from scratch
                    response.close()
                    part.unlink()
                    return _fetch(url, part, timeout, dataset)
            else:  # 200: the server ignored the Range header (or none was sent)
                have = 0
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
            with open(part, "ab" if have else "wb") as out, \
                    task(f"{what}: downloading (bytes)", total=total) as bar:
                bar.advance(have)
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    out.write(chunk)
                    bar.advance(len(chunk))
    except requests.RequestException as exc:
        from placedemarche.data.http import describe_failure

        failure = describe_failure(exc, url, timeout)
        if failure.unreachable:  # offline, most likely: say how to do without the network
            raise DatasetUnreachable(f"download of {url} failed ({failure.reason})" + _kept(part)
                                     + _offline_hint(url, dataset), failure.reason) from None
        reason = _reason(exc, timeout)
        message = f"download of {url} failed ({reason})" + _kept(part)
        if isinstance(exc, requests.ConnectTimeout):  # no answer at all: offline too, perhaps
            raise DatasetUnreachable(message + _offline_hint(url, dataset), reason) from None
        raise DatasetError(message) from None
    except OSError as exc:
        raise DatasetError(f"cannot write {part}: {exc.strerror or exc}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DatasetError(f"download of {url} stopped at {size} of {total} bytes" + _kept(part))


def _offline_hint(url: str, dataset: Dataset) -> str:
    where = "fetch that file" if url == dataset.url else f"get the archive from {dataset.url}"
    return (f"; offline, {where} on a machine with network and pass it with --url "
            "(a local .zip path or file:// URL)")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``bytes 100-199/200`` or ``bytes */200``."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _kept(part: Path) -> str:
    size = part.stat().st_size if part.exists() else 0
    if not size:
        return ""
    return f"; the partial file {part} ({size / 1e6:.1f} MB) is kept: run the same command again to resume"


def _reason(exc: Exception, timeout: float) -> str:
    import requests

    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return f"timed out after {timeout:g} s"
    text = str(exc).replace("\n", " ")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "Connection broken" in text:
        return "the connection broke mid-transfer"
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    detail = errno.group(0).strip() if errno else text[:120]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _install(dataset: Dataset, archive: Path, source: str, home: Path) -> Path:
    """Unpack ``archive`` into a temporary directory of ``home``, check the CSV's sha256, then
    move the CSV's directory to ``home/<name>`` (replacing an older copy)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset.name}-unpacking-", dir=home))
    unpacked = staging / "unpacked"
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                _safe_extract(zipped, unpacked, dataset.name)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(f"{source} is not a valid zip archive ({exc})") from None
        csv_path = unpacked / dataset.csv_member
        if not csv_path.is_file():
            raise DatasetError(f"{source}: the archive has no {dataset.csv_member}")
        actual = sha256_file(csv_path)
        if actual != dataset.sha256:
            raise DatasetError(
                f"{source}: checksum mismatch for {dataset.csv_member} (expected sha256 "
                f"{dataset.sha256[:12]}..., got {actual[:12]}...): not the expected archive"
            )
        target = home / dataset.name
        if target.exists():
            # set the old copy aside inside staging: it goes when staging does
            os.replace(target, staging / "previous")
        os.replace(csv_path.parent, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_extract(archive: zipfile.ZipFile, target: Path, what: str) -> None:
    """Extract every member under ``target``, refusing the archive if any would land outside."""
    root = target.resolve()
    members = archive.infolist()
    for member in members:
        destination = (root / member.filename).resolve()
        if not destination.is_relative_to(root) or destination == root and not member.is_dir():
            raise DatasetError(f"archive member escapes the target directory: {member.filename}")
    with task(f"{what}: unpacking (bytes)", total=sum(m.file_size for m in members)) as bar:
        for member in members:
            archive.extract(member, target)
            bar.advance(member.file_size)
