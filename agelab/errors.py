"""Errors that end a command with one clear line instead of a traceback."""


class AgelabError(Exception):
    """Base class: the message is shown to the user as it is."""


class ConfigError(AgelabError):
    """A config value is missing, of the wrong kind or out of range."""


class DataError(AgelabError):
    """A dataset file is missing or malformed; the message names the file."""
