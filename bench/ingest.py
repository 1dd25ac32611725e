"""Ingest capacity, call setup, memory and CPU per call, for MISE_CALLS_PER_ACTOR=1 and the default.

    .venv/bin/python bench/ingest.py            # ~6-8 minutes on 2 cores
    .venv/bin/python bench/ingest.py --quick    # smaller levels, ~2 minutes

For each density it starts a real `mise serve` (uvicorn) joined to a Ray instance owned by this script,
and a load generator in another process (bench/loadgen.py) speaking Twilio Media Streams in real time
(2 tracks x 50 frames/s per call). For each level of concurrent calls:
- calls ramp in, then all stay live for a steady window;
- lost = frames the generator sent - frames the call actors applied (from the final call records);
- actor lag = arrival of a frame at the API process -> applied in its call actor (p95 over the window,
  the worst host's);
- CPU per call = (machine busy CPU - load generator CPU) / calls over the window, and the same for the
  server and host processes only; memory per call = RSS growth of server + host processes / calls.
- turns = turns measured in the window, unmeasured = turns sent without features because the host's
  measuring thread fell behind, turn ev = turn.ended from decision to published (p95, worst host).
The calls play the bundled two-party demo call (api/demo/), each joining it at its own point.
A level passes with 0 lost, actor lag p95 <= 100 ms, every turn measured, and a generator that kept
real time (its p95 lag <= 20 ms; otherwise the load was not what it claims).
Call setup is measured separately at 2 new calls/s.
The generator shares the 2 cores with the server: figures are for that condition.

Where the CPU goes (bench/cpu.py): per level, CPU-ms per call-second by stage (WebSocket handling,
decode and rings, VAD and turns, pitch, voice quality, other turn features, the hosts' Ray and event
work, emotion scoring, events and storage, Ray itself) and the total; then the same levels again on an
ingest-only server (MISE_ANALYSIS=0: audio received and stored, nothing analysed), so that the cost of
the analysis stands as a ratio to the cost of ingest on any machine.

    .venv/bin/python bench/ingest.py --only default --levels-default 50 --compare c377b97

``--compare REF`` runs the same bench on a git worktree of REF first, then on this checkout, in one
session on one machine, and prints both totals and their ratio (machines of one kind differ by 2x:
only figures from one run compare). A commit older than the stage timing prints "-" for the stages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# ``--repo PATH``: bench another checkout (its server, hosts and helpers) with this file's measuring code.
REPO = Path(sys.argv[sys.argv.index("--repo") + 1]).resolve() if "--repo" in sys.argv else BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import cpu  # noqa: E402  (bench/cpu.py)
import ray  # noqa: E402

from actors import runtime  # noqa: E402
from api.settings import DEFAULT_CALLS_PER_ACTOR  # noqa: E402
from tests.support import API_KEY, Server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SPEECH = REPO / "api" / "demo"  # the bundled two-party call; each bench call joins it at its own point
MARGIN_S = 12.0  # calls outlive the measuring window by this much


def proc_rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def machine_busy_s() -> float:
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICKS


def host_stats(srv: Server, reset: bool = False) -> list[dict[str, Any]]:
    """Every live host's stats; a host reclaimed while it is asked (ActorDiedError) is left out."""
    try:
        hosts = ray.get(srv.directory().hosts.remote(), timeout=30)
    except Exception as exc:
        print(f"  (could not list the call hosts: {type(exc).__name__})", flush=True)
        return []
    refs = [h["handle"].stats.remote(reset_latency=reset) for h in hosts]
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=30))
        except Exception:  # reclaimed meanwhile: its figures went with it
            continue
    return out


def host_stages(stats: list[dict[str, Any]]) -> dict[int, dict[str, float]] | None:
    """Per host pid, its CPU s per stage; None if the hosts do not time stages (an older commit)."""
    if any("stages" not in s for s in stats):
        return None
    return {s["pid"]: s["stages"] for s in stats}


def stages_between(
    before: dict[int, dict[str, float]] | None, after: dict[int, dict[str, float]] | None
) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    total: dict[str, float] = {}
    for pid, stages in after.items():  # a host started in the window counts from zero
        for name, seconds in cpu.stage_delta(before.get(pid, {}), stages).items():
            total[name] = total.get(name, 0.0) + seconds
    return total


