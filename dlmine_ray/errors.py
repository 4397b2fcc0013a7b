"""User-facing errors: one clear line that names the problem.

The base of every layer: any module may import it."""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional


class DlmineError(Exception):
    """An error caused by the user's input (job, data, arguments).

    The CLI prints ``str(err)`` on one line and exits non-zero; no traceback is shown,
    because the message already says what to fix.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


#: lines of Ray's error texts that are advice or wrapping, never the cause
_NOISE = ("To change retry attempts", "Failed to apply UDF transform", "During handling of the above",
          "The above exception was the direct cause", "ray::", "Exception occurred in Ray Data")
#: "pyarrow.lib.ArrowInvalid: CSV parse error ..." / "KeyError: ..." / "RayTaskError(ValueError): ..."
_RAISED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Invalid|Exception|Exit)(?:\([\w.]+\))?: (.+)$")


def first_line(err: BaseException) -> str:
    """The most specific one-line message inside a (possibly Ray-wrapped) exception: the message
    of the innermost raised exception that a Ray traceback carries (not Ray's retry advice, which
    ends a failed Ray Data execution's text), else the last line of the text."""
    cause = err
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^", "~"))
             and not any(n in ln for n in _NOISE)]
    for ln in reversed(lines):  # Ray's task errors carry the traceback: the raised line is the cause
        m = _RAISED.match(ln)
        if m:
            return m.group(1)[:300]
    return lines[-1][:300] if lines else type(cause).__name__


def _user_error_inside(err: BaseException) -> Optional[DlmineError]:
    """A DlmineError that a Ray task raised and Ray wrapped (it is the chain's cause), or None."""
    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, DlmineError):
            return cause
        seen.add(id(cause))
        cause = getattr(cause, "cause", None) or cause.__cause__
    return None


@contextlib.contextmanager
def failing_as(what: str, kind: type = DlmineError) -> Iterator[None]:
    """Turn a failure inside the block into one line: ``kind(f"{what}: <first line of the cause>")``.

    A DlmineError passes as it is, also one raised inside a Ray task (Ray re-raises it as a
    subclass of it, or as its cause). Ray Data's ``map_batches`` keeps only the text of an error
    raised in a batch function, so checks that can fail there are best run once on the driver. With
    ``kind=DlmineError`` the cause is the user's input (the traceback is dropped); with another
    kind (RuntimeError: a failure of ours) the cause stays chained for ``--verbose``."""
    try:
        yield
    except DlmineError:
        raise
    except Exception as err:
        inner = _user_error_inside(err)
        if inner is not None:
            raise inner from None
        if issubclass(kind, DlmineError):
            raise kind(f"{what}: {first_line(err)}") from None
        raise kind(f"{what}: {first_line(err)}") from err
