"""How a `queue-assets` command reports an error: one line on stderr, and the exit code to return."""

from __future__ import annotations

import sys


def fail(message: str, code: int = 2) -> int:
    """Print `queue-assets: error: <message>` on stderr; returns `code` for the command to return."""
    print(f"queue-assets: error: {message}", file=sys.stderr)
    return code
