"""Joining or starting the Ray cluster a :class:`~hybridmoo.backends.ray_backend.RayBackend` uses.

A private local cluster listens on 127.0.0.1 only, whatever was imported first. Ray reads
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is imported (the module constant
``ray._private.ray_constants.ENABLE_RAY_CLUSTER``): unless it was "0" then, ``ray.init`` turns
the loopback ``_node_ip_address`` (and a 127.0.0.1 cluster address) into the machine's outward
address, and the GCS, raylet, workers, agents and the driver itself listen on that address,
0.0.0.0 and ``::``. Setting the variable later does not help the driver. So importing this
module (``import hybridmoo`` does) sets it to "0" when ``ray`` is not imported yet, and
:func:`connect` refuses with a :class:`~hybridmoo.errors.ConfigError` to start a private
cluster, or to join one on 127.0.0.1, where Ray would not keep it on loopback. Only a cluster
the user names (``ray.address``, ``RAY_ADDRESS``) may use other addresses. The variable also
limits Ray to one node, which is what a loopback cluster is; joining a multi-node cluster by
its address is unaffected.

Ray itself is optional (``pip install "hybridmoo[ray]"``): :func:`require_ray` is the one check
that every Ray entry point (``backend: ray`` in a config, :class:`RayBackend`, :func:`connect`,
distributed supernet training) makes first; this module imports ``ray`` only inside functions.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from hybridmoo.errors import ConfigError, MissingExtraError, one_line

RAY_INSTALL = 'pip install "hybridmoo[ray]"'  # the extra with ray[default,train]
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a one-node cluster on 127.0.0.1 only
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CONNECT_TIMEOUT_S = 5.0  # a cluster address that does not answer within this is an error
LOOPBACK_HINT = (f"Import hybridmoo before ray, or export {LOOPBACK_ENV}=0 before Python "
                 "starts, or set ray.address (--ray-address) to join a cluster you started")
AUTH_HINT = ("set RAY_AUTH_MODE (and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) as the cluster "
             "was started with")


def require_ray(feature: str) -> None:
    """MissingExtraError ``{feature}: Ray is not installed: pip install "hybridmoo[ray]"``
    unless ``ray`` is importable: every entry point that needs Ray calls this before any work
    (a check that does not import ray, which takes seconds)."""
    if sys.modules.get("ray") is None and importlib.util.find_spec("ray") is None:
        raise MissingExtraError(f"{feature}: Ray is not installed: {RAY_INSTALL}")


@dataclass
class Connection:
    """How this process is attached to Ray; ``owned`` when we started the cluster ourselves."""

    owned: bool
    address: str


def connect(address: str | None, min_cpus: float) -> Connection:
    """Attach to Ray: reuse an initialised connection, or join ``address`` ("auto", "host:port",
    "ray://host:port") after checking within seconds that it answers. ``address=None`` joins
    the cluster in ``RAY_ADDRESS`` (set inside ``ray job submit`` jobs) or else starts a
    private local cluster on 127.0.0.1 with ``min_cpus`` logical CPUs at least."""
    require_ray("connecting to a Ray cluster")
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"
    target = _resolve(address)
    if target is not None:
        _probe(address or "", target)
    import ray

    if ray.is_initialized():
        return Connection(owned=False, address=str(ray.get_runtime_context().gcs_address))
    _check_loopback(address, target)
    try:
        if address is None:
            cpus = max(os.cpu_count() or 1, math.ceil(min_cpus))
            context = ray.init(address="local", num_cpus=cpus, include_dashboard=True,
                               dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
                               logging_level=logging.WARNING)
        else:
            context = ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise ConfigError(f"ray address {address!r}: {one_line(exc)}") from None
    except ray.exceptions.AuthenticationError as exc:
        raise ConfigError(f"ray address {address!r}: authentication failed ({one_line(exc)}); "
                          f"{AUTH_HINT}") from None
    if address is None and ray.util.get_node_ip_address() not in LOOPBACK_HOSTS:
        ip = ray.util.get_node_ip_address()
        ray.shutdown()  # _check_loopback should make this unreachable
        raise ConfigError(f"the private Ray cluster came up on {ip}, not 127.0.0.1, and was "
                          f"shut down. {LOOPBACK_HINT}")
    return Connection(owned=True, address=str(context.address_info.get("address", "")))


def check_resources(num_cpus: float, num_gpus: float) -> None:
    """One evaluator actor must fit the cluster, else it would wait for ever."""
    import ray

    total = ray.cluster_resources()
    for name, need in (("CPU", num_cpus), ("GPU", num_gpus)):
        have = float(total.get(name, 0.0))
        if need > have:
            raise ConfigError(f"ray.num_{name.lower()}s={need:g} per evaluator, but the Ray "
                              f"cluster has {have:g} {name}(s)")


def disconnect(connection: Connection | None) -> None:
    """Shut Ray down if (and only if) we started it."""
    if connection is not None and connection.owned:
        import ray

        ray.shutdown()


def _prefer_loopback() -> None:
    """Set LOOPBACK_ENV=0 unless it is set or too late (``ray`` already imported)."""
    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")


_prefer_loopback()  # at import: `import hybridmoo` comes before ray in the CLI and most scripts


def _check_loopback(address: str | None, target: str | None) -> None:
    """ConfigError unless Ray in this process keeps 127.0.0.1 as it is, for the private
    cluster (``target`` None) or a cluster joined on a loopback address. Before ``ray.init``,
    ``ray.util.get_node_ip_address()`` is the address Ray would put in place of 127.0.0.1."""
    if target is not None and _host(target) not in LOOPBACK_HOSTS:
        return  # the user's cluster, on the address the user gave
    import ray

    ip = ray.util.get_node_ip_address()
    if ip in LOOPBACK_HOSTS:
        return
    what = ("start a private Ray cluster on 127.0.0.1" if target is None else
            f"join the Ray cluster at {address!r} on 127.0.0.1")
    now = os.environ.get(LOOPBACK_ENV)
    raise ConfigError(f"cannot {what}: ray was imported while {LOOPBACK_ENV} was not 0 (now "
                      f"{'unset' if now is None else repr(now)}), so Ray would listen on {ip}, "
                      f"0.0.0.0 and :: instead. {LOOPBACK_HINT}")


def _resolve(address: str | None) -> str | None:
    """``address`` as host:port where we can tell without importing ray (None: start local)."""
    if address is None:
        return None
    if address == "auto":
        return os.environ.get("RAY_ADDRESS") or "auto"
    return address


def _host(address: str) -> str:
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest


def _probe(given: str, target: str) -> None:
    """A TCP connect to the cluster's GCS (or Ray Client) port, bounded by CONNECT_TIMEOUT_S:
    ``ray.init`` itself waits a minute or more for an address that does not answer."""
    if target == "auto":
        target = _current_cluster(given)
    scheme, _, rest = target.rpartition("://")
    if scheme in ("http", "https"):
        raise ConfigError(f"ray address {given!r} is a dashboard (job submission) URL; give the "
                          "cluster's GCS address host:port (port 6379 by default) or 'auto'")
    if ":" not in rest:
        raise ConfigError(f"ray address {given!r} must look like host:port, 'auto' or "
                          "ray://host:port")
    host, port = rest.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no Ray cluster answers at ray address {given!r} ({target}: "
                          f"{one_line(exc) or type(exc).__name__}); start one with `ray start "
                          "--head --node-ip-address=127.0.0.1`, or leave the address empty "
                          "for a private local cluster") from None


def _current_cluster(given: str) -> str:
    """The address "auto" stands for: the cluster this machine started last."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found: Any = canonicalize_bootstrap_address("auto")
    except ConnectionError as exc:
        raise ConfigError(f"ray address {given!r}: {one_line(exc)}") from None
    if not found:
        raise ConfigError(f"ray address {given!r}: no running Ray cluster found on this machine")
    return str(found)


def check_address(address: str | None) -> None:
    """ConfigError now, before a run writes anything, when ``address`` (or ``RAY_ADDRESS``
    for ``None``) names a cluster that does not answer, or when :func:`connect` would refuse
    to start (or join) a cluster on 127.0.0.1; MissingExtraError without Ray."""
    require_ray("backend: ray")
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"
    target = _resolve(address)
    if target is not None:
        _probe(address or "", target)
    import ray

    if not ray.is_initialized():
        _check_loopback(address, target)
