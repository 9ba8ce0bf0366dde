"""Ray for ``realtime archive``: a local cluster on 127.0.0.1 (the default), or one joined
at ``--address``; and its stop.

Ray is imported here only, inside :func:`connect`: the runtime install (no Ray) never
loads it. What a local cluster costs is Ray's start (``ray.init``: the GCS, the raylet
and its agents, the dashboard head in its minimal form) and stop; it is kept small:

- no dashboard, a 100 MiB object store (frames never travel through it);
- its workers run at the driver's priority (Ray's default niceness of 15 would put the
  user's own foreground work behind every other process on the machine);
- the stop ends the autoscaler monitor first, while the GCS it reports to is up (ended
  after it, the monitor waits a second for the lost GCS before Ray kills it), and
  returns once every process of the cluster has exited.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import signal
import sys

from realtime.archive.settings import ArchiveSettings
from realtime.errors import RealtimeError
from realtime.tables import INSTALL_HINT

log = logging.getLogger(__name__)

#: the local cluster's object store (Ray's minimum is 75 MiB): only small events use it
LOCAL_OBJECT_STORE_BYTES = 100 * 2**20


def require_cluster() -> None:
    """One line naming the extra when Ray or pyarrow is missing (the runtime install)."""
    missing = [name for name, module in (("Ray", "ray"), ("pyarrow", "pyarrow")) if importlib.util.find_spec(module) is None]
    if missing:
        raise RealtimeError(f"realtime archive needs {' and '.join(missing)}: {INSTALL_HINT}")


def loopback_address(address: str) -> bool:
    """A cluster on this machine's loopback (``127.0.0.1:PORT``, ``localhost:PORT``)."""
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _pin_loopback() -> None:
    # Ray resolves 127.0.0.1 to this machine's outside address on Linux unless this is
    # off; with it off the node (raylet, object store, workers) binds loopback only.
    # Ray reads it once, at import: a program that imported Ray before cannot be pinned.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if getattr(constants, "ENABLE_RAY_CLUSTER", False):
        raise RealtimeError("Ray was imported before realtime archive could keep its local cluster on 127.0.0.1: "
                            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray, or pass --address")


def local_cpus(settings: ArchiveSettings, slots_wanted: int | None) -> float:
    """CPUs a local cluster offers: the slots asked for, else what this machine has."""
    return (slots_wanted or max(1, int((os.cpu_count() or 1) // settings.cpus_per_worker))) * settings.cpus_per_worker


def connect(settings: ArchiveSettings, slots_wanted: int | None):
    """Ray, started locally (see the module) or joined at ``settings.address``.
    Returns (ray, ours): ``ours`` when this call connected it (then :func:`stop` it)."""
    # Ray's usage statistics are sent to its makers unless this is off: off, unless the user says otherwise
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if settings.address is None or loopback_address(settings.address):
        _pin_loopback()
    if settings.address is None:
        # Ray's default for a new local cluster, said explicitly: token authentication on,
        # without its line on stderr at every run
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise RealtimeError(f"realtime archive needs Ray: {INSTALL_HINT}") from None
    if ray.is_initialized():
        return ray, False
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it: Ctrl-C and SIGTERM stay ours
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    try:
        if settings.address is None:
            ray.init(num_cpus=local_cpus(settings, slots_wanted), include_dashboard=False, _node_ip_address="127.0.0.1",
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, _system_config={"worker_niceness": 0}, **quiet)
        else:
            ray.init(address=settings.address, **quiet)
    except Exception as e:  # Ray raises plain Exception too (a raylet that did not start in 30 s on a loaded machine)
        with contextlib.suppress(Exception):
            ray.shutdown()  # what did start goes; Ray's reaper ends the rest with this process
        what = "start Ray" if settings.address is None else f"join Ray at {settings.address}"
        raise RealtimeError(f"cannot {what}: {_reason(e)}") from None
    finally:
        if signal.getsignal(signal.SIGTERM) is not sigterm and sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, sigterm)
    if settings.address is None and not all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes()):
        stop(ray)
        raise RealtimeError("Ray's local cluster did not stay on 127.0.0.1: stopped")
    return ray, True


def _reason(error: Exception) -> str:
    """Ray's error in one line: its first, without the heading of the log lines that
    follow it (``Failed to start GCS.  Last 1 lines of error files:``), with the log
    file it names for the details."""
    text = str(error).strip()
    first = re.sub(r"\s*Last \d+ lines of error files:$", "", text.splitlines()[0]) if text else type(error).__name__
    details = re.search(r"Please check (\S+) for details", text)
    return f"{first} (details: {details.group(1)})" if details else first


def stop(ray) -> None:
    """Disconnect; a local cluster started by :func:`connect` is stopped, every process
    of it ended before this returns."""
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    if node is not None and node.is_head():
        # Ray ends the monitor after the GCS, and the monitor then waits ~1 s to report
        # the lost GCS: ended first, it goes at once (Ray's internals: a Ray without
        # this method stops as before, only slower)
        with contextlib.suppress(Exception):
            node.kill_monitor(check_alive=False)
    try:
        ray.shutdown(wait_for_processes=True)
    except TypeError:  # a Ray before wait_for_processes
        ray.shutdown()
