"""Where runs are stored: the project's default MLflow store and how a store URI maps to a file.
Light on imports (no Lightning, no MLflow) for the commands that only read runs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from agelab.errors import writable_folder


def store_uri(root_dir: str | Path = ".", tracking_uri: str | None = None) -> str:
    """``tracking_uri`` when given, else the project's store ``sqlite:///<root_dir>/mlflow.db`` (absolute)."""
    return str(tracking_uri) if tracking_uri else f"sqlite:///{Path(root_dir).resolve() / 'mlflow.db'}"


def artifact_root(root_dir: str | Path = ".") -> str:
    """Where new experiments keep their artifacts: ``<root_dir>/mlruns``."""
    return (Path(root_dir).resolve() / "mlruns").as_uri()


def sqlite_path(tracking_uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other stores)."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    path = unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path)


def store_path(tracking_uri: str) -> Path | None:
    """The file or folder of a local store (``sqlite:///...``, ``file://...`` or a plain path);
    None for a tracking server."""
    if tracking_uri.startswith("sqlite:"):
        return sqlite_path(tracking_uri)
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(tracking_uri)
    return None


def require_writable_store(tracking_uri: str, name: str = "logger.tracking_uri") -> None:
    """ConfigError in one line, naming ``name``, when ``tracking_uri`` is a local store whose folder
    cannot be made or written (made now); a tracking server is left to MLflow."""
    path = store_path(tracking_uri)
    if path is not None:
        writable_folder(path.parent if sqlite_path(tracking_uri) else path, name)
