"""The package imports its heavy parts on first use: a webhook receiver (``webhook serve``, its
workers), ``line-exports --help``, the parsing of every command and ``linkedin-auth`` load neither
Dagster nor pandas nor DuckDB, while every public name still imports."""

from __future__ import annotations

import json
import subprocess
import sys

import line_exports
import line_exports.workflows
from line_exports.destinations.line_messaging import structure

HEAVY = ("dagster", "pandas", "duckdb", "pyarrow", "numpy", "sqlglot", "phonenumbers")

RECEIVER = """
import json, sys
import line_exports.webhook.app, line_exports.webhook.workers
from line_exports.cli import webhook_parser
from line_exports.webhook.config import relay_target_problem
webhook_parser().parse_args(["webhook", "serve", "--workers", "2"])
relay_target_problem("https://hooks.example.com/line")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})))
"""


def test_the_receiver_loads_no_heavy_package() -> None:
    code = RECEIVER.format(heavy=repr(set(HEAVY)))
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(ran.stdout) == []


PARSER = """
import contextlib, io, json, sys
import line_exports.linkedin_auth
from line_exports.cli import build_parser, main
from line_exports.workflows.cli import table
with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):
    main(["--help"])
assert "linkedin-auth" in shown.getvalue()
for args in (["sandbox", "--stop"], ["validate", "x"], ["plan", "x"], ["run", "x"],
             ["linkedin-auth", "--no-browser"], ["demo", "--job"]):
    build_parser().parse_args(args)
table(["a", "n"], [["x", 1]])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})))
"""


def test_help_and_every_parser_load_no_heavy_package() -> None:
    """Only a command that runs something (a workflow, the demo, the sandbox) pays for Dagster:
    ``--help``, a mistyped flag and ``linkedin-auth`` answer at once."""
    code = PARSER.format(heavy=repr(set(HEAVY)))
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(ran.stdout) == []


DEFINITIONS = """
import json, sys
import line_exports.workflows.loader, line_exports.export, line_exports.sandbox.app
from line_exports.destinations.line_messaging.messages import message_problems
from line_exports.workflows.variables import parse_template
parse_template("plain text, no script")
before = sorted(m for m in sys.modules if m.split(".")[0] in {"linebot", "esprima"})
problems = message_problems({"type": "text", "text": "hi", "txet": "x"}, "messages[0]")
parse_template("${1 + 1}")
after = {m.split(".")[0] for m in sys.modules}
print(json.dumps([before, problems, sorted({"linebot", "esprima"} & after)]))
"""


def test_definitions_load_line_models_and_esprima_only_when_used() -> None:
    """A process that loads workflows, exports and the sandbox but checks no LINE message and
    parses no ``${...}`` (a CAPI or MAAC run, a race child) does not import line-bot-sdk's
    models or esprima (about 2 s of CPU together); the first message check and the first script
    import them and still find what they found before."""
    ran = subprocess.run(
        [sys.executable, "-c", DEFINITIONS], capture_output=True, text=True, timeout=120, check=True
    )
    before, problems, after = json.loads(ran.stdout)
    assert before == []
    assert problems == [["messages[0].txet", structure.UNKNOWN_PROPERTY]]
    assert after == ["esprima", "linebot"]


def test_every_public_name_imports() -> None:
    for package in (line_exports, line_exports.workflows):
        for name in package.__all__:
            assert getattr(package, name) is not None, name
        assert set(package.__all__) <= set(dir(package))
        assert set(package.__all__) == set(package._EXPORTS)
    from line_exports import SqlSource, build_export  # the documented form

    assert build_export.__module__ == "line_exports.export"
    assert SqlSource.__module__ == "line_exports.sources"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        line_exports.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")
