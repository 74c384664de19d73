"""One clear message per problem: which file, which line, which task, which setting.

Loading collects these instead of stopping at the first, so one broken workflow never hides
the others (they still load) and ``validate`` can list every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from line_exports.names import closest

__all__ = ["WorkflowError", "WorkflowErrors", "closest"]


@dataclass
class WorkflowError(Exception):
    """A problem in a workflow or connections file, located as precisely as we know it."""

    file: Path | str
    message: str
    task: str | None = None
    setting: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}" + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.task:
            parts.append(f"task {self.task}")
        if self.setting:
            parts.append(f"setting {self.setting}")
        return ", ".join(parts) + f": {self.message}"

    def __hash__(self) -> int:
        return hash(str(self))


class WorkflowErrors(Exception):
    """Several problems at once (raised by strict loading)."""

    def __init__(self, errors: list[WorkflowError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
