"""Ingest errors: one class per reason a file is skipped.

Every error names the file by its *basename* only (folders often carry patient names) and states
a reason written by us, never a header value: messages are safe to log and to print in summaries.
Callers catch :class:`IngestError`; anything else escaping a reader is a bug.
"""

from __future__ import annotations

import os
from pathlib import Path


class IngestError(ValueError):
    """A file cannot be ingested. ``file`` is the basename, ``reason`` a PHI-free sentence."""

    kind = "error"

    def __init__(self, path: str | Path, reason: str) -> None:
        self.file = os.path.basename(str(path))
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")

    def __reduce__(self):  # picklable across worker processes without the full path
        return (type(self), (self.file, self.reason))


class NotSupportedFileError(IngestError):
    """Neither DICOM nor a supported video container."""

    kind = "not_dicom"


class CorruptFileError(IngestError):
    """Truncated or damaged file: the header or pixel data cannot be parsed."""

    kind = "corrupt"


class NotImageError(IngestError):
    """DICOM without pixel data (structured report, waveform, DICOMDIR, ...)."""

    kind = "not_image"


class ModalityError(IngestError):
    """Not an ultrasound object (CT, MR, secondary capture, ...)."""

    kind = "modality"


class FrameCountError(IngestError):
    """Zero frames, a single still frame (when ``min_frames`` > 1) or too many frames."""

    kind = "frames"


class SizeError(IngestError):
    """File or image dimensions outside the configured sanity limits."""

    kind = "size"


class CodecError(IngestError):
    """The transfer syntax or video codec has no installed decoder, or decoding failed."""

    kind = "codec"


class PixelValueError(IngestError):
    """Pixel values are unusable: NaN/inf, unsupported bit depth or photometric interpretation."""

    kind = "pixels"


class HeaderError(IngestError):
    """A header value needed for preprocessing is invalid (NaN, negative or zero timing/spacing)."""

    kind = "header"


class DuplicateError(IngestError):
    """Same SOP instance or identical pixels as a file already in the study."""

    kind = "duplicate"
