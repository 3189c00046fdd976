"""One exception type for everything a user can get wrong.

The CLI prints its message on one line and exits non-zero; anything else that
escapes is a bug and keeps its traceback.
"""

import os
import sys
import warnings
from typing import Any


class ImpastoError(Exception):
    """A problem with the user's input, settings or environment."""


class ImpastoWarning(UserWarning):
    """Something the run can do, but not as well as the user may expect; the CLI prints it on one line."""


def warn(message: str) -> None:
    """An ImpastoWarning, attributed to the first caller outside this package (the user's line)."""
    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(0)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, ImpastoWarning, stacklevel=level)


class NonFiniteLoss(ImpastoError):
    """The loss became NaN or infinite; `image` is the last good one."""

    def __init__(self, message: str, image: Any = None) -> None:
        super().__init__(message)
        self.image = image
