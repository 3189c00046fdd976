"""One exception type for everything a user can get wrong.

The CLI prints its message on one line and exits non-zero; anything else that
escapes is a bug and keeps its traceback.
"""

import contextlib
import os
import sys
import threading
import types
import warnings
from typing import Any, Callable, Iterator, Optional


class ImpastoError(Exception):
    """A problem with the user's input, settings or environment."""


class ImpastoWarning(UserWarning):
    """Something the run can do, but not as well as the user may expect; the CLI prints it on one line."""


_collecting = threading.local()


@contextlib.contextmanager
def collect_warnings(into: list[str]) -> Iterator[None]:
    """Within it, this thread's warn() calls add their message to `into` instead of warning, each
    time: a batch job keeps its own. Per thread, unlike swapping warnings.showwarning, which is
    the whole process's (a job in another thread would take this one's warnings, or lose them)."""
    with thread_value(_collecting, "sink", into):
        yield


@contextlib.contextmanager
def thread_value(store: threading.local, name: str, value: Any) -> Iterator[None]:
    """`store.<name>` is `value` within it, for this thread only, and as it was after."""
    before = getattr(store, name, None)
    setattr(store, name, value)
    try:
        yield
    finally:
        setattr(store, name, before)


@contextlib.contextmanager
def one_line_warnings(write: Callable[[str], None]) -> Iterator[None]:
    """Within it, an ImpastoWarning is shown as `impasto: warning: ...` through `write` (the user's
    to act on: one line, like an error; a command with progress bars writes above them); other
    warnings are shown as before."""
    with warnings.catch_warnings():
        others = warnings.showwarning

        def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if issubclass(category, ImpastoWarning):
                write(f"impasto: warning: {message}")
            else:
                others(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def warn(message: str) -> None:
    """An ImpastoWarning, attributed to the first caller outside this package (the user's line)."""
    sink = getattr(_collecting, "sink", None)
    if sink is not None:
        sink.append(message)
        return
    package = os.path.dirname(os.path.abspath(__file__))
    level = 1
    frame: Optional[types.FrameType] = sys._getframe(0)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, ImpastoWarning, stacklevel=level)


# Set for the command line's whole run: its messages then name settings as its flags. An
# environment variable, so that the batch's worker processes, started by it, do the same.
COMMAND_LINE_ENV = "IMPASTO_COMMAND_LINE"


@contextlib.contextmanager
def command_line(on: bool = True) -> Iterator[None]:
    """Within it, option() names settings as command-line flags instead of keyword arguments
    (with `on=False`, as keywords again: a server's jobs answer clients who send JSON fields)."""
    before = os.environ.get(COMMAND_LINE_ENV)
    os.environ[COMMAND_LINE_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(COMMAND_LINE_ENV, None)
        else:
            os.environ[COMMAND_LINE_ENV] = before


def on_command_line() -> bool:
    """Whether this process (or the command line that started it) names settings as flags."""
    return os.environ.get(COMMAND_LINE_ENV) == "1"


def number(value: Any) -> str:
    """A value as a user typed it: -1, not -1.0 (a float's repr is Python's, not theirs)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def option(name: str, value: Any = None, placeholder: bool = False) -> str:
    """A setting as the user would give it: `--style-scale 0.62` on the command line,
    `style_scale=0.62` from Python (a message's advice has to be typeable where it is read).
    A `placeholder` value (PATH) stands for one the user fills in, so it is never quoted."""
    shown = number(value)
    if on_command_line():
        flag = "--" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {shown}"
    if value is None:
        return name
    return f"{name}={shown}" if placeholder or not isinstance(value, str) else f"{name}={value!r}"


# A run's `stopped_reason` when the user stopped it. Any other reason is the loss's (NonFiniteLoss),
# after which the best picture so far is kept and the work goes on.
STOP_INTERRUPTED = "interrupted"  # Ctrl-C
STOP_CALLBACK = "stopped by callback"  # a callback returned False (a cancel, a GUI's stop button)
# How a run's `stopped_reason` begins when the device ran out of memory part-way: the picture is
# half painted, and what runs next the same way would run out too (a batch fails the job, a video stops).
STOP_OUT_OF_MEMORY = "out of memory"
USER_STOPS = (STOP_INTERRUPTED, STOP_CALLBACK)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run: `result` holds the best picture so far.

    A KeyboardInterrupt, so a loop of runs stops as any Python loop would; a caller that
    wants the picture catches this: ``except impasto.Interrupted as stop: stop.result.image``.
    """

    def __init__(self, result: Any) -> None:
        super().__init__(STOP_INTERRUPTED)
        self.result = result


class NonFiniteLoss(ImpastoError):
    """The loss became NaN or infinite; `image` is the last good one."""

    def __init__(self, message: str, image: Any = None) -> None:
        super().__init__(message)
        self.image = image


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception from a library (ffmpeg, Ray) as one line of a message: its first, cut short."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else exc.__class__.__name__
