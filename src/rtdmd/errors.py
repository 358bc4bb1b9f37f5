"""User-facing errors: the command line prints these as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (config, files, weights) that the user can fix."""


class ConfigError(UserError, ValueError):
    """An invalid configuration: the message names the key and the fix."""
