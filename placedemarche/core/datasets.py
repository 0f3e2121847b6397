"""Known datasets and the data home: download, resume, verify, unpack; resolving `--data`.

The data home is ``PM_DATA_HOME`` or ``<user cache dir>/placedemarche/data``. A dataset is
unpacked there under its own directory (``<home>/flipkart/``) once its checksum is verified.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from .errors import PlaceDeMarcheError
from .progress import task


class DatasetError(PlaceDeMarcheError):
    """A dataset cannot be downloaded, verified or found."""


@dataclass(frozen=True)
class Dataset:
    """A downloadable catalogue: its archive, the CSV inside it and that CSV's sha256."""

    name: str
    url: str
    csv_member: str  # path of the CSV inside the archive
    sha256: str
    description: str = ""


FLIPKART_URL = (
    "https://s3-eu-west-1.amazonaws.com/static.oc-static.com/prod/courses/files/"
    "Parcours_data_scientist/Projet+-+Textimage+DAS+V2/"
    "Dataset+projet+pre%CC%81traitement+textes+images.zip"
)

DATASETS: dict[str, Dataset] = {
    "flipkart": Dataset(
        name="flipkart",
        url=FLIPKART_URL,
        csv_member="Flipkart/flipkart_com-ecommerce_sample_1050.csv",
        sha256="7c15bcff313c827d403fedebb19a10569527c0aef6fdd6a4d1e41e37c380c20f",
        description="Flipkart sample: 1050 products, 7 categories, photos",
    ),
}


def data_home() -> Path:
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


def dataset_path(name: str, home: Path | None = None) -> Path | None:
    """The directory holding the dataset's CSV in the data home, or None when absent."""
    dataset = get_dataset(name)
    home = home or data_home()
    csv_name = PurePosixPath(dataset.csv_member).name
    for folder in (dataset.name, dataset.name.capitalize(), dataset.name.upper()):
        if (home / folder / csv_name).is_file():
            return home / folder
    return None


def resolve_data(arg: str | os.PathLike | None) -> Path:
    """What a `--data` option names: a path, a dataset name, or (None) the Flipkart sample."""
    if arg is not None:
        path = Path(arg).expanduser()
        if path.exists():
            return path
        if str(arg).lower() not in DATASETS:
            raise DatasetError(
                f"--data {arg}: no such file or directory, and not a dataset name "
                f"({', '.join(DATASETS)})"
            )
    name = "flipkart" if arg is None else str(arg).lower()
    found = dataset_path(name)
    if found is None:
        raise DatasetError(
            f"dataset '{name}' is not in the data home {data_home()}: run "
            f"`pm dataset download {name}` or pass --data PATH"
        )
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server allows."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
            if response.status_code == 416:  # already complete
                return
            if response.status_code >= 400:
                raise DatasetError(f"download failed: HTTP {response.status_code} for {url}")
            resumed = response.status_code == 206
            if have and not resumed:
                have = 0  # the server ignored the Range header: start again
            total = response.headers.get("Content-Length")
            total = int(total) + have if total and total.isdigit() else None
            with open(part, "ab" if resumed else "wb") as out, task("downloading", total=total) as bar:
                bar.advance(have)
                for chunk in response.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    bar.advance(len(chunk))
    except requests.RequestException as exc:
        raise DatasetError(
            f"download interrupted ({type(exc).__name__}); the partial file {part} is kept: "
            "run the same command again to resume"
        ) from None


def _safe_extract(archive: zipfile.ZipFile, target: Path) -> None:
    root = target.resolve()
    members = archive.infolist()
    with task("unpacking", total=len(members)) as bar:
        for member in members:
            destination = (target / member.filename).resolve()
            if root not in destination.parents and destination != root:
                raise DatasetError(f"archive member escapes the target directory: {member.filename}")
            archive.extract(member, target)
            bar.advance(1)


def download_dataset(name: str, *, url: str | None = None, home: Path | None = None,
                     force: bool = False, timeout: float = 60.0) -> Path:
    """Download, verify and unpack a dataset into the data home; return its directory.

    ``url`` overrides the archive location: an http(s) URL, a ``file://`` URL or a local
    path to a copy of the archive. An interrupted download leaves ``<name>.zip.part`` in the
    data home and the next call resumes it. Nothing is moved into place before the CSV's
    checksum matches.
    """
    dataset = get_dataset(name)
    home = home or data_home()
    existing = dataset_path(name, home)
    if existing is not None and not force:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    source = url or dataset.url
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        part = home / f"{dataset.name}.zip.part"
        _fetch(source, part, timeout)
        archive_path = part
    else:
        archive_path = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
        if not archive_path.is_file():
            raise DatasetError(f"archive not found: {archive_path}")

    staging = Path(tempfile.mkdtemp(prefix=f".{dataset.name}-", dir=home))
    try:
        try:
            with zipfile.ZipFile(archive_path) as archive:
                _safe_extract(archive, staging)
        except zipfile.BadZipFile:
            if archive_path.suffix == ".part":
                archive_path.unlink()
            raise DatasetError(f"{source} is not a valid zip archive; it was removed, try again") from None
        csv_path = staging / dataset.csv_member
        if not csv_path.is_file():
            raise DatasetError(f"the archive has no {dataset.csv_member}")
        actual = _sha256(csv_path)
        if actual != dataset.sha256:
            raise DatasetError(
                f"checksum mismatch for {dataset.csv_member}: expected {dataset.sha256[:12]}..., "
                f"got {actual[:12]}...; the archive is not the expected one"
            )
        target = home / dataset.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(csv_path.parent, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if archive_path.suffix == ".part":
        archive_path.unlink(missing_ok=True)
    return target
