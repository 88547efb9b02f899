"""Validation problems: one line each, naming the file and the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in an input.

    Attributes:
        severity: ``error`` (the input is wrong) or ``warning`` (suspicious but usable).
        file: The file concerned (as given by the user or relative to the dataset root).
        where: The location inside the file: a JSON path such as ``annotations[17].segmentation[0]``,
            an XML element, an image id or a pixel value.
        message: What is wrong, e.g. ``polygon needs >= 6 finite coordinates, got 4``.
        code: A short stable identifier for tests and reports, e.g. ``polygon.too_short``.
    """

    severity: Severity
    file: str
    where: str
    message: str
    code: str = ""

    def __str__(self) -> str:
        loc = f"{self.file}: {self.where}" if self.where else self.file
        return f"{self.severity}: {loc}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {
            "severity": self.severity,
            "file": self.file,
            "where": self.where,
            "message": self.message,
            "code": self.code,
        }
