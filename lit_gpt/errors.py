"""The one exception type for mistakes a user can fix (bad paths, impossible configs, unknown characters)."""


class LitGPTError(ValueError):
    """A user error: the entry points print its message as one line and exit with status 2, without a traceback."""
