"""The example exports on Kubernetes: every step in its own pod, rows read from a warehouse.

The assets and jobs are those of ``examples/definitions.py``; only where rows come from
(``WAREHOUSE_URL``, any SQLAlchemy URL, streamed in chunks) and where steps run (one Kubernetes
Job per step) change. Runs get their pod from the instance (``examples/k8s/dagster.yaml``:
``K8sRunLauncher``, pools). Needs ``pip install 'line-exports[k8s]'``. Loaded by
``line_exports_tests/test_scale_out.py``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_k8s import k8s_job_executor

from line_exports import (
    LineConversionResource,
    LineMessagingResource,
    LinkedInResource,
    MaacResource,
    SqlSource,
)
from line_exports.paths import load_module

EXAMPLES = Path(__file__).resolve().parents[1]

# Per step pod. The largest footprint measured is a CAPI export sending 100,000 events a request
# (898 MB peak RSS; a 10M-ID LINE audience peaks at 312 MB: bench/README.md); `max_concurrent` caps one run's step pods, the pools cap each API.
STEP_POD = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "2Gi"},
        }
    }
}
k8s_executor = k8s_job_executor.configured({"max_concurrent": 4, "step_k8s_config": STEP_POD})


# ``examples/definitions.py`` by path: the examples folder is not a package, and step pods load
# this file by path too. Loaded once per process.
examples = load_module(EXAMPLES / "definitions.py", "line_exports_examples_definitions")

EXPORTS = [
    examples.maac_members,
    examples.maac_segment,
    examples.line_conversion_events,
    examples.line_audience,
    examples.line_push,
    examples.line_multicast,
    examples.linkedin_contacts,
    examples.linkedin_companies,
]

defs = dg.Definitions(
    assets=EXPORTS,
    jobs=[
        examples.maac_sample_job,
        examples.line_conversion_job,
        examples.line_messaging_job,
        examples.linkedin_job,
        examples.all_exports_job,
    ],
    resources={
        # A password in the URL stays in the secret: EnvVar is read in the pod, at run time.
        "sql_source": SqlSource(url=dg.EnvVar("WAREHOUSE_URL"), chunk_size=50_000),
        # Tokens from the `line-exports-credentials` secret (see dagster.yaml); with
        # LINE_EXPORTS_SANDBOX=off there, a token missing from the secret fails the run.
        "maac": MaacResource.from_env(),
        "line_conversion": LineConversionResource.from_env(),
        "line_messaging": LineMessagingResource.from_env(),
        "linkedin": LinkedInResource.from_env(),
    },
    executor=k8s_executor,
)
