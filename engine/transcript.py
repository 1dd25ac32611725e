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
from engine.redact import Token, apply, find


def fields(words: Sequence[Word], *, start_ms: int, source: str, redact: bool = True) -> dict[str, Any]:
    tokens = [Token(w.text, start_ms + w.start_ms, start_ms + w.end_ms) for w in words if w.text]
    confidence = {i: w.confidence for i, w in enumerate(w for w in words if w.text)}
    found = find(tokens) if redact else []
    kept = apply(tokens, found)
    # a kept token is either an original word (its confidence) or a tag (the mean over its stretch)
    confidences, i = [], 0
    by_first = {r.first: r for r in found}
    while i < len(tokens):
        r = by_first.get(i)
        if r is None:
            confidences.append(confidence[i])
            i += 1
        else:
            span = [confidence[j] for j in range(r.first, r.last + 1)]
            confidences.append(sum(span) / len(span))
            i = r.last + 1
    return {
        "text": " ".join(t.text for t in kept),
        "words": [
            {"word": t.text, "start_ms": t.start_ms, "end_ms": t.end_ms, "confidence": round(c, 3)}
            for t, c in zip(kept, confidences, strict=True)
        ],
        "redactions": [{"kind": r.kind, "start_ms": r.start_ms, "end_ms": r.end_ms} for r in found],
        "transcript_source": source,
        "transcript": "done",
    }
