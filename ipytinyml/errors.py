"""One error hierarchy for everything a user can cause.

Every message is one line: what went wrong and what to do about it. Only
``magics.py`` turns these into IPython ``UsageError`` (one line, no traceback).
"""


class TinyMLError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    def __init__(self, message: str, hint: str | None = None):
        message = " ".join(str(message).split())  # never more than one line
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = self.args[0] if self.args else ""
        return f"{text} ({self.hint})" if self.hint else text


class DataError(TinyMLError):
    """Bad or unusable data: missing columns, non-numeric values, too few rows."""


class ConvertError(TinyMLError):
    """A model that cannot be converted, read or run as asked."""


class ToolchainError(TinyMLError):
    """A missing or failing external tool (compiler, simulator, arduino-cli)."""


class LinkError(TinyMLError):
    """Talking to the board failed: no port, no banner, timeout, garbage, stale model."""
