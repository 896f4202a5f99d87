"""Optional dependencies and the extra that installs each, so that a missing one is named in
its error ("install 'stoker[postgres]'") instead of surfacing as a ModuleNotFoundError."""

from __future__ import annotations

#: top-level module -> the extra of stoker's pyproject.toml that installs it
EXTRAS = {
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "pyarrow": "parquet",
    "celery": "celery",
    "kombu": "celery",
    "rq": "rq",
}


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The one-line advice for a module an extra provides, or None when no extra provides it."""
    name = (error.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    return (f"this needs the Python package {name!r}, which stoker installs as an extra: "
            f"pip install 'stoker[{extra}]' (in the environment stoker runs from)")
