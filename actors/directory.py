"""CallDirectory: the one named actor that places calls on hosts and finds them by call SID.

Any API process (the WebSocket may land on one, the webhook or a reader on another) asks it where a
call lives. It places calls on ``CallHost`` actors, at most ``calls_per_host`` each, keeps
``spare_hosts`` empty hosts warm so a new call never waits for a Ray process to start, and kills hosts
left empty beyond that (with 1 call per host: a call's process ends with the call).

A host whose process dies is noticed within a second (the load reading fails) and gets no new call;
the API processes holding its calls' sockets re-open them on other hosts (``api/ingest.py``).

Placement by load: a host is one process, so its calls' analysis shares one core. Every second the
directory reads each host's CPU use (``CallHost.cpu_s``). A new call goes to the least loaded host
in service; once every host in service is busier than ``busy_share`` of a core, and fewer hosts are
in service than the cluster has CPUs, it opens another (a spare): the analysis then runs on every
core. Below that, calls share one host: each host costs a push per tick, so a lightly loaded machine is
cheapest on few hosts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import ray
from ray import ObjectRef
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.host import FINISH_CONCURRENCY, CallHost

log = logging.getLogger("mise.directory")

DIRECTORY_NAME = "mise-directory"
# A host (and a shared actor, actors/runtime.py) asks for this sliver of a CPU: Ray places a zero-resource actor
# anywhere, soft node affinity notwithstanding (measured on a two-node cluster: 3 of 6 landed on the other node;
# with 0.001 CPU, 6 of 6 on the node asked for). Hosts with 0 CPUs once all landed on one node of two.
AFFINITY_CPUS = 0.001
BUSY_SHARE = 0.5  # a host using more than this share of a core is busy: the next call opens another host
LOAD_EVERY_S = 1.0


@dataclass
class _Host:
    name: str
    handle: ActorHandle[Any]
    started: ObjectRef[int]  # resolves once the host's process is up
    calls: set[str] = field(default_factory=set)
    load: float = 0.0  # share of one core its process used over the last second
    cpu_at: tuple[float, float] | None = None  # (monotonic time, its process's CPU s then)
    node: str | None = None  # the node it was placed on (several nodes only)


class CallDirectory:
    def __init__(
        self,
        *,
        calls_per_host: int,
        spare_hosts: int,
        namespace: str,
        host_options: dict[str, Any] | None = None,
        busy_share: float = BUSY_SHARE,
        cores: int | None = None,
    ) -> None:
        if calls_per_host < 1:
            raise ValueError("calls_per_host must be >= 1")
        self._per_host = calls_per_host
        self._spare = spare_hosts
        self._host_options = host_options or {}
        self._namespace = namespace
        self._hosts: dict[str, _Host] = {}
        self._where: dict[str, _Host] = {}
        self._tenant: dict[str, str] = {}
        self._ids = itertools.count()
        self._warming: set[asyncio.Task[None]] = set()
        self._busy = busy_share
        self._cores = cores or max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
        self._watch: asyncio.Task[None] | None = None

    async def ready(self) -> int:
        """Wait until the spare hosts are up; returns how many hosts exist."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._measure_load())
        await self._top_up()
        return len(self._hosts)

    async def assign(self, call_sid: str, tenant: str) -> tuple[str, ActorHandle[Any]] | None:
        """Place a new live call on a host; None if that call SID is live already."""
        if call_sid in self._where:
            return None
        for _ in range(3):
            # Choose and reserve before any await: concurrent assigns must never share a slot.
            host = self._pick() or self._new_host()
            host.calls.add(call_sid)
            self._where[call_sid] = host
            self._tenant[call_sid] = tenant
            self._warm_in_background()
            try:
                await host.started
                return host.name, host.handle
            except Exception:
                log.exception("call host %s did not start; placing call %s elsewhere", host.name, call_sid)
                self._drop(host)
        raise RuntimeError(f"no call host could be started for {call_sid}")

    async def lookup(self, call_sid: str) -> tuple[str, str, ActorHandle[Any]] | None:
        """(tenant, host name, host handle) of a live call, or None."""
        host = self._where.get(call_sid)
        return None if host is None else (self._tenant[call_sid], host.name, host.handle)

    async def release(self, call_sid: str, *, host_failed: bool = False) -> None:
        """Forget a call. ``host_failed``: its host stopped answering, so no call goes there again."""
        host = self._where.pop(call_sid, None)
        self._tenant.pop(call_sid, None)
        if host is None:
            return
        if host_failed:
            self._drop(host)
            return
        host.calls.discard(call_sid)
        empty = [h for h in self._hosts.values() if not h.calls]
        if not host.calls and len(empty) > self._spare:
            del self._hosts[host.name]
            ray.kill(host.handle)

    async def hosts(self) -> list[dict[str, Any]]:
        return [
            {"name": h.name, "handle": h.handle, "calls": len(h.calls), "call_sids": sorted(h.calls)}
            for h in self._hosts.values()
        ]

    async def live_calls(self) -> int:
        return len(self._where)

    def _drop(self, host: _Host) -> None:
        """Take a broken host out of service (the API processes holding its calls' sockets move them)."""
        if self._hosts.pop(host.name, None) is None:
            return
        for call_sid in host.calls:
            if self._where.get(call_sid) is host:
                del self._where[call_sid]
                self._tenant.pop(call_sid, None)
        try:
            ray.kill(host.handle)
        except Exception:
            log.warning("could not kill call host %s", host.name)

    def _pick(self) -> _Host | None:
        """The least loaded host in service with room; an empty one (a spare) when every host in service
        is busy and there are cores to spare, or when none has room; None if a new host is needed."""
        serving = [h for h in self._hosts.values() if h.calls]
        room = [h for h in serving if len(h.calls) < self._per_host]
        all_busy = all(h.load >= self._busy for h in serving)
        if room and not (all_busy and len(serving) < self._cores):
            return min(room, key=lambda h: (h.load, len(h.calls)))
        return next((h for h in self._hosts.values() if not h.calls), None)

    async def _measure_load(self) -> None:
        """Each host's CPU use over the last second (share of one core), for ``_pick``."""
        while True:
            await asyncio.sleep(LOAD_EVERY_S)
            hosts = list(self._hosts.values())
            replies = await asyncio.gather(*(h.handle.cpu_s.remote() for h in hosts), return_exceptions=True)
            now = time.monotonic()
            for host, cpu in zip(hosts, replies, strict=True):
                if isinstance(cpu, BaseException):  # its process died: no new call goes there from now on
                    log.error("call host %s is gone (%s); taking it out of service", host.name, type(cpu).__name__)
                    self._drop(host)
                    continue
                if host.cpu_at is not None and now > host.cpu_at[0]:
                    host.load = max(0.0, (cpu - host.cpu_at[1]) / (now - host.cpu_at[0]))
                host.cpu_at = (now, cpu)

    def _next_node(self) -> str | None:
        """With several alive nodes, the one holding the fewest of our hosts: hosts spread over the cluster
        by count, not by Ray's best-effort SPREAD, which under load was seen to put every host on one node."""
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        alive = sorted(str(n["NodeID"]) for n in nodes if n.get("Alive"))
        if len(alive) < 2:
            return None
        held = {node: 0 for node in alive}
        for host in self._hosts.values():
            if host.node in held:
                held[host.node] += 1
        return str(min(alive, key=lambda node: held[node]))

    def _new_host(self) -> _Host:
        name = f"mise-host-{next(self._ids)}"
        node = self._next_node()
        # Soft: a node that cannot take it (it is going away) leaves the choice to Ray.
        strategy: Any = NodeAffinitySchedulingStrategy(node, soft=True) if node is not None else "SPREAD"
        handle: ActorHandle[Any] = cast(
            ActorHandle[Any],
            ray.remote(concurrency_groups={"finish": FINISH_CONCURRENCY})(CallHost)  # type: ignore[call-overload]
            .options(
                name=name,
                namespace=self._namespace,
                num_cpus=AFFINITY_CPUS,  # so that the node affinity above holds
                lifetime="detached",
                scheduling_strategy=strategy,
                max_concurrency=1,  # pushes, one at a time, in order; ``finish`` has a group of its own
            )
            .remote(**self._host_options),
        )
        host = _Host(name, handle, handle.ready.remote(), node=node)
        self._hosts[name] = host
        return host

    async def _top_up(self) -> None:
        while sum(1 for h in self._hosts.values() if not h.calls) < self._spare:
            host = self._new_host()
            try:
                await host.started
            except Exception:
                log.exception("spare call host %s did not start", host.name)
                self._drop(host)
                return

    def _warm_in_background(self) -> None:
        if self._warming:
            return
        task = asyncio.get_running_loop().create_task(self._top_up())
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for host in self._hosts.values():
            ray.kill(host.handle)
        self._hosts.clear()
        self._where.clear()
