"""One clear message per problem: which file, which line, which task, which setting.

Loading collects these instead of stopping at the first, so one broken workflow never hides
the others (they still load) and ``validate`` can list every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from line_exports.names import closest

__all__ = ["TaskPlace", "WorkflowError", "WorkflowErrors", "closest"]


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


@dataclass(frozen=True)
class TaskPlace:
    """Where a task is written, as its errors name it: the file, the line of its ``+name:``
    key, its label (``+group.task``) and its path under the workflow (the asset key's parts)."""

    file: Path
    line: int | None
    task: str
    path: tuple[str, ...] = ()

    def error(
        self, message: str, *, setting: str | None = None, line: int | None = None
    ) -> WorkflowError:
        """A :class:`WorkflowError` at this task (at ``line`` when given, else the task's)."""
        return WorkflowError(
            self.file, message, task=self.task, setting=setting, line=line or self.line
        )
