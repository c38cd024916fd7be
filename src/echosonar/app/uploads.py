"""Upload handling for the server: safe names, zip extraction with hard limits, media sniffing.

Nothing a client sends ever becomes a path: uploaded files are stored as ``0000.dcm``,
``0001.mp4``... (extension from an allow-list), and zip entries are *checked* for path tricks and
then extracted under sequential names too. Every limit is checked from the zip's central
directory *before a single byte is inflated*: a zip is refused outright when any entry is absolute,
climbs out with ``..``, is a symlink or encrypted, when it has too many entries or would bring the
upload above its file count, when the declared uncompressed total, any entry's declared size, any
entry's compression ratio (entries above 64 KiB) or the whole archive's ratio is absurd (zip
bombs). While inflating, an entry may not exceed its declared size and the upload its budget
(declared sizes can lie).
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
_RATIO_FLOOR = 64 << 10  # entries (and archives) smaller than this skip the ratio check


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
    max_zip_entry_mb: float = 1024.0


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


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise UploadError(f"not a readable zip archive ({type(e).__name__})") from e


def check_zip(zf: zipfile.ZipFile, limits: UploadLimits, archive_bytes: int | None = None,
              max_files: int | None = None) -> list[zipfile.ZipInfo]:
    """Validate every entry from the central directory alone, before anything is inflated
    (see module docstring); returns the file entries to extract.

    ``archive_bytes``: the zip's size on disk (whole-archive ratio check); ``max_files``: how
    many files this archive may still add to the upload (default ``limits.max_files``).
    """
    infos = zf.infolist()
    if len(infos) > limits.max_zip_entries:
        raise UploadError(f"zip has {len(infos)} entries, above the limit of "
                          f"{limits.max_zip_entries}", 413)
    entry_cap = limits.max_zip_entry_mb * 2**20
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
        if info.file_size > entry_cap:
            raise UploadError(f"zip entry {i + 1} would inflate to {info.file_size / 2**20:.0f} "
                              f"MiB, above the per-file limit of {limits.max_zip_entry_mb:g} MiB",
                              413)
        # stored entries have ratio 1; a deflated entry's ratio is checked once it is big enough
        # for the ratio to mean something (tiny files of zeros legitimately reach 100x)
        if (info.file_size > 0 and info.compress_size == 0) or (
                info.file_size > _RATIO_FLOOR
                and info.file_size > limits.max_zip_ratio * info.compress_size):
            raise UploadError(f"zip entry {i + 1} inflates more than {limits.max_zip_ratio:g}x "
                              "(zip bomb?); archive refused", 413)
        total += info.file_size
        keep.append(info)
    cap = limits.max_files if max_files is None else max_files
    if len(keep) > cap:
        raise UploadError(f"zip holds {len(keep)} files, above the limit of {cap} files per "
                          "upload", 413)
    if total > limits.max_unzipped_mb * 2**20:
        raise UploadError(f"zip would inflate to {total / 2**20:.0f} MiB, above the limit of "
                          f"{limits.max_unzipped_mb:g} MiB", 413)
    if archive_bytes and total > _RATIO_FLOOR and total > limits.max_zip_ratio * archive_bytes:
        raise UploadError(f"zip inflates {total / archive_bytes:.0f}x as a whole, above "
                          f"{limits.max_zip_ratio:g}x (zip bomb?); archive refused", 413)
    return keep


def extract_zip(path: Path, dest: Path, limits: UploadLimits, start: int = 0,
                max_files: int | None = None, budget_mb: float | None = None) -> list[Path]:
    """Check (central directory), then extract the zip's files into ``dest`` under sequential
    safe names; returns them. Counts the bytes actually inflated and stops at the limit
    (``budget_mb``, default ``limits.max_unzipped_mb``): declared sizes can lie."""
    out: list[Path] = []
    budget = int((limits.max_unzipped_mb if budget_mb is None else budget_mb) * 2**20)
    with _open_zip(path) as zf:
        infos = check_zip(zf, limits, path.stat().st_size, max_files)
        for k, info in enumerate(infos):
            target = dest / safe_name(start + k, info.filename, prefix="z")
            left = info.file_size  # never write more than the central directory declared
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        budget -= len(chunk)
                        left -= len(chunk)
                        if budget < 0 or left < 0:
                            raise UploadError("zip inflates beyond its declared size or the "
                                              f"limit of {limits.max_unzipped_mb:g} MiB", 413)
                        dst.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
                raise UploadError(f"zip entry {k + 1} cannot be read ({type(e).__name__})") from e
            out.append(target)
    return out


def expand_uploads(stored: list[Path], dest: Path, limits: UploadLimits) -> list[Path]:
    """Replace stored zips by their checked contents; refuse when no file looks like an echo
    clip (DICOM or video) or when there are too many files.

    Every archive's central directory is checked first, against what the whole upload may still
    hold (file count, total inflated size): nothing is inflated unless all of it is acceptable.
    """
    zips = [p for p in stored if is_zip(p)]
    n_files, inflated = len(stored) - len(zips), 0
    for p in zips:
        with _open_zip(p) as zf:
            keep = check_zip(zf, limits, p.stat().st_size, limits.max_files - n_files)
        n_files += len(keep)
        inflated += sum(i.file_size for i in keep)
    if n_files > limits.max_files:
        raise UploadError(f"{n_files} files, above the limit of {limits.max_files}", 413)
    if inflated > limits.max_unzipped_mb * 2**20:
        raise UploadError(f"the zips would inflate to {inflated / 2**20:.0f} MiB, above the "
                          f"limit of {limits.max_unzipped_mb:g} MiB", 413)
    files: list[Path] = []
    budget = limits.max_unzipped_mb
    for p in stored:
        if p in zips:
            got = extract_zip(p, dest, limits, start=len(files), budget_mb=budget)
            budget -= sum(f.stat().st_size for f in got) / 2**20
            files += got
            p.unlink()
        else:
            files.append(p)
    media = [f for f in files if looks_like_media(f)]
    if not media:
        raise UploadError("none of the uploaded files is a DICOM file or an MP4/AVI video "
                          f"({len(files)} file(s) received)", 415)
    return files
