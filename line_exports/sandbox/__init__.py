"""A local, faithful fake of every destination API (the embedded default endpoint)."""

from line_exports.sandbox.core import DEFAULT_TOKENS, Fault, Sandbox
from line_exports.sandbox.server import SandboxServer, ensure_sandbox

__all__ = ["DEFAULT_TOKENS", "Fault", "Sandbox", "SandboxServer", "ensure_sandbox"]
