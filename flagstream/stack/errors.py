"""The one exception the stack raises for anything an operator can fix."""

from __future__ import annotations


class StackError(Exception):
    """A failure with a one-line message that says what went wrong and how to fix it.

    The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
    """
