"""Starting or joining Ray, and finding the shared actors.

Embedded by default: a local, loopback-only, quiet Ray instance owned by this process. With an
address (``MISE_RAY_ADDRESS``) every API process joins one cluster and shares one call directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from typing import Any, cast

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.asr import ASR_NAME, AsrWorker
from actors.directory import AFFINITY_CPUS, DIRECTORY_NAME, CallDirectory
from actors.hub import HUB_NAME, EventHub

# Loopback only, no usage reporting, no token file under ~/.ray (ENVIRONMENT.md).
_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def connect(address: str | None, *, namespace: str, num_cpus: int | None = None, temp_dir: str | None = None) -> None:
    """Join the cluster at ``address``, or start an embedded one. Idempotent."""
    if ray.is_initialized():
        return
    # ray.init installs its own SIGTERM/SIGINT handlers (sys.exit) over the server's; keep the server's,
    # so a stop is graceful: sockets close and every live call is finalized.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _init(address, namespace=namespace, num_cpus=num_cpus, temp_dir=temp_dir)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def private_cluster(namespace: str, *, num_cpus: int = 2) -> Iterator[str]:
    """A local Ray instance of this process's own (tests, benchmarks): its GCS address, then shut down and
    its temp dir removed."""
    temp = tempfile.mkdtemp(prefix="mray")  # short: Ray's socket paths must fit 107 bytes
    connect(None, namespace=namespace, num_cpus=num_cpus, temp_dir=temp)
    try:
        yield gcs_address()
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _init(address: str | None, *, namespace: str, num_cpus: int | None, temp_dir: str | None) -> None:
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    common = {"namespace": namespace, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)  # type: ignore[arg-type]
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _temp_dir=temp_dir,  # short paths: Ray's socket paths must fit 107 bytes
            object_store_memory=256 << 20,
            **common,  # type: ignore[arg-type]
        )


def _shared(
    cls: type,
    name: str,
    ray_namespace: str,
    *,
    restart: bool = False,
    retry_tasks: bool = True,
    concurrency: int = 1000,
    **kwargs: Any,
) -> ActorHandle[Any]:
    """The one actor called ``name`` in ``namespace``, created by the first process that asks. Detached:
    it outlives the API process that created it (a restart keeps calls, cursors and loaded weights).
    ``restart``: if its process dies, Ray starts it again under the same handle (its calls retried), so
    whoever holds the handle goes on; for actors whose state can start over (the hub, the ASR workers).
    It runs on the node of the process that creates it, if that node lives (soft affinity): in a cluster
    the shared actors stay beside the first API process rather than on a node that may come and go with
    call hosts (a restarted one goes wherever Ray can place it)."""
    options: dict[str, Any] = {
        "name": name,
        "namespace": ray_namespace,
        "get_if_exists": True,
        "lifetime": "detached",
        "scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True),
    }
    if restart:
        options |= {"max_restarts": -1, "max_task_retries": -1 if retry_tasks else 0}
    return cast(
        ActorHandle[Any],
        ray.remote(cls).options(**options, num_cpus=AFFINITY_CPUS, max_concurrency=concurrency).remote(**kwargs),
    )


def directory(
    *, namespace: str, calls_per_host: int, spare_hosts: int, host_options: dict[str, Any] | None = None
) -> ActorHandle[Any]:
    """The cluster's call directory; ``host_options`` are the keyword arguments of every ``CallHost`` it
    starts (the first process's options win)."""
    return _shared(
        CallDirectory,
        DIRECTORY_NAME,
        namespace,
        calls_per_host=calls_per_host,
        spare_hosts=spare_hosts,
        host_options=host_options or {},
        namespace=namespace,
    )


def hub(*, namespace: str) -> ActorHandle[Any]:
    """The cluster's event hub (SSE cursors stay valid across API process restarts)."""
    return _shared(EventHub, HUB_NAME, namespace, restart=True)


def asr_workers(
    *, namespace: str, count: int, url: str | None = None, model: str | None = None, api_key: str | None = None
) -> list[ActorHandle[Any]]:
    """The cluster's ASR workers (``actors/asr.py``), one batch at a time each; restarted if their process
    dies (the batch in hand is not retried: its turns are skipped, counted)."""
    workers = []
    for i in range(count):
        name, options = f"{ASR_NAME}-{i}", {"url": url, "model": model, "api_key": api_key}
        workers.append(_shared(AsrWorker, name, namespace, restart=True, retry_tasks=False, concurrency=1, **options))
    return workers


def node_id() -> str:
    """The Ray node this process runs on."""
    return str(ray.get_runtime_context().get_node_id())


def gcs_address() -> str:
    return str(ray.get_runtime_context().gcs_address)
