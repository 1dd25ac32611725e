"""Where a running Mise spends its CPU, for bench/ingest.py: per process role and per analysis stage.

Processes are read from /proc and given a role by their command line (the API process, call hosts,
the event hub, Ray's own processes, and the emotion scorer of commits before the hosts scored their own
turns). A window's CPU is the sum of per-process deltas, so a host that starts or is reclaimed inside the
window never makes a figure negative: a new process counts from zero, a vanished one with what it had used
when last seen.

The hosts and the API process also time their own stages (``engine.costs``): the hosts report them in
``CallHost.stats()["stages"]``, the API process as ``mise_stage_cpu_seconds_total{stage}`` on /metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
ROLES = (  # (role, what its command line contains); the first match wins
    ("loadgen", "bench/loadgen.py"),
    ("bench", "bench/ingest.py"),
    ("api", "api.cli serve"),
    ("hosts", "ray::CallHost"),
    ("scorer", "ray::EmotionScorer"),  # older commits: the emotion model in a process of its own
    ("hub", "ray::EventHub"),
    ("ray", "ray"),  # the directory, raylet, GCS, agents, idle workers
)
HOST_STAGES = ("decode_ring", "vad_turns", "pitch", "voice_quality", "turn_features")
API_STAGES = ("events", "storage", "index")
# The breakdown printed per level: (column, what it sums), CPU-ms per call-second.
COLUMNS = (
    ("websocket", "API process minus its events, storage and index stages: sockets, parsing, the pump"),
    ("decode", "hosts: G.711 decode and ring buffer writes"),
    ("vad+turns", "hosts: VAD, turn tracking, interruptions, silences"),
    ("pitch", "hosts: pitch candidates (streamed while a turn is open) and the path"),
    ("voice", "hosts: jitter, shimmer, HNR"),
    ("features", "hosts: level, speaking rate, pitch statistics"),
    ("host rest", "hosts' other CPU: Ray calls, serialisation, publishing events"),
    ("emotion", "hosts: the emotion model (older commits: the emotion scorer process)"),
    ("events+store", "API events, call store, index spool and index writes; the event hub process"),
    ("ray", "Ray's own processes: directory, raylet, GCS, agents"),
    ("total", "everything above"),
)


def stat_cpu_s(stat: str) -> float:
    """User + system CPU seconds from the text of /proc/<pid>/stat."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far; 0.0 if it is gone."""
    try:
        return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError):
        return 0.0


def role_of(cmdline: str) -> str | None:
    for role, needle in ROLES:
        if needle in cmdline:
            return role
    return None


@dataclass
class Snapshot:
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, CPU s so far)

    @staticmethod
    def take() -> Snapshot:
        snap = Snapshot()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                used = stat_cpu_s((entry / "stat").read_text())
            except (OSError, IndexError):
                continue  # gone meanwhile
            role = role_of(cmdline)
            if role is not None:
                snap.cpu[int(entry.name)] = (role, used)
        return snap


def role_cpu(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per role between two snapshots (per-process deltas; never negative)."""
    out: dict[str, float] = {}
    for pid, (role, seconds) in after.cpu.items():
        prior = before.cpu.get(pid)
        used = seconds - (prior[1] if prior is not None and prior[0] == role else 0.0)
        out[role] = out.get(role, 0.0) + max(0.0, used)
    return out


def stage_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: max(0.0, after.get(name, 0.0) - before.get(name, 0.0)) for name in after}


def breakdown(
    roles: dict[str, float], host_stages: dict[str, float] | None, api_stages: dict[str, float] | None, per: float
) -> dict[str, float | None]:
    """The ``COLUMNS`` in CPU-ms per call-second (``per``: 1000 / (window s x calls)); stage columns are None
    when the server does not time its stages (an older commit)."""
    hosts = roles.get("hosts", 0.0)
    api = roles.get("api", 0.0)
    out: dict[str, float | None] = dict.fromkeys(c for c, _ in COLUMNS)
    api_own = sum((api_stages or {}).get(s, 0.0) for s in API_STAGES)
    out["websocket"] = (api - api_own) * per if api_stages is not None else None
    if host_stages is not None:
        names = dict(zip(("decode", "vad+turns", "pitch", "voice", "features"), HOST_STAGES, strict=True))
        for column, stage in names.items():
            out[column] = host_stages.get(stage, 0.0) * per
        timed = sum(host_stages.get(s, 0.0) for s in (*HOST_STAGES, "emotion"))
        out["host rest"] = max(0.0, hosts - timed) * per
    out["emotion"] = (roles.get("scorer", 0.0) + (host_stages or {}).get("emotion", 0.0)) * per
    out["events+store"] = (roles.get("hub", 0.0) + api_own) * per if api_stages is not None else None
    out["ray"] = roles.get("ray", 0.0) * per
    out["total"] = (api + hosts + roles.get("scorer", 0.0) + roles.get("hub", 0.0) + roles.get("ray", 0.0)) * per
    return out


def format_breakdown(figures: dict[str, float | None]) -> str:
    cells = []
    for column, _ in COLUMNS:
        value = figures.get(column)
        cells.append(f"{column} {'-' if value is None else f'{value:.2f}'}")
    return "CPU-ms per call-second: " + " | ".join(cells)


def legend() -> str:
    return "\n".join(f"  {column:<13} {meaning}" for column, meaning in COLUMNS)
