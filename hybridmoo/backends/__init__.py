"""Where evaluations run: ``local`` (inline or threads) or ``ray`` (actors on a Ray cluster)."""

from __future__ import annotations

from hybridmoo.backends.base import Backend
from hybridmoo.backends.local import LocalBackend
from hybridmoo.backends.ray_backend import OPTIONS as RAY_OPTIONS
from hybridmoo.backends.ray_backend import RayBackend
from hybridmoo.loading import check_options, unknown_name

BACKENDS = ("local", "ray")


def make_backend(name: str = "local", workers: int = 1, **options: object) -> Backend:
    """The backend registered as ``name``; ``options`` go to its constructor (``ray``:
    address, num_cpus, num_gpus, timeout_s, max_retries; ``local`` takes none)."""
    if name == "local":
        check_options("the local backend", options, ())
        return LocalBackend(workers)
    if name == "ray":
        check_options("the ray backend", options, RAY_OPTIONS)
        return RayBackend(workers, **options)  # type: ignore[arg-type]
    raise unknown_name("backend", name, BACKENDS)


def backend_for(name: str, workers: int, ray_options: dict[str, object]) -> str | Backend:
    """What a config's ``backend`` / ``workers`` / ``ray`` keys make: the name for ``local``
    (``search`` builds it), a RayBackend with the ``ray`` options for ``ray``."""
    return name if name != "ray" else make_backend("ray", workers, **ray_options)


__all__ = ["BACKENDS", "RAY_OPTIONS", "Backend", "LocalBackend", "RayBackend", "backend_for",
           "make_backend"]
