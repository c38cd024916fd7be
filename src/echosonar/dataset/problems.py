"""The list of what went wrong while building a dataset, as the summary JSON reports it.

Every mismatch between the user's files (a labels row without a study, a value that is not 0/1,
an unknown finding name, a duplicate identifier, ...) becomes one :class:`Problem` instead of an
exception: a dataset of 2,000 studies must not die on row 1,731. A problem names *where* by
position only (``labels row 7``, ``study folder #3 [key]``), never by a study identifier or a file
name, because both often carry patient names and the summary is written into the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: ``error``: the item (row, study, clip, column) is left out. ``warning``: kept, but worth a look.
LEVELS = ("error", "warning")


@dataclass(frozen=True)
class Problem:
    """One mismatch: ``where`` (a position, never an identifier), ``reason`` and its level."""

    where: str
    reason: str
    level: str = "error"

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "where": self.where, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.reason}"


@dataclass
class Problems:
    """An ordered collection of problems with helpers for the two levels."""

    items: list[Problem] = field(default_factory=list)

    def error(self, where: str, reason: str) -> None:
        self.items.append(Problem(where, reason, "error"))

    def warning(self, where: str, reason: str) -> None:
        self.items.append(Problem(where, reason, "warning"))

    def extend(self, other: Problems) -> None:
        self.items.extend(other.items)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.level == "warning"]

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.items]

    def __len__(self) -> int:
        return len(self.items)


def quoted(value: str, limit: int = 40) -> str:
    """A user's cell value quoted in a reason, cut to ``limit`` characters (a finding name or a
    number is short; anything longer is probably not what the column is for)."""
    value = " ".join(str(value).split())
    return repr(value if len(value) <= limit else value[:limit] + "...")
