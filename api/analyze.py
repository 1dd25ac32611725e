"""``mise analyze``: the live engine, offline, on recordings.

Each track is read as Twilio would deliver it (any format soundfile reads, mixed to mono, resampled to
8 kHz and through G.711 mu-law), then streamed through the same ``CallAnalyzer`` a live call uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from api.simulate import read_ulaw_track
from engine import transcript
from engine.asr import Clip, Recogniser, transcribe, upsample
from engine.events import INTERRUPTION, SILENCE, TURN_ENDED
from engine.g711 import decode_ulaw
from engine.pipeline import AnalysisOptions, analyze
from models.caller import CallerScorer

if TYPE_CHECKING:
    from models.scoring import EmotionScoring

Int16 = npt.NDArray[np.int16]


def load_tracks(inbound: str | Path, outbound: str | Path | None = None) -> tuple[Int16, Int16 | None]:
    """Both tracks as the phone delivers them: 8 kHz int16 after a mu-law round trip."""
    caller = decode_ulaw(read_ulaw_track(inbound))
    return caller, decode_ulaw(read_ulaw_track(outbound)) if outbound else None


def analyze_tracks(
    caller: Int16,
    agent: Int16 | None,
    *,
    call_sid: str,
    options: AnalysisOptions | None = None,
    emotion: EmotionScoring | None = None,
) -> dict[str, Any]:
    """``{"turns": [...], "interruptions": [...], "silences": [...], "summary": {...}, "duration_ms"}``; with
    ``emotion``, each turn scored as live (frustration, emotion; per speaker when the options and weights
    say so)."""
    speaker_scorer = None
    if emotion is not None and (options or AnalysisOptions()).speaker_baseline:
        spec = emotion.caller_spec()
        speaker_scorer = (lambda: CallerScorer(spec)) if spec is not None else None
    model = emotion

    def scores(audio: list[Int16]) -> list[dict[str, Any] | None]:
        assert model is not None
        return list(model.score_with_logits(list(audio)))

    score = scores if model is not None else None
    events, summary = analyze(caller, agent, options, score=score, speaker_scorer=speaker_scorer)
    pick = {TURN_ENDED: "turns", INTERRUPTION: "interruptions", SILENCE: "silences"}
    out: dict[str, Any] = {name: [] for name in pick.values()}
    for event in events:
        if event.type in pick:
            out[pick[event.type]].append({"call_sid": call_sid, **event.data})
    out["summary"] = summary.to_json()
    out["duration_ms"] = max(len(caller), len(agent) if agent is not None else 0) // 8
    return out


def transcribe_turns(
    result: dict[str, Any], caller: Int16, agent: Int16 | None, recognise: Recogniser, *, redact: bool = True
) -> None:
    """Add each turn's words (``engine.transcript.fields``), as the live path does: every turn's audio packed
    into recogniser windows (``engine.asr.transcribe``)."""
    tracks = {"inbound": caller, "outbound": agent}
    clips = []
    for turn in result["turns"]:
        pcm = tracks.get(turn["track"])
        if pcm is not None:
            clips.append(Clip(turn["turn_id"], upsample(pcm[turn["start_ms"] * 8 : turn["end_ms"] * 8])))
    words = transcribe(recognise, clips)
    for turn in result["turns"]:
        turn.update(
            transcript.fields(words.get(turn["turn_id"], []), start_ms=turn["start_ms"], source="asr", redact=redact)
        )


def render_table(result: dict[str, Any]) -> str:
    """A readable table of the turns, then the interruptions, silences and summary."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{'#':>3} {'speaker':<7} {'start':>8} {'end':>8} {'dur s':>6} {'gap ms':>7} {'reply ms':>8} "
        f"{'pitch Hz':>8} {'pitch z':>7} {'dB':>6} {'dB z':>5} {'syl/s':>5} {'frust':>5} {'emotion':<8}  flags"
    ]
    for t in result["turns"]:
        f = t["features"]
        flags = [
            name
            for name, on in (
                ("backchannel", t["backchannel"]),
                ("interrupts", t["interrupted_other"]),
                ("interrupted", t["interrupted_by_other"]),
            )
            if on
        ]
        lines.append(
            f"{t['turn_id']:>3} {t['speaker']:<7} {_clock(t['start_ms']):>8} {_clock(t['end_ms']):>8} "
            f"{t['duration_ms'] / 1000:>6.1f} {num(t['gap_before_ms'], 'd'):>7} "
            f"{num(t['response_latency_ms'], 'd'):>8} "
            f"{num(f['pitch_mean_hz'], '.0f'):>8} {num(f['pitch_z'], '+.1f'):>7} {num(f['energy_db'], '.1f'):>6} "
            f"{num(f['energy_z'], '+.1f'):>5} {num(f['speaking_rate'], '.1f'):>5} {num(t['frustration'], '.2f'):>5} "
            f"{(t['emotion'] or {}).get('label', '-'):<8}  {' '.join(flags)}"
        )
    for t in result["turns"]:
        if t.get("text"):
            lines.append(f"{t['turn_id']:>3} {t['speaker']:<7} {t['text']}")
    for i in result["interruptions"]:
        lines.append(f"interruption: the {i['by']} at {_clock(i['at_ms'])}, {i['overlap_ms']} ms over")
    for s in result["silences"]:
        lines.append(f"silence: {_clock(s['start_ms'])} - {_clock(s['end_ms'])} ({s['duration_ms'] / 1000:.1f} s)")
    s = result["summary"]
    lines.append(
        f"summary: {s['turns']} turns in {result['duration_ms'] / 1000:.1f} s; talk caller "
        f"{s['talk_ms']['caller'] / 1000:.1f} s, agent {s['talk_ms']['agent'] / 1000:.1f} s; interruptions "
        f"caller {s['interruptions']['caller']}, agent {s['interruptions']['agent']}; silence "
        f"{s['silence_ms'] / 1000:.1f} s in {s['silences']}"
    )
    return "\n".join(lines)


def _clock(ms: int) -> str:
    return f"{ms // 60000}:{ms % 60000 / 1000:06.3f}"
