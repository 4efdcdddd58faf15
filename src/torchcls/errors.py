"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2."""


class UserError(Exception):
    """A mistake the user can fix (missing data, bad flag, wrong checkpoint); never a traceback."""


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after writing a checkpoint it can resume from."""
