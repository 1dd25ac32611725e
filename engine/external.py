"""Posted transcripts: segments of a platform's own text (a voice agent's words, its STT), matched to turns.

Pure, no I/O. A segment is ``{"track" or "speaker", "start_ms", "end_ms", "text", "words"?, "id"?,
"stream_sid"?}`` on the clock of the call's turns (ms since its stream started). A call streamed more than
once (a second ``<Start><Stream>``) has a clock per stream: name the stream, or a segment may match either
stream's turns. ``parse`` validates a request's segments (``ValueError`` naming the first problem);
``redacted`` turns one into what may be kept: its words (given, or spread evenly over its span when the
platform has no word times) with card numbers and the like replaced by tags (``engine.redact``) and the
replaced spans. Nothing of the raw text is kept.

``match``: each segment belongs to the turn of its track that it overlaps most (the earlier on a tie; a
segment that overlaps no turn yet waits for one); ``turn_fields`` gives a turn its segments' words in time
order, as ``engine.transcript.fields`` does for the built-in transcriber's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

from engine.asr import Word
from engine.frames import SPEAKER_OF_TRACK
from engine.transcript import fields

MAX_SEGMENTS: Final = 1000  # per request
MAX_TEXT: Final = 10_000  # characters per segment
MAX_MS: Final = 48 * 3600 * 1000
TRACK_OF_SPEAKER: Final = {speaker: track for track, speaker in SPEAKER_OF_TRACK.items()}


def parse(body: Any) -> list[dict[str, Any]]:
    """The segments of a request body ``{"segments": [...]}``, checked: each ``{"id", "track", "start_ms",
    "end_ms", "text", "words"}`` (``words`` None when not given; ``id`` made from the content when not given,
    so a retried request is the same segments)."""
    if not isinstance(body, dict) or not isinstance(body.get("segments"), list):
        raise ValueError('expected {"segments": [...]}')
    raw = body["segments"]
    if not raw or len(raw) > MAX_SEGMENTS:
        raise ValueError(f"segments: give 1 to {MAX_SEGMENTS} per request")
    return [_segment(s, i) for i, s in enumerate(raw)]


def _segment(s: Any, i: int) -> dict[str, Any]:
    where = f"segments[{i}]"
    if not isinstance(s, dict):
        raise ValueError(f"{where}: expected an object")
    track = s.get("track") or TRACK_OF_SPEAKER.get(str(s.get("speaker")))
    if track not in SPEAKER_OF_TRACK:
        raise ValueError(f"{where}: give track (inbound, outbound) or speaker (caller, agent)")
    start, end = _ms(s.get("start_ms"), f"{where}.start_ms"), _ms(s.get("end_ms"), f"{where}.end_ms")
    if end < start:
        raise ValueError(f"{where}: end_ms is before start_ms")
    text = s.get("text")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"{where}.text: expected a string of at most {MAX_TEXT} characters")
    words = None
    if s.get("words") is not None:
        if not isinstance(s["words"], list) or len(s["words"]) > MAX_TEXT:
            raise ValueError(f"{where}.words: expected a list")
        words = [_word(w, f"{where}.words[{j}]") for j, w in enumerate(s["words"])]
    stream_sid = s.get("stream_sid")
    if stream_sid is not None and (not isinstance(stream_sid, str) or not 0 < len(stream_sid) <= 64):
        raise ValueError(f"{where}.stream_sid: expected a stream SID")
    seg_id = s.get("id")
    if seg_id is None:
        seg_id = hashlib.sha1(repr((track, start, end, text, words, stream_sid)).encode()).hexdigest()[:20]
    elif not isinstance(seg_id, str | int) or len(str(seg_id)) > 200:
        raise ValueError(f"{where}.id: expected a string of at most 200 characters")
    out = {"id": str(seg_id), "track": track, "start_ms": start, "end_ms": end, "text": text, "words": words}
    return out | ({"stream_sid": stream_sid} if stream_sid else {})


def _ms(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_MS:
        raise ValueError(f"{where}: expected milliseconds from the call's start (0 to {MAX_MS})")
    return round(value)


def _word(w: Any, where: str) -> dict[str, Any]:
    if not isinstance(w, dict) or not isinstance(w.get("word"), str):
        raise ValueError(f"{where}: expected {{word, start_ms, end_ms, confidence?}}")
    start, end = _ms(w.get("start_ms"), f"{where}.start_ms"), _ms(w.get("end_ms"), f"{where}.end_ms")
    confidence = w.get("confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise ValueError(f"{where}.confidence: expected a number from 0 to 1")
    return {"word": w["word"], "start_ms": start, "end_ms": max(start, end), "confidence": float(confidence)}


def _spoken(segment: dict[str, Any]) -> list[Word]:
    if segment["words"] is not None:
        return [Word(w["word"], w["start_ms"], w["end_ms"], w["confidence"]) for w in segment["words"]]
    texts = segment["text"].split()
    start, end = segment["start_ms"], segment["end_ms"]
    step = (end - start) / max(1, len(texts))
    return [Word(t, round(start + i * step), round(start + (i + 1) * step), 0.0) for i, t in enumerate(texts)]


def redacted(segment: dict[str, Any], *, redact: bool = True) -> dict[str, Any]:
    """What is kept of a parsed segment: its words (redacted) and the spans redacted; no raw text."""
    kept = fields(_spoken(segment), start_ms=0, source="external", redact=redact)
    keys = ["id", "track", "start_ms", "end_ms"] + (["stream_sid"] if "stream_sid" in segment else [])
    out = {k: segment[k] for k in keys}
    return out | {"words": kept["words"], "redactions": kept["redactions"]}


def match(turns: Iterable[dict[str, Any]], segments: Iterable[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Turn id -> its segments (by track, stream if the segment names one, and the most overlap; touching
    counts as none)."""
    by_track: dict[str, list[dict[str, Any]]] = {}
    for turn in sorted(turns, key=lambda t: t["start_ms"]):
        by_track.setdefault(turn["track"], []).append(turn)
    out: dict[int, list[dict[str, Any]]] = {}
    for seg in segments:
        best, best_overlap = None, 0
        stream = seg.get("stream_sid")
        for turn in by_track.get(seg["track"], []):  # in start order: the earlier wins a tie
            if stream is not None and turn.get("stream_sid") != stream:
                continue
            overlap = min(seg["end_ms"], turn["end_ms"]) - max(seg["start_ms"], turn["start_ms"])
            if overlap > best_overlap:
                best, best_overlap = turn, overlap
        if best is not None:
            out.setdefault(int(best["turn_id"]), []).append(seg)
    return out


def turn_fields(segments: Sequence[dict[str, Any]], *, redact: bool = True) -> dict[str, Any]:
    """A turn's transcript fields from its (redacted) segments, in time order. Redaction runs again over
    the joined words: a card number read out across two segments is caught too."""
    ordered = sorted(segments, key=lambda s: (s["start_ms"], s["id"]))
    words = [Word(w["word"], w["start_ms"], w["end_ms"], w["confidence"]) for s in ordered for w in s["words"]]
    out = fields(sorted(words, key=lambda w: w.start_ms), start_ms=0, source="external", redact=redact)
    out["redactions"] = sorted(
        [r for s in ordered for r in s["redactions"]] + out["redactions"], key=lambda r: (r["start_ms"], r["end_ms"])
    )
    return out
