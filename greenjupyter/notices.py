"""One-line messages to the user, each said once per process."""

from __future__ import annotations

import sys

_said: set[str] = set()


def notice(key: str, message: str) -> bool:
    """Print ``message`` to stderr unless a notice with ``key`` was already printed; return True if printed."""
    if key in _said:
        return False
    _said.add(key)
    print(f"greenjupyter: {message}", file=sys.stderr)
    return True


def forget(prefix: str = "") -> None:
    """Let notices whose key starts with ``prefix`` be said again (after an unload, say)."""
    for key in [k for k in _said if k.startswith(prefix)]:
        _said.discard(key)
