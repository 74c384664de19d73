"""The headline of a failed export says what really happened (issue 13, ``line_exports.headlines``).

Real Dagster runs over HTTP to the sandbox (or to a closed loopback port):

* after Dagster's step retries, the failure a user reads first is the cause (the API's answer,
  the API and host that could not be reached) with the attempts it took, never Dagster's
  "Exceeded max_retries of N"; the failure keeps the run's counts;
* an API that could not be reached is named with its host and port (no token, no query);
* every destination's headline names its API and the API's answer (LinkedIn's too), and when
  rows are of unknown delivery says why (an answer lost in an earlier step attempt, then a 503);
* rows of unknown delivery get their API's own advice (``Destination.delivery_advice``: LINE's
  retry key and 409 only for LINE messages), the same words in the failure, the metadata
  (``delivery_unknown_advice``), the run summary's warning and the README;
* the default step retry policy is the one the README and ``build_export`` describe, and a .dig
  task's ``_retry: 0`` turns it off.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from line_exports import (
    LineConversionResource,
    LinkedInResource,
    MaacResource,
    SqlSource,
    build_export,
    build_export_job,
)
from line_exports.destinations import line_conversion, linkedin, maac
from line_exports.destinations.line_messaging import LineMessagingResource
from line_exports.destinations.line_messaging import advice as line_advice
from line_exports.export import DEFAULT_RETRY_POLICY
from line_exports.run_summary import (
    FAILURE_PREFIX,
    attention_lines,
    log_config,
    outcomes,
    quiet_job,
)
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox import linkedin as linkedin_sandbox
from line_exports.workflows import load_folder
from line_exports_tests.test_outcomes import CASES, COUNTER, adds_up, outcome_metadata, run_case
from line_exports_tests.test_refused_by_api import _closed_port
from line_exports_tests.test_step_retry_others import SEGMENT, _empty_segment

README = Path(__file__).resolve().parents[1] / "README.md"
TOKEN = "tok-Headline-Secret-1234"
API = {
    "maac": "MAAC API",
    "line_conversion": "LINE Conversion API",
    "linkedin": "LinkedIn API",
    "line_push": "LINE Messaging API",
}
NAMED = {
    "maac": "MAAC",
    "maac_segment": "MAAC",
    "line_conversion": "LINE Conversion API",
    "linkedin": "LinkedIn",
    "linkedin_companies": "LinkedIn",
    "line_push": "LINE",
    "line_multicast": "LINE",
    "line_broadcast": "LINE",
    "line_audience": "LINE",
}
"""The word that names each export's API in a headline."""
FAST = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}


def _resource(name: str, url: str) -> Any:
    return {
        "maac": lambda: MaacResource(base_url=url, api_token=TOKEN, poll_seconds=0.05),
        "line_conversion": lambda: LineConversionResource(
            line_tag_id="tag-o", base_url=url, access_token=TOKEN
        ),
        "linkedin": lambda: LinkedInResource(api_url=url, access_token=TOKEN, new_segment_wait=0),
        "line_push": lambda: LineMessagingResource(
            base_url=url, access_token=TOKEN, poll_seconds=0.1
        ),
        "line_multicast": lambda: LineMessagingResource(
            base_url=url, access_token=TOKEN, poll_seconds=0.1
        ),
        "line_audience": lambda: LineMessagingResource(
            base_url=url, access_token=TOKEN, poll_seconds=0.05
        ),
    }[name]()


def _run(
    tmp: Path, name: str, url: str | SandboxServer, retries: int, **extra: Any
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    """Export 3 valid rows of ``name`` to ``url`` (with :data:`TOKEN`), or to the sandbox
    (with its own credentials)."""
    case = CASES[case_of(name)]
    frame = (  # noqa: F841 - read by DuckDB below
        FRAMES[name] if name in FRAMES else case.table(["valid"] * 3).frame
    )
    db = tmp / f"h{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    asset = build_export(
        f"h{next(COUNTER)}",
        destination=case.destination,
        query="select * from t",
        settings={**FAST, **case.settings, **SETTINGS.get(name, {}), **extra},
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0),
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            case.destination: (
                case.resource(url)
                if isinstance(url, SandboxServer)
                else _resource(case_of(name), url)
            ),
        },
        raise_on_error=False,
    )
    return result, outcome_metadata(result)


SETTINGS = {
    "line_broadcast": {  # one broadcast per row (its campaign)
        "target": "broadcast",
        "template_message": json.dumps({"type": "text", "text": "{{campaign}}: 20% off today"}),
    },
    "linkedin_companies": {"audience_type": "companies"},
}
"""Settings of the exports that are not a ``test_outcomes.CASES`` entry as it is."""
FRAMES = {
    "line_broadcast": pd.DataFrame({"campaign": ["Spring", "Summer", "Autumn"]}),
    "linkedin_companies": pd.DataFrame({"company_name": ["Acme", "Globex", "Initech"]}),
}
"""Their rows (3, all valid)."""


