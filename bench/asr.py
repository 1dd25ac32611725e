"""Words: word error rate per track on real and synthetic calls, and recogniser throughput.

    .venv/bin/python bench/asr.py                  # ~2 minutes on 2 cores
    .venv/bin/python bench/asr.py --live 5,10,15   # then live calls with words (bench/load.py --asr)

WER: ``mise analyze --transcribe --json`` (the live engine's turns, then the built-in recogniser, the same
code the live path runs) on ../shared/data/calls/ami_es2004_a (real meeting speech at 8 kHz; targets <= 0.30)
and synthetic_dialogue (espeak-ng; <= 0.10). Per track, the reference is the track's turns.csv text in time
order and the hypothesis is the track's turns' text in time order, both lower-cased without punctuation;
WER = (substitutions + deletions + insertions) / reference words. Redaction is off for scoring.

Then the same per track with each turn alone in a window, as the live path has them when few turns wait: the
window encoded only as long as the turn needs (the default) and the whole 30 s.

Throughput: the turns of both calls, recognised in this process, as seconds of turn audio per CPU-second of
the process: one turn per 30 s window (what a naive recogniser pays: Whisper pads every input to 30 s); one
turn per window encoded only as long as it needs (``models.whisper``'s default); turns packed into shared
windows (``engine.asr.pack``), one window per model call; and 4 windows per call (what the live workers do).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.analyze import analyze_tracks, load_tracks  # noqa: E402
from engine.asr import Clip, normalise, transcribe, upsample, word_error_rate  # noqa: E402
from models.whisper import Whisper  # noqa: E402

DATA = Path(os.environ.get("MISE_TEST_DATA", REPO.parent / "shared" / "data")) / "calls"
CORPORA = {"ami_es2004_a": 0.30, "synthetic_dialogue": 0.10}


def reference(folder: Path) -> dict[str, list[str]]:
    with (folder / "turns.csv").open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["start_s"]))
    out: dict[str, list[str]] = {"inbound": [], "outbound": []}
    for row in rows:
        out[row["track"]] += normalise(row["text"])
    return out


def wer(folder: Path) -> dict[str, tuple[int, int]]:
    cmd = [sys.executable, "-m", "api.cli", "analyze", "--inbound", str(folder / "inbound.wav")]
    cmd += ["--outbound", str(folder / "outbound.wav"), "--transcribe", "--no-redact", "--no-emotion", "--json"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    turns = sorted(json.loads(done.stdout)["turns"], key=lambda t: t["start_ms"])
    ref = reference(folder)
    out = {}
    for track in ("inbound", "outbound"):
        hyp = [w for t in turns if t["track"] == track for w in normalise(t.get("text") or "")]
        out[track] = word_error_rate(ref[track], hyp)
    return out


def clips() -> list[Clip]:
    out = []
    for name in CORPORA:
        caller, agent = load_tracks(DATA / name / "inbound.wav", DATA / name / "outbound.wav")
        tracks = {"inbound": caller, "outbound": agent}
        for t in analyze_tracks(caller, agent, call_sid=name)["turns"]:
            pcm = tracks[t["track"]]
            assert pcm is not None
            out.append(Clip((name, t["turn_id"]), upsample(pcm[t["start_ms"] * 8 : t["end_ms"] * 8])))
    return out


def wer_alone(model: Whisper) -> dict[tuple[str, str], float]:
    """WER per call and track with each turn alone in its window, as live at low load (no turns to share it)."""
    out = {}
    for name in CORPORA:
        caller, agent = load_tracks(DATA / name / "inbound.wav", DATA / name / "outbound.wav")
        tracks = {"inbound": caller, "outbound": agent}
        turns = sorted(analyze_tracks(caller, agent, call_sid=name)["turns"], key=lambda t: t["start_ms"])
        said: dict[str, list[str]] = {"inbound": [], "outbound": []}
        for t in turns:
            pcm = tracks[t["track"]]
            assert pcm is not None
            clip = Clip(0, upsample(pcm[t["start_ms"] * 8 : t["end_ms"] * 8]))
            said[t["track"]] += [w for word in transcribe(model.transcribe, [clip])[0] for w in normalise(word.text)]
        ref = reference(DATA / name)
        for track, hyp in said.items():
            edits, words = word_error_rate(ref[track], hyp)
            out[name, track] = edits / max(1, words)
    return out


def throughput(threads: int, turns: list[Clip]) -> dict[str, Any]:
    audio_s = sum(c.seconds for c in turns)
    naive, fitted = Whisper(threads=threads, fit=False), Whisper(threads=threads)

    def timed(run: Any) -> float:
        t0 = time.process_time()
        run()
        return audio_s / (time.process_time() - t0)

    return {
        "turns": len(turns),
        "audio_s": audio_s,
        "one_per_window": timed(lambda: [naive.transcribe([c.audio]) for c in turns]),  # each padded to 30 s
        "fitted": timed(lambda: [fitted.transcribe([c.audio]) for c in turns]),
        "packed": timed(lambda: transcribe(fitted.transcribe, turns, batch=1)),
        "packed_batch4": timed(lambda: transcribe(fitted.transcribe, turns, batch=4)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="recogniser threads for the throughput part")
    p.add_argument(
        "--live",
        metavar="LEVELS",
        help="then the live part: bench/load.py --asr --levels LEVELS (real-time calls with analysis and the "
        "emotion model; the largest level whose words come within 5 s at p95, none skipped)",
    )
    args = p.parse_args()
    missing = [name for name in CORPORA if not (DATA / name / "turns.csv").is_file()]
    if missing:
        sys.exit(f"bench/asr.py: corpora missing under {DATA}: {', '.join(missing)} (set MISE_TEST_DATA)")
    print(f"bench/asr.py on {os.cpu_count()} cores: Whisper tiny.en, CTranslate2 int8, greedy decoding")
    print(f"{'call':<20} {'track':<9} {'ref words':>9} {'edits':>6} {'WER':>6} {'target':>7}")
    for name, target in CORPORA.items():
        for track, (edits, words) in wer(DATA / name).items():
            rate = edits / max(1, words)
            verdict = "ok" if rate <= target else "OVER"
            print(f"{name:<20} {track:<9} {words:>9} {edits:>6} {rate:>6.3f} {target:>7.2f}  {verdict}")
    fitted, full = wer_alone(Whisper()), wer_alone(Whisper(fit=False))
    print("one turn per window (live at low load): WER with the window fitted to the turn / the whole 30 s:")
    for name, track in fitted:
        print(f"  {name:<20} {track:<9} {fitted[name, track]:.3f} / {full[name, track]:.3f}")
    turns = clips()
    result = throughput(args.threads, turns)
    base = result["one_per_window"]
    print(
        f"throughput, {result['turns']} turns, {result['audio_s']:.0f} s of turn audio, {args.threads} thread(s), "
        f"seconds of audio per CPU-second: one turn per 30 s window {base:.2f}; one turn per fitted window "
        f"{result['fitted']:.2f} ({result['fitted'] / base:.1f}x); packed and fitted {result['packed']:.2f} "
        f"({result['packed'] / base:.1f}x); packed, fitted, 4 windows per call {result['packed_batch4']:.2f} "
        f"({result['packed_batch4'] / base:.1f}x)",
        flush=True,
    )
    if args.live:
        print("live: bench/load.py --asr --levels " + args.live, flush=True)
        subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--asr", "--levels", args.live], check=True)


if __name__ == "__main__":
    main()
