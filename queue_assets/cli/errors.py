"""How a `queue-assets` command reports an error: one line on stderr, and the exit code to return."""

from __future__ import annotations

import sys

from ..redact import redact


def fail(message: str, code: int = 2) -> int:
    """Print `queue-assets: error: <message>` (redacted) on stderr; returns `code` for the command to return."""
    print(f"queue-assets: error: {redact(message)}", file=sys.stderr)
    return code
