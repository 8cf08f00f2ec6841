"""Turning exceptions from other libraries into the one-line messages the user sees."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 120) -> str:
    """The first non-empty line of an exception's message (cut to ``limit``), else its type name."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(exc).__name__
