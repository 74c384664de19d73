"""The README's and docs/' commands, executed (in the already set-up environment), and the
outputs the README shows compared with what the commands print, so docs and behaviour cannot
drift apart.

Every command in a ``bash`` block, and every inline ``line-exports ...`` command, must be known
here: run (and checked) by this file, or named with the test or the reason that covers it. A
command added to the docs and known nowhere fails :func:`test_every_documented_command_is_known`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from line_exports.sandbox import SandboxServer
from line_exports_tests.cli_helpers import CLI, REPO, line_exports

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Commands documented but not run here, each with what covers it instead.
COVERED_ELSEWHERE = {
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m pytest -q -n auto": (
        ".ci/run runs exactly this command (the whole suite, this file included)"
    ),
    "DAGSTER_HOME=$PWD .venv/bin/dagster dev": (
        "test_ui.py starts dagster dev on workspace.yaml and uses the UI in Chromium"
    ),
    "export MAAC_API_TOKEN=...": "needs a real MAAC account; test_maac.py covers the token path",
    "pip install 'line-exports[k8s]'": "an install; test_scale_out.py loads examples/k8s",
    "line-exports linkedin-auth": "interactive OAuth; test_linkedin_auth.py runs its flow",
    "line-exports validate examples/td_corpus/staging_swap": (
        "test_td_corpus.py validates every examples/td_corpus project through the CLI"
    ),
    "line-exports run newsletter --workflows examples/td_corpus/staging_swap": (
        "test_td_corpus.py runs every examples/td_corpus workflow through the CLI"
    ),
    "line-exports webhook serve --spool-url postgresql+psycopg://lx@db-host/line_oa": (
        "test_webhook_postgres.py runs two webhook serve --spool-url on a real PostgreSQL"
    ),
    "line-exports plan": (
        "test_line_messaging_plan.py runs plan on a LINE quota; test_sync.py"
        "::test_plan_lists_adds_updates_and_removes runs it on a diff/mirror export"
    ),
    "line-exports plan WORKFLOW --test-send N --to ID[,ID...]": (
        "test_test_send.py runs it on push, multicast, broadcast, audience, MAAC and LinkedIn"
    ),
    "line-exports webhook relay": "test_webhook_relay.py::test_relay_command_forwards_until_stopped",
    "line-exports webhook replay --since 2h [--target URL] [--source NAME]": (
        "test_webhook_relay.py::test_dead_letters_then_replay runs webhook replay --target"
    ),
    "line-exports webhook resend [--source NAME] [--target URL] [--id N]": (
        "test_webhook_relay.py::test_resend_dead_letters_once_each_recorded runs webhook resend"
    ),
    "line-exports webhook dead-letters": (
        "test_webhook_relay.py::test_resend_dead_letters_once_each_recorded runs it"
    ),
}
# Commands this file runs (the test that runs each is named).
RUN_HERE = {
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/line-exports demo": (
        "test_demo_prints_what_the_readme_shows (the environment is set up: the last command)"
    ),
    "line-exports demo --job": "test_demo_job_lists_the_jobs",
    "line-exports demo --job all_exports_job": "test_all_exports_job_runs_every_sample_export",
    "line-exports sandbox": "test_sandbox_commands",
    "line-exports sandbox --stop": "test_sandbox_commands",
    "line-exports validate examples/workflows": "test_workflow_commands",
    "line-exports plan maac_daily --workflows examples/workflows": "test_workflow_commands",
    "line-exports run maac_crescendo --workflows examples/workflows": "test_workflow_commands",
    "line-exports validate --workflows examples/td_project": "test_workflow_commands",
    "line-exports webhook new-source --name shop_oa --base-url https://hooks.example.com --write": (
        "test_webhook_commands_work_together"
    ),
    "export LINE_CHANNEL_SECRET_SHOP_OA=...": "test_webhook_commands_work_together",
    "line-exports webhook serve --host 127.0.0.1 --port 8080 --workers 2": (
        "test_webhook_commands_work_together"
    ),
    "line-exports held EXPORT": "test_past_the_retry_key_window_rows_are_held_until_released",
    "line-exports held EXPORT --resend": (
        "test_past_the_retry_key_window_rows_are_held_until_released"
    ),
}


def documented_commands() -> list[str]:
    """Every command line of the docs' ``bash`` blocks (comments dropped) and every inline
    ``line-exports ...`` code span."""
    found: list[str] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S):
            for line in block.splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command:
                    found.append(command)
        for span in re.findall(r"`((?:\.venv/bin/)?line-exports [^`]+)`", text):
            found.append(span.removeprefix(".venv/bin/").strip())
    return found


def test_every_documented_command_is_known() -> None:
    commands = documented_commands()
    assert len(commands) >= 10
    unknown = [c for c in commands if c not in RUN_HERE and c not in COVERED_ELSEWHERE]
    assert not unknown, f"documented commands no test runs: {unknown}"


def test_ci_runs_the_readmes_test_command() -> None:
    """``.ci/run`` ends with the README's Quick start test command, exactly."""
    quick_start = re.search(
        r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S
    )
    test_command = next(c for c in quick_start.group(1).splitlines() if "pytest" in c)  # type: ignore[union-attr]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test_command


def readme_block(heading: str) -> str:
    """The first fenced block after a README heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def normalized(text: str, home: Path) -> list[str]:
    """What must match exactly: varying figures (port, run id, seconds, status polls) masked,
    the test's data folder shown as the default ``data/``, column padding collapsed."""
    text = text.replace(f"{home}/", "data/")
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "RUN", text)
    text = re.sub(r"\b\d+\.\d+(s?)\b", r"N\1", text)
    lines = []
    for line in text.strip().splitlines():
        line = re.sub(r"\b[\d,]+(\s+)N$", r"R\1N", line.rstrip())  # requests: status polls
        lines.append(re.sub(r"\s+", " ", line))
    return lines


