"""Analysing a recorded call on the cluster: one Ray task per call, the live engine offline.

``analyse_recording`` streams both tracks through the same ``CallAnalyzer`` a live call uses
(``engine.pipeline.analyze``), with the emotion model scoring turns as a host does (each turn as decided,
then per speaker as it leaves), and returns the call's events (each turn.ended with its audio
clip for the transcriber, when the options keep clips) and its figures. Tasks run wherever the cluster
has a free CPU, so imports of many calls use every node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import ray

from engine.g711 import SAMPLES_PER_MS, decode_ulaw
from engine.pipeline import AnalysisOptions, analyze
from models.caller import CallerScorer
from models.scoring import EmotionScoring


@ray.remote(num_cpus=1, max_retries=1)
def analyse_recording(
    inbound: bytes,
    outbound: bytes | None,
    options: AnalysisOptions,
    emotion: EmotionScoring | None,
) -> dict[str, Any]:
    """``{"events": [CallEvent...], "tracks": {...}, "duration_ms", "summary"}`` of a call from its mu-law tracks."""
    caller = decode_ulaw(inbound)
    agent = decode_ulaw(outbound) if outbound is not None else None
    score = None
    speaker_scorer = None
    if emotion is not None:
        model = emotion

        def score(audio: list[npt.NDArray[np.int16]]) -> list[dict[str, Any] | None]:
            return list(model.score_with_logits(list(audio)))

        spec = model.caller_spec() if options.speaker_baseline else None
        if spec is not None:
            speaker_scorer = lambda: CallerScorer(spec)  # noqa: E731
    events, summary = analyze(caller, agent, options, score=score, speaker_scorer=speaker_scorer)
    tracks = {"inbound": len(caller), "outbound": 0 if agent is None else len(agent)}
    return {
        "events": events,
        "tracks": {
            track: {
                "duration_ms": n / SAMPLES_PER_MS,
                "received_ms": n / SAMPLES_PER_MS,
                "missing_ms": 0.0,
                "frames": n // (20 * SAMPLES_PER_MS),
                "duplicate_frames": 0,
                "late_frames": 0,
                "late_for_analysis_ms": 0,
            }
            for track, n in tracks.items()
        },
        "duration_ms": max(tracks.values()) // SAMPLES_PER_MS,
        "summary": summary.to_json(),
    }
