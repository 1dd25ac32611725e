"""The dashboard under load: is the page smooth, and does it stay bounded, with 50 live calls?

    .venv/bin/python bench/dashboard.py            # ~2.5 minutes on 2 cores

A real `mise serve` (uvicorn) on a Ray instance owned by this script; 50 real-time calls from
bench/loadgen.py over the real WebSocket endpoint (the bundled two-party demo call, each call joining
it at its own point, starts 0.1 s apart); the emotion model on by default (MISE_EMOTION=1, as in
production and bench/sse.py: it is the heaviest load on the shared cores). Debian's headless Chromium
(Playwright) opens the live monitor (`/`) and measures it for a window while every call is live, then
goes to one call's live view (`#/call/{sid}`, as a click on its row does) and measures that.

Per window, in the page (an init script; app.js is not changed for the bench):
- frame intervals: requestAnimationFrame deltas (p50/p95/p99/max, share over 50 ms);
- long tasks: PerformanceObserver 'longtask' (count, total, longest, count over 200 ms); and long animation
  frames ('long-animation-frame', > 50 ms) with the page's own script and style+layout time in them, to
  tell a page that is slow from a page whose thread was starved by the other processes on the cores;
- a person's click on a call in the monitor (press, 120 ms, release): does it open the call?
- main-thread time: CDP Performance.getMetrics ScriptDuration / TaskDuration / Layout+RecalcStyle,
  as ms per second of wall time (mean, and the worst 1 s sample);
- JS heap (after a forced GC; the probe's own records are taken out first) and DOM nodes (elements in the
  document; CDP's Nodes counts detached ones too) at the start, middle and end of the window: growth
  across the window suggests a leak (a call's timeline grows with its turns, by design);
- lag: event creation (its `at`, stamped by the call host) -> its SSE handler in the page ("received"),
  and -> the first animation frame after it ("shown": the app draws in requestAnimationFrame, so this
  is when it is on screen); events the server wrote to SSE (mise_sse_events_total; the page is the only
  subscriber) vs events the page handled, read together at the window's end ("behind").
The load generator, the server, its Ray actors and Chromium all share this machine's cores.
Smooth: p95 frame interval <= 34 ms (30 fps), no long task > 200 ms, no steady growth of heap or DOM.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from actors import runtime  # noqa: E402
from tests.support import API_KEY, CHROMIUM, CHROMIUM_ARGS, Server  # noqa: E402

SPEECH = REPO / "api" / "demo"
TICKS = os.sysconf("SC_CLK_TCK")

# Installed before the page's own script. Records only while __bench.on (set per window).
PROBE = """
(() => {
  const b = window.__bench = { on: false, frames: [], longtasks: [], loafs: [], received: 0, recvLag: [],
    shownLag: [], pending: [], scheduled: false };
  b.drain = () => {
    const out = { frames: b.frames, longtasks: b.longtasks, loafs: b.loafs, received: b.received, recvLag: b.recvLag,
      shownLag: b.shownLag };
    Object.assign(b, { frames: [], longtasks: [], loafs: [], received: 0, recvLag: [], shownLag: [] });
    return out;
  };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (b.on) b.longtasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
  // Long animation frames (> 50 ms), with what the page itself did in them: its scripts, and style+layout.
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!b.on) continue;
      const script = e.scripts.reduce((sum, s) => sum + s.duration, 0);
      const layout = e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0;
      b.loafs.push([e.startTime, e.duration, script, layout]);
    }
  }).observe({ type: "long-animation-frame", buffered: true });
  let last = null;
  const tick = (t) => {
    if (b.on && last !== null) b.frames.push([last, t - last]);
    last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  const shown = () => {
    const now = Date.now();
    for (const at of b.pending) b.shownLag.push(now - at);
    b.pending = [];
    b.scheduled = false;
  };
  const add = EventSource.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (type, fn, opts) {
    return add.call(this, type, function (msg) {
      const t0 = Date.now();
      fn.call(this, msg);
      if (!b.on) return;
      const i = msg.data.indexOf('"at":"') + 6;
      const at = Date.parse(msg.data.slice(i, msg.data.indexOf('"', i)));
      b.received += 1;
      b.recvLag.push(t0 - at);
      b.pending.push(at);
      // Registered after the app's own requestAnimationFrame (it draws there): runs once that draw is done.
      if (!b.scheduled) { b.scheduled = true; requestAnimationFrame(shown); }
    }, opts);
  };
})();
"""

DOM_NODES = "document.getElementsByTagName('*').length"


def machine_busy_s() -> float:
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICKS


def other_load() -> str:
    """Other people's work on this machine that competes for the cores (e.g. a model being trained)."""
    out = subprocess.run(["pgrep", "-af", "models.training.train"], capture_output=True, text=True).stdout.strip()
    mine = str(os.getpid())
    lines = [line for line in out.splitlines() if line.split(" ", 1)[0] != mine and "pgrep" not in line]
    return (
        f"{len(lines)} `models.training.train` process(es) running"
        if lines
        else "no `models.training.train` process running"
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def heap_and_nodes(page: Any, cdp: Any, gcs: list[tuple[float, float]] | None = None) -> tuple[float, int, int]:
    """JS heap used (MB, after a full GC), elements in the document, and CDP's Nodes (incl. detached).
    The GC's span in page time goes to ``gcs`` (frames and long tasks in it are ours, not the page's)."""
    t0 = float(page.evaluate("performance.now()"))
    cdp.send("HeapProfiler.collectGarbage")
    if gcs is not None:
        gcs.append((t0, float(page.evaluate("performance.now()"))))
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return metrics["JSHeapUsedSize"] / 1e6, int(page.evaluate(DOM_NODES)), int(metrics["Nodes"])


def measure(page: Any, cdp: Any, srv: Server, seconds: float, settle: float) -> dict[str, Any]:
    """One window on the page as it is now: ``settle`` s to let it load, then ``seconds`` measured."""
    time.sleep(settle)
    heap = [heap_and_nodes(page, cdp)]
    gcs: list[tuple[float, float]] = []
    page.evaluate("(() => { const b = window.__bench; b.drain(); b.pending = []; b.on = true; })()")
    # The probe's own records are taken out of the page before each heap reading (they are not the app's).
    b: dict[str, Any] = {"frames": [], "longtasks": [], "loafs": [], "received": 0, "recvLag": [], "shownLag": []}

    def drain(stop: bool = False) -> None:
        got = page.evaluate(
            f"(() => {{ {'window.__bench.on = false;' if stop else ''} return window.__bench.drain(); }})()"
        )
        for k, v in got.items():
            b[k] += v

    sse0 = srv.metrics().get("mise_sse_events_total", 0.0)
    busy0, t0 = machine_busy_s(), time.monotonic()
    samples = []
    mid_done = False
    while (elapsed := time.monotonic() - t0) < seconds:
        m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
        samples.append((time.monotonic(), m))
        if not mid_done and elapsed >= seconds / 2:
            drain()
            heap.append(heap_and_nodes(page, cdp, gcs))
            mid_done = True
        time.sleep(1.0)
    sse1 = srv.metrics().get("mise_sse_events_total", 0.0)
    drain(stop=True)
    wall = time.monotonic() - t0
    busy = (machine_busy_s() - busy0) / wall
    heap.append(heap_and_nodes(page, cdp))
    per_s: dict[str, list[float]] = {"script": [], "task": [], "layout": []}
    for (ta, a), (tb, c) in itertools.pairwise(samples):
        dt = tb - ta
        per_s["script"].append((c["ScriptDuration"] - a["ScriptDuration"]) / dt * 1000)
        per_s["task"].append((c["TaskDuration"] - a["TaskDuration"]) / dt * 1000)
        layout = c["LayoutDuration"] + c["RecalcStyleDuration"] - a["LayoutDuration"] - a["RecalcStyleDuration"]
        per_s["layout"].append(layout / dt * 1000)

    def ours(start: float, length: float) -> bool:  # overlaps a forced GC
        return any(start < g1 + 1 and start + length > g0 - 1 for g0, g1 in gcs)

    frames = [d for t, d in b["frames"] if not ours(t, d)]
    longtasks = [d for t, d in b["longtasks"] if not ours(t, d)]
    loafs = [(d, script, layout) for t, d, script, layout in b["loafs"] if not ours(t, d)]
    worst = max(loafs, default=(0.0, 0.0, 0.0))
    return {
        "seconds": wall,
        "frames": len(frames),
        "excluded": len(b["frames"]) - len(frames),
        "fps": len(frames) / wall,
        "frame_p50": pct(frames, 50),
        "frame_p95": pct(frames, 95),
        "frame_p99": pct(frames, 99),
        "frame_max": max(frames, default=float("nan")),
        "frames_over_50": sum(f > 50 for f in frames) / max(1, len(frames)),
        "longtasks": len(longtasks),
        "longtask_total": sum(longtasks),
        "longtask_max": max(longtasks, default=0.0),
        "longtasks_over_200": sum(d > 200 for d in longtasks),
        "loafs": len(loafs),
        "loaf_worst": worst,
        "loafs_over_200": sum(d > 200 for d, _, _ in loafs),
        "loafs_over_200_page": sum(d > 200 and script + layout > 50 for d, script, layout in loafs),
        "per_s": {k: (float(np.mean(v)) if v else math.nan, max(v, default=math.nan)) for k, v in per_s.items()},
        "heap": heap,
        "received": b["received"],
        "written": sse1 - sse0,
        "recv_p50": pct(b["recvLag"], 50),
        "recv_p95": pct(b["recvLag"], 95),
        "shown_p50": pct(b["shownLag"], 50),
        "shown_p95": pct(b["shownLag"], 95),
        "shown_max": max(b["shownLag"], default=float("nan")),
        "ids_kept": int(page.evaluate("window.miseReceived.length")),
        "busy": busy,
    }


def human_clicks(page: Any, sid: str, tries: int = 5) -> int:
    """Press and release the mouse on a call's link in the monitor as a person does (~120 ms apart); count
    the presses that open the call (a row rebuilt between press and release swallows the click)."""
    opened = 0
    for _ in range(tries):
        box = None
        while box is None:  # None when the row was replaced between finding and measuring it
            box = page.locator(f"#live-rows tr[data-call-sid='{sid}'] a").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        time.sleep(0.12)
        page.mouse.up()
        time.sleep(0.3)
        if page.evaluate("location.hash").startswith("#/call/"):
            opened += 1
            page.evaluate("history.back()")
            page.wait_for_function("document.querySelectorAll('#live-rows tr').length > 0", timeout=30_000)
            time.sleep(1.0)
    if opened:
        page.evaluate(f"location.hash = '#/call/{sid}'")
    return opened


def report(name: str, r: dict[str, Any]) -> None:
    (h0, d0, n0), (h1, d1, n1), (h2, d2, n2) = r["heap"]
    script, task, layout = r["per_s"]["script"], r["per_s"]["task"], r["per_s"]["layout"]
    print(f"{name} ({r['seconds']:.0f} s; machine busy {r['busy']:.2f} of {os.cpu_count()} cores):")
    print(
        f"  frames: {r['frames']} ({r['fps']:.0f}/s); interval p50 {r['frame_p50']:.1f} ms, p95 {r['frame_p95']:.1f}, "
        f"p99 {r['frame_p99']:.1f}, max {r['frame_max']:.0f}; {100 * r['frames_over_50']:.1f}% over 50 ms "
        f"({r['excluded']} frame(s) during the bench's own mid-window GC left out)"
    )
    print(
        f"  long tasks: {r['longtasks']} ({r['longtask_total']:.0f} ms in all, longest {r['longtask_max']:.0f} ms, "
        f"{r['longtasks_over_200']} over 200 ms)"
    )
    d, script_ms, layout_ms = r["loaf_worst"]
    print(
        f"  long animation frames (> 50 ms): {r['loafs']}; the longest {d:.0f} ms, of which the page's scripts "
        f"{script_ms:.0f} ms and style+layout+paint {layout_ms:.0f} ms; {r['loafs_over_200']} over 200 ms, "
        f"{r['loafs_over_200_page']} of them with over 50 ms of the page's own work (the rest: CPU taken by others)"
    )
    print(
        f"  main thread per second: script {script[0]:.1f} ms (worst second {script[1]:.1f}), "
        f"all tasks {task[0]:.1f} ms ({task[1]:.1f}), style+layout {layout[0]:.1f} ms ({layout[1]:.1f})"
    )
    print(
        f"  JS heap after GC: {h0:.2f} -> {h1:.2f} -> {h2:.2f} MB (start, middle, end); DOM elements "
        f"{d0} -> {d1} -> {d2}; CDP nodes {n0} -> {n1} -> {n2}; window.miseReceived holds {r['ids_kept']} ids"
    )
    print(
        f"  events: {r['received']} handled by the page, {r['written']:.0f} written by the server "
        f"({r['received'] / r['seconds']:.0f}/s; behind at the end: {r['written'] - r['received']:.0f}); "
        f"creation -> received p50 {r['recv_p50']:.0f} ms, p95 {r['recv_p95']:.0f}; "
        f"-> shown p50 {r['shown_p50']:.0f} ms, p95 {r['shown_p95']:.0f}, max {r['shown_max']:.0f}"
    )
    smooth = r["frame_p95"] <= 34 and r["longtasks_over_200"] == 0
    print(f"  smooth (p95 frame <= 34 ms, no long task > 200 ms): {'yes' if smooth else 'NO'}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--window", type=float, default=30.0, help="seconds measured on each page")
    p.add_argument("--emotion", default="1", choices=("0", "1"), help="MISE_EMOTION for the server")
    args = p.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is absent")
    from playwright.sync_api import sync_playwright

    interval, settle = 0.1, 4.0
    ramp = args.calls * interval
    # Every call stays live through both windows (and the page loads between them), with a margin.
    call_s = ramp + 4 + 2 * (settle + args.window + 6) + 10
    cleanup = contextlib.ExitStack()
    address = cleanup.enter_context(runtime.private_cluster("mise-bench-dashboard"))
    data = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="mise-dash-", ignore_cleanup_errors=True)))
    gen: subprocess.Popen[str] | None = None
    try:
        with Server.start(address, data, MISE_EMOTION=args.emotion) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
            print(
                f"{args.calls} real-time calls (bench/loadgen.py, the demo call, starts {interval:g} s apart, "
                f"{call_s:.0f} s each; MISE_EMOTION={args.emotion}); 1 client: {chromium}, headless, 1400x900; "
                f"{args.window:g} s per page once all calls are live. {os.cpu_count()} cores shared by the load "
                f"generator, the server, its Ray actors and Chromium; {other_load()}; load average before "
                f"{os.getloadavg()[0]:.2f}.",
                flush=True,
            )
            gen = subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "bench" / "loadgen.py"),
                    *("--url", srv.ws, "--key", API_KEY, "--calls", str(args.calls), "--seconds", str(call_s)),
                    *("--interval", str(interval), "--speech", str(SPEECH)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(ramp + 2.0)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.add_init_script(PROBE)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(f"{srv.http}/?api_key={API_KEY}")
            page.wait_for_function(f"document.querySelectorAll('#live-rows tr').length >= {args.calls}", timeout=30_000)
            report("Live monitor (/)", measure(page, cdp, srv, args.window, settle))

            live = httpx.get(
                srv.http + "/v1/calls",
                params={"live": "true", "limit": 200},
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=10,
            ).json()["calls"]
            sid = sorted(live, key=lambda c: c["call_sid"])[0]["call_sid"]
            clicks = human_clicks(page, sid)
            print(f"  human-paced clicks on a call's link (120 ms press) that opened it: {clicks}/5", flush=True)
            if not page.evaluate("location.hash").startswith("#/call/"):
                page.evaluate(f"location.hash = '#/call/{sid}'")
            page.wait_for_function("document.querySelector('#conn').textContent === 'live'", timeout=30_000)
            report(f"Call live view (#/call/{sid[:12]}…)", measure(page, cdp, srv, args.window, settle))
            page.close()
            browser.close()
            gen_out, _ = gen.communicate(timeout=300)
            g = json.loads(gen_out.strip().splitlines()[-1])
            print(
                f"load generator: {len(g['calls'])}/{args.calls} calls completed, send lag p95 "
                f"{g['lag_p95_ms']:.0f} ms" + (f"; errors: {g['errors']}" if g["errors"] else ""),
                flush=True,
            )
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
        cleanup.close()


if __name__ == "__main__":
    main()
