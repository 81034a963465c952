"""The landing zone: which files are ready to load, opening them safely, and archiving them.

Listing uses `os.scandir` only (no file is opened), so the sensor can call it every tick. Only
regular files directly inside the landing folder qualify; a file is opened with O_NOFOLLOW and
checked to be the very inode that was listed, so a symlink or a swapped file never escapes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rar_pipeline.batch_reader import file_format

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
ARCHIVE_FOLDERS = {"loaded": ".processed", "duplicate": ".duplicates", "rejected": ".rejected"}


@dataclass(frozen=True)
class LandingFile:
    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def identity(self) -> str:
        """Who the file is without reading it: stable while the file is unchanged."""
        return f"{self.name}:{self.size}:{self.mtime_ns}:{self.inode}"


@dataclass
class LandingScan:
    ready: list[LandingFile] = field(default_factory=list)
    settling: list[LandingFile] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def scan_landing(landing_dir: Path, settle_seconds: float, now: float | None = None) -> LandingScan:
    """Classify the entries of the landing folder; `ready` is oldest first."""
    now = time.time() if now is None else now
    scan = LandingScan()
    try:
        entries = list(os.scandir(landing_dir))
    except FileNotFoundError:
        return scan
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue  # dotfiles, and the archive folders
        if entry.is_symlink():
            scan.ignored.append((name, "symlink"))
        elif entry.is_dir(follow_symlinks=False):
            scan.ignored.append((name, "folder"))
        elif not entry.is_file(follow_symlinks=False):
            scan.ignored.append((name, "not a regular file"))
        elif name.lower().endswith(IGNORED_SUFFIXES):
            scan.ignored.append((name, "temporary file"))
        elif file_format(name) is None:
            scan.ignored.append((name, "not .csv/.jsonl(.gz)"))
        else:
            info = entry.stat(follow_symlinks=False)
            found = LandingFile(Path(entry.path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
            settled = now - info.st_mtime_ns / 1e9 >= settle_seconds
            (scan.ready if settled else scan.settling).append(found)
    scan.ready.sort(key=lambda f: (f.mtime_ns, f.name))
    return scan


class LandingFileChanged(Exception):
    """The file is no longer the one that was listed (replaced, grown, or now a link)."""


def open_landing_file(landing_dir: Path, found: LandingFile) -> IO[bytes]:
    if found.path.parent.resolve() != landing_dir.resolve() or found.name in ("", ".", ".."):
        raise LandingFileChanged(f"{found.path} is not directly inside the landing folder")
    try:
        # O_NONBLOCK: opening a FIFO that replaced the file must not hang the run.
        fd = os.open(found.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise LandingFileChanged(f"{found.name} cannot be opened: {error.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_ino != found.inode or info.st_size != found.size:
        os.close(fd)
        raise LandingFileChanged(f"{found.name} changed after it was listed")
    return os.fdopen(fd, "rb")


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    for block in iter(lambda: stream.read(1024 * 1024), b""):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def archive(landing_dir: Path, found: LandingFile, status: str, batch_id: int, sha256: str) -> Path:
    """Move a handled file aside under a name that cannot collide (batch ids are unique)."""
    folder = landing_dir / ARCHIVE_FOLDERS[status]
    folder.mkdir(exist_ok=True)
    target = folder / f"{batch_id:08d}-{sha256[:12]}-{found.name}"
    os.replace(found.path, target)
    return target


class DeliveryError(ValueError):
    """A file handed to `deliver` cannot go into the landing zone; the message says why."""


def deliver(landing_dir: Path, source: Path) -> tuple[Path, str]:
    """Copy `source` into the landing zone atomically; returns (landed path, sha256).

    The copy is written under a dot-name (ignored by the scanner) and renamed into place, and it
    keeps the source's modification time, so a complete old file is loadable at once.
    """
    if not source.exists():
        raise DeliveryError(f"{source}: no such file; check the path")
    if not source.is_file():
        raise DeliveryError(f"{source}: not a regular file")
    if file_format(source.name) is None:
        raise DeliveryError(f"{source}: only .csv, .jsonl, .csv.gz and .jsonl.gz files can be ingested")
    landing_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = landing_dir / f".{source.name}.{os.getpid()}.tmp"
    try:
        with open(source, "rb") as reader, open(partial, "wb") as writer:
            for block in iter(lambda: reader.read(1024 * 1024), b""):
                digest.update(block)
                writer.write(block)
        shutil.copystat(source, partial)
        target = landing_dir / source.name
        if target.exists():
            kind = next(suffix for suffix in (".csv.gz", ".jsonl.gz", ".csv", ".jsonl") if source.name.lower().endswith(suffix))
            target = landing_dir / f"{source.name[: -len(kind)]}-{digest.hexdigest()[:8]}{kind}"
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DeliveryError(f"{source}: cannot copy into {landing_dir}: {error.strerror}") from None
    return target, digest.hexdigest()
