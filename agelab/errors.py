"""Errors that end a command with one clear line instead of a traceback."""


class AgelabError(Exception):
    """Base class: the message is shown to the user as it is."""


class ConfigError(AgelabError):
    """A config value is missing, of the wrong kind or out of range."""


class DataError(AgelabError):
    """A dataset file is missing or malformed; the message names the file."""


def require_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    """ConfigError unless ``value`` is a whole number >= ``minimum`` (``True`` is not a number here;
    with ``allow_none``, null is accepted too)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = f"an integer >= {minimum}" if minimum != 1 else "a positive integer"
        raise ConfigError(f"{name} must be {'null or ' if allow_none else ''}{wanted}, got {value!r}")
