"""Connecting to Ray, for the vector environment's actors and the PBT baseline alike."""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import Optional

log = logging.getLogger(__name__)


def start_ray(address: Optional[str], num_cpus: Optional[float] = None) -> bool:
    """Connect to Ray: reuse this process's Ray, join ``address``, or start a local instance.

    :param address: ``None`` (``RAY_ADDRESS`` if set, else a local instance), ``"auto"``,
        ``"host:port"`` or ``"ray://host:port"``
    :param num_cpus: logical CPUs of a local instance (ignored when joining a cluster)
    :returns: whether this call started or connected Ray (so the caller shuts it down later)
    :raises ConnectionError: when the cluster at ``address`` cannot be reached
    """
    import ray  # here: Ray is the optional extra "ray"

    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # what ray.init would join anyway
    if ray.is_initialized():
        if address not in (None, "local"):
            log.warning("vec_env=ray: Ray is already initialised in this process; using it, not address=%r", address)
        return False
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    if address in (None, "local"):
        cpus = None if num_cpus is None else max(1, math.ceil(num_cpus))
        # "local", not None: ray.init(address=None) would join a cluster that `ray start` left
        # on this machine (and then refuse num_cpus)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as e:
            raise ConnectionError(
                f"vec_env.address={address!r}: cannot connect to a Ray cluster ({e}). Start one with "
                "`ray start --head` (then use its address, or 'auto' on the head node), or leave "
                "vec_env.address unset to start a local Ray instance. A cluster with token "
                "authentication needs RAY_AUTH_MODE=token (and its token) in this process"
            ) from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``host:port``: ray.init would retry for minutes."""
    if address == "auto":
        return  # ray.init finds the local cluster itself, and says so quickly when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(
            f"vec_env.address={address!r}: nothing answers there ({e}). Start a cluster with "
            "`ray start --head` and give the address it prints, or leave vec_env.address unset "
            "to start a local Ray instance"
        ) from None
