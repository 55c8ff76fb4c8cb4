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


def writable_folder(path, name: str = "out_dir"):
    """``path`` created now, so a folder that cannot be written stops with one line before any work
    instead of a traceback at the end; returns it as a Path."""
    import os
    from pathlib import Path

    folder = Path(str(path))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot create {folder} ({exc.strerror or exc})") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: cannot write into {folder}")
    return folder
