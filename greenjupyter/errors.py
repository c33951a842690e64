"""The one error tree of greenjupyter."""


class GreenJupyterError(Exception):
    """Base class of every error greenjupyter raises on purpose."""


class SourceUnavailable(GreenJupyterError):
    """A power or energy source cannot be used on this machine.

    ``hint`` says what the user can do about it (a command, a setting), or is empty.
    """

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ConfigError(GreenJupyterError, ValueError):
    """A setting was given a value greenjupyter cannot accept."""
