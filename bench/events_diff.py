"""How far the offline events of a commit are from this checkout's: the bundled demo call and the shared
synthetic dialogue and AMI excerpt through ``engine.pipeline.analyze`` (the live path, features included).

    .venv/bin/python bench/events_diff.py --compare REF

Runs the analysis on a git worktree of REF (its compiled kernels built in place) and on this checkout,
then prints, per call, whether the events have the same types, order and non-float values, and per float
field the largest relative difference (0 means bit-identical). Deterministic: no timing, one machine or
another gives the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
CALLS = ("synthetic_dialogue", "ami_es2004_a")
BUILD_IN_PLACE = "from setuptools import setup; setup(script_args=['build_ext', '--inplace'])"


def dump(repo: Path, out: Path) -> None:
    """The events of the three calls as analysed by the checkout at ``repo``, as JSON in ``out``."""
    sys.path[:0] = [str(repo), str(repo / "bench")]
    os.chdir(repo)
    import analysis  # bench/analysis.py of that checkout: its reading of the shared calls

    from engine.g711 import decode_ulaw
    from engine.pipeline import analyze

    events: dict[str, Any] = {}
    for name in CALLS:
        found, _ = analyze(*analysis.tracks_of(analysis.DATA / name), chunk_ms=50)
        events[name] = [(e.type, e.seq, e.at_ms, e.data) for e in found]
    demo = [decode_ulaw((repo / "api" / "demo" / f"{t}.wav").read_bytes()[58:]) for t in ("inbound", "outbound")]
    events["demo"] = [(e.type, e.seq, e.at_ms, e.data) for e in analyze(*demo, chunk_ms=50)[0]]
    out.write_text(json.dumps(events, default=str))


def differences(a: Any, b: Any, key: str, worst: dict[str, float]) -> bool:
    """Walk two decoded dumps; collect the largest relative difference per float field in ``worst``.
    False when anything but a float differs (or the structure does)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all([differences(a[k], b[k], k, worst) for k in a])
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all([differences(x, y, key, worst) for x, y in zip(a, b, strict=True)])
    if isinstance(a, float) and isinstance(b, float):
        worst[key] = max(worst.get(key, 0.0), abs(a - b) / max(abs(a), 1e-12))
        return True
    return bool(a == b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", metavar="REF", help="the commit to compare this checkout with")
    p.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # used by --compare
    p.add_argument("--repo", type=Path, default=BENCH.parent, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dump:
        return dump(args.repo.resolve(), args.dump)
    if not args.compare:
        p.error("--compare REF is required")
    work = Path(tempfile.mkdtemp(prefix="mise-events-"))
    tree = work / "ref"
    repo = BENCH.parent
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), args.compare], check=True)
    try:
        if (tree / "engine" / "csrc").exists():
            subprocess.run([sys.executable, "-c", BUILD_IN_PLACE], cwd=tree, check=True, capture_output=True)
        # The shared calls as this checkout finds them (a worktree's default would be beside the worktree).
        data = os.environ.get("MISE_TEST_DATA", str(repo.parent / "shared" / "data"))
        for name, where in (("ref", tree), ("here", repo)):
            subprocess.run(
                [
                    sys.executable,
                    str(BENCH / "events_diff.py"),
                    "--dump",
                    str(work / f"{name}.json"),
                    "--repo",
                    str(where),
                ],
                check=True,
                env={**os.environ, "MISE_TEST_DATA": data},
            )
        ref, here = (json.loads((work / f"{name}.json").read_text()) for name in ("ref", "here"))
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"offline events, {args.compare} against this checkout (engine.pipeline.analyze, 50 ms chunks):")
    worst: dict[str, float] = {}
    for name in ref:
        same = differences(ref[name], here[name], name, worst)
        print(
            f"  {name:20s} {len(ref[name])} events: "
            + ("same types, order and non-float values" if same else "DIFFERENT")
        )
    print("largest relative difference per float field (0: bit-identical):")
    for key, value in sorted(worst.items(), key=lambda kv: -kv[1]):
        print(f"  {key:28s} {value:.1e}")


if __name__ == "__main__":
    main()
