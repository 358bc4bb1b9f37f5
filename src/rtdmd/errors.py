"""User-facing errors: the command line prints these as one line and exits non-zero, without a traceback."""

import difflib


class UserError(Exception):
    """A problem with the user's input (config, files, weights) that the user can fix."""


class ConfigError(UserError, ValueError):
    """An invalid configuration: the message names the key and the fix."""


def suggest(name: str, options, prefix: str = "") -> str:
    """`` (did you mean 'prefix.closest'?)``, or the list of valid options when none is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(sorted(options))})"
