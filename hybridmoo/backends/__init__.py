"""Where evaluations run: ``local`` (inline or threads) now; Ray actors come as another backend."""

from __future__ import annotations

from hybridmoo.backends.base import Backend
from hybridmoo.backends.local import LocalBackend
from hybridmoo.errors import ConfigError

BACKENDS = ("local",)


def make_backend(name: str = "local", workers: int = 1) -> Backend:
    """The backend registered as ``name``."""
    if name == "local":
        return LocalBackend(workers)
    raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "LocalBackend", "make_backend"]
