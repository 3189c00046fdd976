"""One exception type for everything a user can get wrong.

The CLI prints its message on one line and exits non-zero; anything else that
escapes is a bug and keeps its traceback.
"""

from typing import Any


class ImpastoError(Exception):
    """A problem with the user's input, settings or environment."""


class ImpastoWarning(UserWarning):
    """Something the run can do, but not as well as the user may expect; the CLI prints it on one line."""


class NonFiniteLoss(ImpastoError):
    """The loss became NaN or infinite; `image` is the last good one."""

    def __init__(self, message: str, image: Any = None) -> None:
        super().__init__(message)
        self.image = image
