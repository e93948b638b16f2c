"""Errors a user can cause and fix.

The CLI turns a :class:`UserError` into one line on stderr and exit code 2, with no traceback.
Everything else is a bug (or a failed cell, which the runner records) and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: the message names the problem and the fix, on one line."""

    exit_code = 2
