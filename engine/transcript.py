"""A turn's transcript fields, from its words, redacted before anything is stored, indexed or sent.

``fields(words, start_ms=..., source=...)`` gives what a turn carries once its words are known:

- ``text``: the words, redacted (``engine.redact``);
- ``words``: each ``{"word", "start_ms", "end_ms", "confidence"}`` on the call's stream clock (a redacted
  stretch is one word, its tag, spanning the stretch);
- ``redactions``: each ``{"kind", "start_ms", "end_ms"}`` (stream clock), so recordings can be muted over them;
- ``transcript_source``: ``"asr"`` (built in) or ``"external"`` (posted); ``transcript``: ``"done"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.asr import Word
from engine.redact import Token, find, stretches


def fields(words: Sequence[Word], *, start_ms: int, source: str, redact: bool = True) -> dict[str, Any]:
    spoken = [w for w in words if w.text]
    tokens = [Token(w.text, start_ms + w.start_ms, start_ms + w.end_ms) for w in spoken]
    found = find(tokens) if redact else []
    kept = stretches(tokens, found)  # a tag's confidence: the mean over the words it replaced
    confidences = [sum(w.confidence for w in spoken[a : b + 1]) / (b - a + 1) for _, a, b in kept]
    return {
        "text": " ".join(t.text for t, _, _ in kept),
        "words": [
            {"word": t.text, "start_ms": t.start_ms, "end_ms": t.end_ms, "confidence": round(c, 3)}
            for (t, _, _), c in zip(kept, confidences, strict=True)
        ],
        "redactions": [{"kind": r.kind, "start_ms": r.start_ms, "end_ms": r.end_ms} for r in found],
        "transcript_source": source,
        "transcript": "done",
    }