def test_demo_prints_what_the_readme_shows(line_exports_home: Path) -> None:
    ran = line_exports("demo", process=True)  # the README's first command, as a user runs it
    assert ran.code == 0, ran.text
    shown = normalized(readme_block("What the demo prints"), Path("/nonexistent"))
    printed = normalized(ran.out, line_exports_home)
    assert printed == shown
    assert "UserWarning" not in ran.err  # Dagster's warning about an unresolved asset job


def test_demo_job_lists_the_jobs() -> None:
    ran = line_exports("demo", "--job")
    assert ran.code == 0, ran.text
    listed = [line.split()[0] for line in ran.out.splitlines()[1:]]
    assert "maac_sample_job" in listed and "all_exports_job" in listed
    assert "maac_sample_job  (the default)" in ran.out
    assert "sandbox listening" not in ran.out  # nothing ran


def test_all_exports_job_runs_every_sample_export() -> None:
    ran = line_exports("demo", "--job", "all_exports_job")
    assert ran.code == 0, ran.text
    exports = {
        "maac_members",
        "maac_segment",
        "line_audience",
        "line_push",
        "line_multicast",
        "line_conversion_events",
        "linkedin_contacts",
        "linkedin_companies",
    }
    rows = {line.split()[0] for line in ran.out.splitlines() if line.split()[:1]}
    assert exports <= rows, ran.out
    assert "all_exports_job: succeeded" in ran.out


def test_top_level_help_is_for_users() -> None:
    ran = line_exports("--help")
    assert ran.code == 0
    assert "Each concern registers its own sub-commands" not in ran.out
    assert "line-exports demo" in ran.out and "validate examples/workflows" in ran.out
    for command in ("demo", "sandbox", "validate", "plan", "run", "webhook", "linkedin-auth"):
        assert command in ran.out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds} s")


def test_sandbox_commands(line_exports_home: Path) -> None:
    """``line-exports sandbox`` serves in the foreground; the background sandbox an export
    starts says it outlives the run, and ``line-exports sandbox --stop`` stops it."""
    port = _free_port()
    foreground = subprocess.Popen(
        [str(CLI), "sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/_sandbox/health")
        assert requests.get(f"http://127.0.0.1:{port}/_sandbox/state", timeout=5).ok
    finally:
        foreground.send_signal(signal.SIGINT)
        foreground.wait(timeout=30)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ran = line_exports(
        "run",
        "maac_crescendo",
        "--workflows",
        "examples/workflows",
        env={"LINE_EXPORTS_SANDBOX_URL": url},
    )
    assert ran.code == 0, ran.text
    assert f"started the local sandbox at {url} in the background" in ran.err
    assert f"after dagster dev stops: stop it with `line-exports sandbox --stop --port {port}`" in (
        ran.err
    )
    pid = int((line_exports_home / f"sandbox-{port}.pid").read_text())
    assert requests.get(f"{url}/_sandbox/health", timeout=5).ok  # it outlived the run
    stopped = line_exports("sandbox", "--stop", "--port", str(port))
    assert stopped.code == 0 and f"(pid {pid})" in stopped.out, stopped.text
    with pytest.raises(requests.RequestException):
        requests.get(f"{url}/_sandbox/health", timeout=2)


def test_workflow_commands(sandbox_server: SandboxServer) -> None:
    env = {"LINE_EXPORTS_SANDBOX_URL": sandbox_server.url}
    validated = line_exports("validate", "examples/workflows")
    assert validated.code == 0, validated.text
    assert "4 workflow(s) loaded, 0 error(s)" in validated.out
    td_project = line_exports("validate", "--workflows", "examples/td_project")
    assert td_project.code == 0, td_project.text
    planned = line_exports("plan", "maac_daily", "--workflows", "examples/workflows", env=env)
    assert planned.code == 0, planned.text
    assert "plan only: nothing was sent" in planned.out
    ran = line_exports(
        "run", "maac_crescendo", "--workflows", "examples/workflows", env=env, process=True
    )
    assert ran.code == 0, ran.text
    assert re.search(
        r"td-result-into-line\s+ok\s+3,000\s+2,880\s+120\s+2,880\s+0\s+0\s+0\s+2,880", ran.out
    )
    assert "rejects file: " in ran.out


def test_webhook_commands_work_together(line_exports_home: Path) -> None:
    """new-source --write, then serve (as the README writes them): the new source's URL
    answers a signed request with 200."""
    made = line_exports(
        "webhook",
        "new-source",
        "--name",
        "shop_oa",
        "--base-url",
        "https://hooks.example.com",
        "--write",
    )
    assert made.code == 0, made.text
    path = re.search(r"webhook URL: https://hooks\.example\.com(/v1/task/\S+)", made.out).group(1)  # type: ignore[union-attr]
    secret = "a-channel-secret"
    port = _free_port()
    serve = subprocess.Popen(
        [
            str(CLI),
            "webhook",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env={**os.environ, "LINE_CHANNEL_SECRET_SHOP_OA": secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/", seconds=90)
        body = json.dumps({"destination": "U0", "events": []}).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        import base64

        answer = requests.post(
            f"http://127.0.0.1:{port}{path}",
            data=body,
            headers={
                "x-line-signature": base64.b64encode(signature).decode(),
                "content-type": "application/json",
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a slow shutdown on a busy host: its workers too
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=30)


def test_nux_folder_is_git_ignored() -> None:
    """``DAGSTER_HOME=$PWD dagster dev`` writes .nux/ in the repository root."""
    ignored = subprocess.run(["git", "check-ignore", "-q", ".nux/nux.yaml"], cwd=REPO, check=False)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0