def case_of(name: str) -> str:
    """The ``test_outcomes.CASES`` entry (and resource) an export of this file uses."""
    return {
        "maac_segment": "maac",
        "line_broadcast": "line_push",
        "linkedin_companies": "linkedin",
    }.get(name, name)


def headline(result: dg.ExecuteInProcessResult) -> str:
    """What the UI, the run log and ``line-exports run`` show first for the failed step."""
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    return error.message.strip().removeprefix(FAILURE_PREFIX)


def restarts(result: dg.ExecuteInProcessResult) -> int:
    return sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)


@pytest.mark.parametrize("name", list(API))
def test_an_unreachable_api_is_named_with_its_host_after_the_step_retries(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    port = _closed_port()
    result, meta = _run(tmp_path, name, f"http://127.0.0.1:{port}", retries=1)
    said = headline(result)
    assert not result.success and adds_up(meta) and meta["rows_read"] == 3, meta
    # No request ever left (connection refused in every attempt of both step attempts): every
    # row not rejected is unsent, none of unknown delivery (the first attempt's pending record
    # says it never reached the API).
    assert meta["rows_unsent"] == meta["rows_read"] - meta["rows_rejected"], meta
    assert meta["rows_delivery_unknown"] == 0 and meta["rows_accepted"] == 0, meta
    assert re.match(
        rf"h\d+: {API[name]} at 127\.0\.0\.1:{port} could not be reached \(connection refused\)",
        said,
    ), said
    assert "Exceeded max_retries" not in said and TOKEN not in said, said
    if restarts(result):  # retried by Dagster (LINE's quota read is not: it failed at once)
        assert restarts(result) == 1 and said.endswith(
            "(gave up after 2 attempts of the step: its retry_policy allows 1 retry)"
        ), said


REQUEST = {
    "maac": ("/openapi/v1/member/import/", "POST", 1),
    "line_conversion": ("/v1/tag-o/events", "POST", 1),
    "linkedin": ("/rest/dmpSegments/", "POST", 1),  # BATCH_CREATE to /dmpSegments/{id}/users
    "line_push": ("/v2/bot/message/push", "POST", 3),  # one request per row
    "line_multicast": ("/v2/bot/message/multicast", "POST", 1),
}
"""The request that carries the rows of each export (path prefix, method, requests a step
attempt makes)."""
HTTP_ATTEMPTS = FAST["max_retry"] + 1  # of one request in one step attempt
LINE_ONLY = ("409", "X-Line-Retry-Key", "resend window", "line-exports held")
"""Words of LINE's retry-key advice that mean nothing for another API."""


def _prepare(sandbox: Sandbox, name: str) -> None:
    if name.startswith(
        "linkedin"
    ):  # a new segment takes members at once (not 404 for a few seconds)
        linkedin_sandbox.store_of(sandbox).not_found_seconds = 0.0
    if name == "maac_segment":
        _empty_segment(sandbox, SEGMENT["segment_name"])


@pytest.mark.parametrize("scenario", ["503_always", "lost_then_503"])
@pytest.mark.parametrize("name", list(REQUEST))
def test_the_last_attempt_names_the_api_and_its_answer(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, scenario: str
) -> None:
    """The API answers 503 to every attempt (the rows are of unknown delivery with that answer:
    a 5xx may have acted, ``outcomes.fate_of``), or the
    first step attempt's requests reach it but lose their answers and every later one is
    answered 503 (the rows are of unknown delivery: the API may hold them). After Dagster's 2
    step retries the headline names the API and its answer, and, for the lost answers, says
    so and gives that API's own advice (VERIFY-13d G1: LinkedIn's named no API; LinkedIn's and
    LINE push's left out the lost earlier answer)."""
    path, method, requests = REQUEST[name]
    sandbox = sandbox_server.sandbox
    _prepare(sandbox, name)
    if scenario == "lost_then_503":
        lost = requests * HTTP_ATTEMPTS  # every HTTP attempt of the first step attempt
        sandbox.add_fault(Fault(path=path, method=method, lose_answer=True, times=lost))
    sandbox.add_fault(Fault(path=path, method=method, status=503, times=-1))
    result, meta = _run(tmp_path, name, sandbox_server, retries=2)
    said = headline(result)
    assert restarts(result) == 2 and not result.success, said
    assert adds_up(meta) and meta["rows_read"] == 3, meta
    assert re.search(rf"\b{NAMED[name]}\b.*answered 503", said), said  # the API, then its answer
    assert "Exceeded max_retries" not in said and TOKEN not in said, said
    assert said.endswith(
        "(gave up after 3 attempts of the step: its retry_policy allows 2 retries)"
    ), said
    advice = ADVICE[name]
    if scenario == "503_always":
        assert meta["rows_delivery_unknown"] == 3 and meta["rows_refused_by_api"] == 0, meta
        assert "3 rows of unknown delivery" in said and advice in said, said
        return
    assert meta["rows_delivery_unknown"] == 3 and meta["rows_refused_by_api"] == 0, meta
    assert re.search(
        r"no answer to \d+ (and a 5xx answer to \d+ )?earlier attempt\(s\), then", said
    )
    assert "3 rows of unknown delivery" in said and f": {advice} (gave up after" in said, said
    assert meta["delivery_unknown_advice"] == advice, meta


@pytest.mark.parametrize("name", ["maac", "line_conversion", "linkedin", "line_push"])
def test_a_run_the_api_refused_entirely_names_the_api(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """Every valid row sent and refused by the API (its answer per row): the headline says which
    API accepted none of them, then its answers (was "the API accepted none")."""
    case = CASES[name]
    table = case.table(["refused"] * 3)
    result, meta = run_case(sandbox_server, tmp_path, case, table)
    said = headline(result)
    assert not result.success and meta["rows_refused_by_api"] == 3 and adds_up(meta), meta
    # LINE push stops itself ("LINE accepted none of the push requests"); the others meet
    # outcomes.acceptance_failure, which names the API.
    assert re.match(rf"o\d+: (the {API[name]}|{NAMED[name]}) accepted none of", said), said
    assert "3 refused" in said or "3 recipients refused" in said, said


def test_a_source_that_stays_unreachable_is_the_headline(
    sandbox_server: SandboxServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warehouse that refuses connections (a transient error: the step is retried) ends in
    the driver's own words, not "Exceeded max_retries of 1"; the URL's password is not in it.
    The CLI's run log (``run_summary.quiet_job``) still shows that unexpected error's stack."""
    port = _closed_port()
    asset = build_export(
        "warehouse_down",
        destination="line_conversion",
        query="select 1 as n",
        retry_policy=dg.RetryPolicy(max_retries=1, delay=0),
    )
    defs = dg.Definitions(
        assets=[asset],
        jobs=[build_export_job(asset)],
        resources={
            "sql_source": SqlSource(url=f"postgresql+psycopg://lx:{TOKEN}@127.0.0.1:{port}/db"),
            "line_conversion": _resource("line_conversion", sandbox_server.url),
        },
    )
    job = quiet_job(defs.resolve_job_def("warehouse_down_job"))
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=log_config("INFO")
        )
        said = headline(result)  # type: ignore[arg-type]
        assert restarts(result) == 1 and not result.success, said  # type: ignore[arg-type]
    assert said.startswith("warehouse_down: OperationalError: "), said
    assert "Connection refused" in said and TOKEN not in said, said
    assert said.endswith("(gave up after 2 attempts of the step: its retry_policy allows 1 retry)")
    log = capsys.readouterr().err
    failed = log[log.index("Execution of step") :]
    assert "OperationalError" in failed and 'File "' in failed, log[-3000:]
    assert TOKEN not in log


ADVICE = {
    "maac": maac.MEMBERS_ADVICE,
    "maac_segment": maac.SEGMENT_ADVICE,
    "line_conversion": line_conversion.UNKNOWN_DELIVERY_ADVICE,
    "linkedin": linkedin.USERS_ADVICE,
    "linkedin_companies": linkedin.COMPANIES_ADVICE,
    "line_push": line_advice.MESSAGES,
    "line_multicast": line_advice.MESSAGES,
    "line_broadcast": line_advice.MESSAGES,
    "line_audience": line_advice.AUDIENCE,
}
"""Each export's own advice for rows of unknown delivery, as its destination module states it."""
LOST = {
    "maac": (Fault(path="/openapi/v1/member/import/", method="POST", lose_answer=True, times=-1),),
    "maac_segment": (
        Fault(path="/openapi/v1/custom_segment/", method="PATCH", lose_answer=True, times=-1),
    ),
    "line_conversion": (Fault(path="/v1/tag-o/events", lose_answer=True, times=-1),),
    "linkedin": (Fault(path="/rest/dmpSegments/", method="POST", lose_answer=True, times=-1),),
    "linkedin_companies": (
        Fault(path="/rest/dmpSegments/", method="POST", lose_answer=True, times=-1),
    ),
    "line_push": (Fault(path="/v2/bot/message/push", lose_answer=True, times=-1),),
    "line_multicast": (Fault(path="/v2/bot/message/multicast", lose_answer=True, times=-1),),
    "line_broadcast": (Fault(path="/v2/bot/message/broadcast", lose_answer=True, times=-1),),
    "line_audience": (Fault(path="/v2/bot/audienceGroup/upload", lose_answer=True, times=-1),),
}
"""Faults that make the API act on the rows' requests and lose every answer."""


@pytest.mark.parametrize("name", list(ADVICE))
def test_rows_of_unknown_delivery_get_their_apis_own_advice(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """The API acts on the rows but every answer is lost: the headline names the API and ends
    with that API's advice, the metadata and the run summary's warning say it in the same words,
    the README quotes it; LINE's retry key, 409 and ``line-exports held`` are in LINE messages'
    advice only (VERIFY-13d G2)."""
    sandbox = sandbox_server.sandbox
    _prepare(sandbox, name)
    for fault in LOST[name]:
        sandbox.add_fault(fault)
    extra = {k: v for k, v in SEGMENT.items() if v is not None} if name == "maac_segment" else {}
    if name == "maac_segment":
        extra["update_segment"] = True
    if name == "line_audience":
        extra["audience_name"] = "lost answers"
    result, meta = _run(tmp_path, name, sandbox_server, retries=0, **extra)
    said = headline(result)
    advice = ADVICE[name]
    assert not result.success and adds_up(meta) and meta["rows_delivery_unknown"] > 0, meta
    assert NAMED[name] in said, said
    assert said.endswith(f"rows of unknown delivery: {advice}") or said.endswith(f"): {advice}"), (
        said
    )
    assert meta["delivery_unknown_advice"] == advice, meta
    (warning,) = [line for line in attention_lines(outcomes(result)) if "unknown delivery" in line]
    assert warning.endswith(f"; {advice}"), warning
    assert warning.count("re-execute") == 1 and said.count("re-execute") == 1, warning
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert advice in readme
    others = {a for a in ADVICE.values() if a != advice}
    assert not any(other in said or other in warning for other in others), said
    if advice != line_advice.MESSAGES:
        found = [w for w in LINE_ONLY if w in said or w in warning]
        assert not found, (found, said)


def test_the_default_retry_policy_is_the_documented_one() -> None:
    """README and ``build_export``'s docstring state the policy an export gets by default."""
    policy = DEFAULT_RETRY_POLICY
    assert (policy.max_retries, policy.delay, policy.backoff) == (2, 30, dg.Backoff.EXPONENTIAL)
    waits = [policy.calculate_delay(n) for n in (1, 2)]
    stated = (
        f"RetryPolicy(max_retries={policy.max_retries}, delay={policy.delay:g}, "
        f"backoff=EXPONENTIAL): it waits {waits[0]:g} s, then {waits[1]:g} s"
    )
    for text in (README.read_text(encoding="utf-8"), build_export.__doc__ or ""):
        assert stated in " ".join(text.replace("`", "").split())


WORKFLOW = """
+no_retry:
  _retry: 0
  td>: q.sql
  result_connection: maac_down
  result_settings: {data_object: segments, segment_name: a, max_retry: 1, initial_retry_wait: 1}
+default:
  td>: q.sql
  result_connection: maac_down
  result_settings: {data_object: segments, segment_name: b}
"""


def test_a_dig_export_retries_by_default_and_not_with_retry_0(tmp_path: Path) -> None:
    """A td> task without ``_retry`` keeps the export's default step retries (digdag would not
    retry it); ``_retry: 0`` runs once, and its failure names the unreachable MAAC host."""
    port = _closed_port()
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text(
        "connections:\n  maac_down:\n    type: maac\n"
        f"    base_url: http://127.0.0.1:{port}\n    poll_seconds: 0.05\n"
    )
    (folder / "q.sql").write_text("SELECT line_uid FROM segment_users\n")
    (folder / "r.dig").write_text(textwrap.dedent(WORKFLOW).lstrip())
    loaded = load_folder(folder)
    assert loaded.errors == []
    defs = loaded.definitions()
    tasks = {t.name: t for t in loaded.get("r").tasks}
    policy = {name: defs.get_assets_def(task.key).op.retry_policy for name, task in tasks.items()}
    assert policy == {"no_retry": None, "default": DEFAULT_RETRY_POLICY}, policy
    job = defs.resolve_job_def("r")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            asset_selection=[tasks["no_retry"].key],
        )
    said = headline(result)
    assert restarts(result) == 0 and not result.success
    assert f"MAAC API at 127.0.0.1:{port} could not be reached (connection refused)" in said, said