def api_stages(srv: Server) -> dict[str, float] | None:
    """The API process's CPU s per stage from /metrics; None if it does not report them."""
    metrics = srv.metrics()
    found = {
        k.split('stage="')[1].rstrip('"}'): v for k, v in metrics.items() if k.startswith("mise_stage_cpu_seconds")
    }
    return found or None


def histogram_quantile(q: float, before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    """Prometheus histogram_quantile over the delta of two scrapes (linear inside a bucket)."""
    buckets = []
    for key, value in after.items():
        if key.startswith(name + "_bucket{"):
            le = key.split('le="')[1].rstrip('"}')
            buckets.append((float("inf") if le == "+Inf" else float(le), value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return prev_le


def loadgen(srv: Server, calls: int, *, seconds: float, interval: float, end_together: bool = False) -> Any:
    """Start bench/loadgen.py against ``srv``; its last stdout line is its JSON result."""
    args = ["--url", srv.ws, "--key", API_KEY, "--calls", str(calls), "--seconds", str(seconds)]
    args += ["--interval", str(interval), "--speech", str(SPEECH)] + (["--end-together"] if end_together else [])
    return subprocess.Popen([sys.executable, str(BENCH / "loadgen.py"), *args], stdout=subprocess.PIPE, text=True)


@dataclass
class Level:
    calls: int
    lost: int
    errors: int
    lag_p95_ms: float | None
    lag_ramp_p95_ms: float | None
    gen_lag_p95_ms: float
    cpu_per_call_pct: float
    server_cpu_per_call_pct: float
    gen_cpu_pct: float
    mem_per_call_mb: float
    overloaded: bool  # the server could not even hold every call live through the window
    turns: int  # turns measured in the window (all hosts)
    unmeasured: int  # turns sent without features in the window: analysis did not keep up
    turn_event_p95_ms: float | None  # turn.ended, decision -> published, worst host
    cost: dict[str, float | None]  # bench/cpu.py's breakdown, CPU-ms per call-second
    hosts: int  # hosts holding calls in the window

    @property
    def passed(self) -> bool:
        lag_ok = self.lag_p95_ms is not None and self.lag_p95_ms <= 100
        ingest_ok = self.lost == 0 and self.errors == 0 and lag_ok and self.gen_lag_p95_ms <= 20
        return ingest_ok and not self.overloaded and self.unmeasured == 0


def run_level(srv: Server, calls: int, *, ramp_rate: float, steady_s: float) -> Level:
    ramp_s = calls / ramp_rate
    baseline_pids = [srv.process.pid, *(st["pid"] for st in host_stats(srv))]
    rss_before = sum(proc_rss(p) for p in baseline_pids)
    host_stats(srv, reset=True)
    gen = loadgen(srv, calls, seconds=steady_s + MARGIN_S, interval=1 / ramp_rate, end_together=True)
    started = time.monotonic()
    time.sleep(0.5 + ramp_s + 1.0)  # every call started and placed
    ramp = host_stats(srv, reset=True)
    pids = [srv.process.pid, *(s["pid"] for s in ramp)]
    cpu0 = {p: cpu.proc_cpu_s(p) for p in pids}
    stages0, api0, snap0 = host_stages(ramp), api_stages(srv), cpu.Snapshot.take()
    busy0, gen0, t0 = machine_busy_s(), cpu.proc_cpu_s(gen.pid), time.monotonic()
    time.sleep(steady_s / 2)
    rss_mid = sum(proc_rss(p) for p in pids)
    time.sleep(steady_s / 2)
    window = time.monotonic() - t0
    busy = machine_busy_s() - busy0
    gen_cpu = cpu.proc_cpu_s(gen.pid) - gen0
    server_cpu = sum(max(0.0, cpu.proc_cpu_s(p) - c) for p, c in cpu0.items())  # a reclaimed host reads 0
    roles = cpu.role_cpu(snap0, cpu.Snapshot.take())
    steady = host_stats(srv)
    api1 = api_stages(srv)
    cost = cpu.breakdown(
        roles,
        stages_between(stages0, host_stages(steady)),
        None if api0 is None or api1 is None else cpu.stage_delta(api0, api1),
        1000.0 / (window * calls),
    )
    calls_end = started + 0.5 + ramp_s + steady_s + MARGIN_S
    placed = sum(s["calls"] for s in steady)
    overloaded = time.monotonic() > calls_end - 1 or placed != calls
    out, _ = gen.communicate(timeout=600)
    result = json.loads(out.strip().splitlines()[-1])
    sent = {c["call_sid"]: c["sent"] for c in result["calls"]}
    lost = 0
    for call_sid, n in sent.items():
        record = srv.wait_call(call_sid, timeout=60)
        got = sum(t["frames"] for t in record["tracks"].values())
        lost += n - got
    srv.wait_no_live_calls()

    def worst(stats: list[dict[str, Any]], key: str = "latency_p95_ms") -> float | None:
        values = [s[key] for s in stats if s[key] is not None]
        return max(values) if values else None

    def total(stats: list[dict[str, Any]], key: str) -> int:
        return sum(int(s[key]) for s in stats)

    return Level(
        calls=calls,
        lost=lost,
        errors=result["error_count"],
        lag_p95_ms=worst(steady),
        lag_ramp_p95_ms=worst(ramp),
        gen_lag_p95_ms=result["lag_p95_ms"],
        cpu_per_call_pct=100 * (busy - gen_cpu) / window / calls,
        server_cpu_per_call_pct=100 * server_cpu / window / calls,
        gen_cpu_pct=100 * gen_cpu / window,
        mem_per_call_mb=(rss_mid - rss_before) / calls / 2**20,
        overloaded=overloaded,
        turns=total(steady, "turns_measured") - total(ramp, "turns_measured"),
        unmeasured=total(steady, "turns_unmeasured") - total(ramp, "turns_unmeasured"),
        turn_event_p95_ms=worst(steady, "turn_event_p95_ms"),
        cost=cost,
        hosts=sum(1 for st in steady if st["calls"]),
    )


def setup_latency(srv: Server, *, rate: float, seconds: float) -> tuple[float | None, float | None, int]:
    before = srv.metrics()
    calls = int(rate * seconds)
    loadgen(srv, calls, seconds=4, interval=1 / rate).communicate(timeout=600)
    srv.wait_no_live_calls()
    after = srv.metrics()
    name = "mise_call_setup_seconds"
    p50 = histogram_quantile(0.5, before, after, name)
    p95 = histogram_quantile(0.95, before, after, name)
    return (p50 * 1000 if p50 is not None else None, p95 * 1000 if p95 is not None else None, calls)


def bench_density(
    address: str,
    per_actor: int,
    levels: list[int],
    *,
    ramp_rate: float,
    steady_s: float,
    spare: int,
    ingest_only: bool = False,
) -> list[Level]:
    data = Path(tempfile.mkdtemp(prefix="mise-bench-"))
    env = {
        "MISE_CALLS_PER_ACTOR": str(per_actor),
        "MISE_SPARE_HOSTS": str(spare),
        "MISE_RING_SECONDS": "60",
        # The product as shipped: every turn scored by the emotion model too; or nothing analysed at all.
        "MISE_EMOTION": "0" if ingest_only else "1",
        "MISE_ASR": "0",  # the live analysis' cost, as at the baseline commit (words: bench/load.py --asr)
        "MISE_ANALYSIS": "0" if ingest_only else "1",
    }
    what = "INGEST ONLY (MISE_ANALYSIS=0)" if ingest_only else "full analysis, emotion on"
    print(
        f"\n== {what}: MISE_CALLS_PER_ACTOR={per_actor} (spare hosts {spare}; calls ramp in at {ramp_rate:g}/s, "
        f"then {steady_s:g} s steady) ==",
        flush=True,
    )
    print(
        f"{'calls':>6} {'lost':>6} {'lag p95':>9} {'ramp p95':>9} {'gen lag':>8} {'cpu/call':>9} "
        f"{'srv+hosts':>10} {'gen cpu':>8} {'mem/call':>9} {'turns':>6} {'unmeas':>6} {'turn ev':>8}  result",
        flush=True,
    )
    best, done = 0, []
    with Server.start(address, data, **env) as srv:
        for calls in levels:
            lvl = run_level(srv, calls, ramp_rate=ramp_rate, steady_s=steady_s)
            done.append(lvl)
            fmt = lambda v: "-" if v is None else f"{v:.0f} ms"  # noqa: E731
            print(
                f"{lvl.calls:>6} {lvl.lost:>6} {fmt(lvl.lag_p95_ms):>9} {fmt(lvl.lag_ramp_p95_ms):>9} "
                f"{lvl.gen_lag_p95_ms:>5.0f} ms {lvl.cpu_per_call_pct:>8.2f}% {lvl.server_cpu_per_call_pct:>9.2f}% "
                f"{lvl.gen_cpu_pct:>7.0f}% {lvl.mem_per_call_mb:>6.2f} MB {lvl.turns:>6} {lvl.unmeasured:>6} "
                f"{fmt(lvl.turn_event_p95_ms):>8}  "
                f"{'pass' if lvl.passed else 'FAIL'}{'' if lvl.errors == 0 else f' ({lvl.errors} socket errors)'}"
                f"{' (overloaded: not every call stayed live through the window)' if lvl.overloaded else ''}",
                flush=True,
            )
            print(f"{'':>6} {lvl.hosts} host(s); {cpu.format_breakdown(lvl.cost)}", flush=True)
            if not lvl.passed:
                break
            best = calls
        setup = None if ingest_only else setup_latency(srv, rate=2.0, seconds=20.0)
    shutil.rmtree(data, ignore_errors=True)
    print(f"most concurrent real-time calls sustained: {best if best else '< ' + str(levels[0])} ({what})")
    if setup is not None:
        p50, p95, n = setup
        print(
            f"call setup at 2 new calls/s ({n} calls): p50 {p50:.1f} ms, p95 {p95:.1f} ms" if p95 else "no setup data"
        )
    return done


def supports_ingest_only() -> bool:
    """Whether the benched checkout has MISE_ANALYSIS (older commits analyse regardless)."""
    return "MISE_ANALYSIS" in (REPO / "api" / "settings.py").read_text()


def run_here(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"repo": str(REPO), "commit": commit_of(REPO), "levels": [], "ingest_only": []}
    with runtime.private_cluster("mise-bench") as address:
        print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; ray {ray.__version__}")
        print(f"checkout: {REPO} at {out['commit']}")
        if args.only != "default":
            bench_density(
                address, 1, [int(x) for x in args.levels_one.split(",")], ramp_rate=4.0, steady_s=args.steady, spare=4
            )
        if args.only != "one":
            levels = [int(x) for x in args.levels_default.split(",")]
            kw = {"ramp_rate": 20.0, "steady_s": args.steady, "spare": 1}
            full = bench_density(address, DEFAULT_CALLS_PER_ACTOR, levels, **kw)  # type: ignore[arg-type]
            out["levels"] = [asdict(lvl) | {"passed": lvl.passed} for lvl in full]
            if args.no_ingest_only:
                pass
            elif not supports_ingest_only():
                print("\n(this checkout has no MISE_ANALYSIS: no ingest-only run)")
            else:
                ran = [lvl.calls for lvl in full]
                ingest = bench_density(address, DEFAULT_CALLS_PER_ACTOR, ran, ingest_only=True, **kw)  # type: ignore[arg-type]
                out["ingest_only"] = [asdict(lvl) | {"passed": lvl.passed} for lvl in ingest]
                print("\nfull analysis / ingest only, total CPU per call-second:")
                for a, b in zip(full, ingest, strict=False):
                    ta, tb = a.cost["total"], b.cost["total"]
                    if ta and tb:
                        print(f"  {a.calls} calls: {ta:.2f} / {tb:.2f} ms = {ta / tb:.2f}x")
    print("\ncolumns (CPU-ms per call-second):\n" + cpu.legend())
    return out


def commit_of(repo: Path) -> str:
    result = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "-uno"], capture_output=True, text=True)
    return result.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


BUILD_IN_PLACE = "from setuptools import setup; setup(script_args=['build_ext', '--inplace'])"


def compare(args: argparse.Namespace, argv: list[str]) -> None:
    """Run this bench on a worktree of ``args.compare`` and on this checkout, ``args.rounds`` times each,
    alternating (ref, here, here, ref, ...) so that a machine's drift over the session hits both alike;
    print each side's totals and the ratio of their medians."""
    tree = Path(tempfile.mkdtemp(prefix="mise-compare-")) / "ref"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.compare], check=True)
    if any((tree / "engine" / name).exists() for name in ("csrc", "_kernels.c")):  # compiled loops: built in place
        subprocess.run([sys.executable, "-c", BUILD_IN_PLACE], cwd=tree, check=True, stdout=subprocess.DEVNULL)
    runs: dict[str, list[dict[str, Any]]] = {"ref": [], "here": []}
    try:
        for r in range(args.rounds):
            order = (("ref", tree), ("here", REPO)) if r % 2 == 0 else (("here", REPO), ("ref", tree))
            for name, repo in order:
                out = tree.parent / f"{name}-{r}.json"
                rest = [a for a in argv if a not in ("--compare", args.compare)]
                if r > 0:
                    rest.append("--no-ingest-only")  # once is enough for the ratio
                print(f"\n######## round {r + 1}/{args.rounds}: {name} ########", flush=True)
                subprocess.run([sys.executable, __file__, *rest, "--repo", str(repo), "--json", str(out)], check=True)
                runs[name].append(json.loads(out.read_text()))
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)
    ref_commit, here_commit = runs["ref"][0]["commit"], runs["here"][0]["commit"]
    print(
        f"\n== {args.compare} ({ref_commit}) against this checkout ({here_commit}): one machine, one session, "
        f"{args.rounds} alternating round(s) each =="
    )
    for calls in [int(x) for x in args.levels_default.split(",")]:
        side = {}
        for name, results in runs.items():
            levels = [lvl for res in results for lvl in res["levels"] if lvl["calls"] == calls]
            side[name] = levels
        if not side["ref"] or not side["here"]:
            continue
        totals = {name: [lvl["cost"]["total"] for lvl in levels] for name, levels in side.items()}
        med = {name: statistics.median(values) for name, values in totals.items()}
        print(
            f"{calls} calls: total CPU per call-second {args.compare} "
            f"{' '.join(f'{v:.2f}' for v in totals['ref'])} (median {med['ref']:.2f}) -> here "
            f"{' '.join(f'{v:.2f}' for v in totals['here'])} (median {med['here']:.2f} ms): "
            f"{med['here'] / med['ref']:.2f}x"
        )
        for name, levels in side.items():
            turn_p95 = ", ".join(f"{lvl['turn_event_p95_ms']:.0f}" for lvl in levels)
            lag_p95 = ", ".join(f"{lvl['lag_p95_ms']:.0f}" for lvl in levels)
            print(
                f"  {name}: turn.ended p95 {turn_p95} ms; actor lag p95 {lag_p95} ms; "
                f"unmeasured {sum(lvl['unmeasured'] for lvl in levels)}; lost {sum(lvl['lost'] for lvl in levels)}; "
                f"{'all pass' if all(lvl['passed'] for lvl in levels) else 'FAILED'}"
            )
    best = {
        name: [max([lvl["calls"] for lvl in res["levels"] if lvl["passed"]], default=0) for res in results]
        for name, results in runs.items()
    }
    print(f"most concurrent calls sustained, per round: {args.compare} {best['ref']} -> here {best['here']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--levels-one", default="5,10,15,20")
    p.add_argument("--levels-default", default="25,50,75,100,150")
    p.add_argument("--steady", type=float, default=15.0)
    p.add_argument("--only", choices=["one", "default"])
    p.add_argument("--no-ingest-only", action="store_true", help="skip the ingest-only run")
    p.add_argument("--compare", metavar="REF", help="bench a git worktree of REF first, then this checkout")
    p.add_argument("--rounds", type=int, default=2, help="with --compare: alternating runs of each side")
    p.add_argument("--repo", help="bench this checkout instead (used by --compare)")
    p.add_argument("--json", help="also write the levels' figures here")
    args = p.parse_args()
    if args.quick:
        args.levels_one, args.levels_default, args.steady = "10,20", "50,100", 8.0
    if args.compare:
        compare(args, sys.argv[1:])
        return
    out = run_here(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
