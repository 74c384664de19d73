"""A broken workflow stays visible where it would be: the UI shows a job of its name and an
asset whose description and failing check carry the loader's messages (file:line, task,
setting, closest name), instead of the workflow silently disappearing on Reload.

Materializing that asset fails with the same messages (and records the failed check), so a
schedule or a person who launches it learns why at once.
"""

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from line_exports.workflows.errors import WorkflowError

ERROR_ASSET = "workflow_error"
LOADS_CHECK = "workflow_loads"
BROKEN_TAG = "line_exports/broken_workflow"


def _broken_asset(name: str, file: Path, messages: str) -> dg.AssetsDefinition:
    key = dg.AssetKey([name, ERROR_ASSET])
    text = f"{file.name} does not load, so its tasks are not defined:\n{messages}"

    @dg.asset(
        key=key,
        group_name=name,
        description=f"BROKEN WORKFLOW {file.name}: fix the file and reload.\n\n{messages}",
        check_specs=[dg.AssetCheckSpec(LOADS_CHECK, asset=key, description=f"Fails: {messages}")],
        tags={BROKEN_TAG: "true"},
        metadata={"workflow_file": str(file), "errors": dg.MetadataValue.md(messages)},
        kinds={"digdag"},
    )
    def broken(context: dg.AssetExecutionContext) -> Iterator[dg.AssetCheckResult]:
        context.log.error(text)
        yield dg.AssetCheckResult(
            check_name=LOADS_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"errors": dg.MetadataValue.md(messages)},
        )
        raise dg.Failure(description=text, allow_retries=False)

    return broken


def broken_definitions(
    broken: Mapping[Path, list[WorkflowError]], taken: set[str], identifier: Callable[[str], str]
) -> tuple[list[dg.AssetsDefinition], list[Any]]:
    """One error asset and one job per broken ``.dig`` file (``broken``: its errors, which may
    name an included or query file) whose name no loaded workflow uses.

    ``identifier`` turns a file stem into the workflow's name (the loader's own function).
    """
    assets: list[dg.AssetsDefinition] = []
    jobs: list[Any] = []  # unresolved asset jobs
    for file, found in sorted(broken.items()):
        name = identifier(file.stem)
        if name in taken:
            continue
        taken.add(name)
        messages = "\n".join(f"- {e}" for e in found)
        asset = _broken_asset(name, file, messages)
        assets.append(asset)
        jobs.append(
            dg.define_asset_job(
                name,
                selection=dg.AssetSelection.assets(asset),
                description=f"BROKEN WORKFLOW {file.name}:\n{messages}",
                tags={BROKEN_TAG: "true"},
            )
        )
    return assets, jobs
