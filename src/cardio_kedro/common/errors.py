"""Errors a user fixes, and how a command line shows them: the message and what to do, not a traceback.

A run that stops on a ``UserError`` (a bad parameter, a missing cohort, a model without a threshold,
...) prints its message in a few lines. The full traceback goes to ``logs/last_error.log``; with
``CARDIO_TRACEBACK=1`` it is printed as well. Any other exception keeps Kedro's full traceback.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from datetime import datetime
from pathlib import Path

from kedro.io import DatasetError

TRACEBACK_ENV = "CARDIO_TRACEBACK"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # colour and cursor codes (Keras wraps messages in bold)
ERROR_LOG = Path("logs") / "last_error.log"


class UserError(Exception):
    """Something the user fixes: the message names the bad value and what to do."""


class UserDatasetError(UserError, DatasetError):
    """A dataset that cannot load because of its input (a missing folder, a bad file): a user error."""


class UserValueError(UserError, ValueError):
    """A node refusing its input (too few positives, a model without a threshold): a user error."""


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes: for a message that goes to a log file, a tag or a pipe."""
    return ANSI_ESCAPE.sub("", text)


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The first ``UserError`` in ``exc``'s chain of causes and contexts, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _write_log(exc_type, exc, tb) -> Path | None:
    try:
        ERROR_LOG.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().isoformat(timespec="seconds")
        ERROR_LOG.write_text(f"{stamp} {' '.join(sys.argv)}\n" + "".join(traceback.format_exception(exc_type, exc, tb)))
        return ERROR_LOG.resolve()
    except OSError:
        return None


def install_excepthook() -> None:
    """Show a ``UserError`` that ends the process as its message; delegate anything else to the current hook."""
    previous = sys.excepthook
    if getattr(previous, "_cardio", False):
        return

    def hook(exc_type, exc, tb):
        user_error = find_user_error(exc)
        if user_error is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            previous(exc_type, exc, tb)
            if user_error is None:
                return
        log = _write_log(exc_type, exc, tb)
        where = f"the full traceback is in {log}" if log else "the traceback could not be written"
        message = plain_text(str(user_error))
        print(
            f"\nError: {message}\n\n({type(user_error).__name__}; {where}; {TRACEBACK_ENV}=1 prints it here)",
            file=sys.stderr,
        )

    hook._cardio = True  # type: ignore[attr-defined]
    sys.excepthook = hook
