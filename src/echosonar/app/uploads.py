"""Upload handling for the server: safe names, zip extraction with hard limits, media sniffing.

Nothing a client sends ever becomes a path: uploaded files are stored as ``0000.dcm``,
``0001.mp4``... (extension from an allow-list), and zip entries are *checked* for path tricks and
then extracted under sequential names too. A zip is refused outright when any entry is absolute,
climbs out with ``..``, is a symlink or encrypted, when it has too many entries, when the declared
uncompressed total or any entry's compression ratio is absurd (zip bombs), or when the bytes
actually inflated exceed the limit (declared sizes can lie).
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

#: extensions kept on stored files (ingest sniffs content anyway; this only helps humans)
SAFE_EXTENSIONS = (".dcm", ".dicom", ".mp4", ".avi", ".mov", ".m4v", ".mkv", ".webm")
ZIP_MAGIC = b"PK\x03\x04"
_JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db")
_CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload is refused. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_upload_mb: float = 512.0
    max_files: int = 200
    max_zip_entries: int = 2000
    max_unzipped_mb: float = 2048.0
    max_zip_ratio: float = 250.0


def safe_name(index: int, client_name: str | None, prefix: str = "") -> str:
    """Storage name for upload ``index``: ``{prefix}{index:04d}{ext}`` with an allow-listed
    extension taken from the client's name (else none). The client's name is never a path."""
    ext = PurePosixPath((client_name or "").replace("\\", "/")).suffix.lower()
    return f"{prefix}{index:04d}{ext if ext in SAFE_EXTENSIONS else ''}"


def is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ZIP_MAGIC


def looks_like_media(path: Path) -> bool:
    """DICOM (with preamble, or a raw dataset starting with a group 0002/0008 tag) or a video
    container — the same sniffing as ingest, plus the preamble-less DICOM case."""
    from echosonar.ingest.raw import sniff

    if sniff(path) != "unknown":
        return True
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] in (b"\x00\x00", b"\x01\x00",
                                                                      b"\x05\x00", b"\x10\x00",
                                                                      b"\x12\x00", b"\x16\x00")


def _bad_member(name: str) -> str | None:
    """Why a zip entry name is unsafe, or None."""
    if "\x00" in name:
        return "contains a NUL byte"
    posix, win = PurePosixPath(name.replace("\\", "/")), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or name.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in posix.parts:
        return "climbs out of the archive with '..'"
    return None


def check_zip(zf: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """Validate every entry (see module docstring); returns the file entries to extract."""
    infos = zf.infolist()
    if len(infos) > limits.max_zip_entries:
        raise UploadError(f"zip has {len(infos)} entries, above the limit of "
                          f"{limits.max_zip_entries}", 413)
    total, keep = 0, []
    for i, info in enumerate(infos):
        why = _bad_member(info.filename)
        if why:
            raise UploadError(f"zip entry {i + 1} {why}; archive refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"zip entry {i + 1} is a symbolic link; archive refused")
        if info.flag_bits & 0x1:
            raise UploadError(f"zip entry {i + 1} is encrypted; archive refused")
        if info.is_dir() or any(j in info.filename for j in _JUNK):
            continue
        if info.file_size > 0 and info.compress_size == 0 or (
                info.compress_size and info.file_size / info.compress_size > limits.max_zip_ratio
                and info.file_size > _CHUNK):
            raise UploadError(f"zip entry {i + 1} inflates more than {limits.max_zip_ratio:g}x "
                              "(zip bomb?); archive refused", 413)
        total += info.file_size
        keep.append(info)
    if total > limits.max_unzipped_mb * 2**20:
        raise UploadError(f"zip would inflate to {total / 2**20:.0f} MiB, above the limit of "
                          f"{limits.max_unzipped_mb:g} MiB", 413)
    return keep


def extract_zip(path: Path, dest: Path, limits: UploadLimits, start: int = 0) -> list[Path]:
    """Check, then extract the zip's files into ``dest`` under sequential safe names; returns
    them. Counts the bytes actually inflated and stops at the limit."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise UploadError(f"not a readable zip archive ({e})") from e
    out: list[Path] = []
    budget = int(limits.max_unzipped_mb * 2**20)
    with zf:
        for k, info in enumerate(check_zip(zf, limits)):
            target = dest / safe_name(start + k, info.filename, prefix="z")
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        budget -= len(chunk)
                        if budget < 0:
                            raise UploadError("zip inflates beyond the size limit of "
                                              f"{limits.max_unzipped_mb:g} MiB", 413)
                        dst.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
                raise UploadError(f"zip entry {k + 1} cannot be read ({type(e).__name__})") from e
            out.append(target)
    return out


def expand_uploads(stored: list[Path], dest: Path, limits: UploadLimits) -> list[Path]:
    """Replace stored zips by their checked contents; refuse when no file looks like an echo
    clip (DICOM or video) or when there are too many files."""
    files: list[Path] = []
    for p in stored:
        if is_zip(p):
            files += extract_zip(p, dest, limits, start=len(files))
            p.unlink()
        else:
            files.append(p)
    if len(files) > limits.max_files:
        raise UploadError(f"{len(files)} files, above the limit of {limits.max_files}", 413)
    media = [f for f in files if looks_like_media(f)]
    if not media:
        raise UploadError("none of the uploaded files is a DICOM file or an MP4/AVI video "
                          f"({len(files)} file(s) received)", 415)
    return files
