"""Analysing a recorded call on the cluster: one Ray task per call, the live engine offline.

``analyse_recording`` streams both tracks through the same ``CallAnalyzer`` a live call uses
(``engine.pipeline.analyze``), with the emotion scorer actor scoring turns as a host would (each turn as
decided, then per speaker as it leaves), and returns the call's events (each turn.ended with its audio
clip for the transcriber, when the options keep clips) and its figures. Tasks run wherever the cluster
has a free CPU, so imports of many calls use every node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray.actor import ActorHandle

from engine.g711 import SAMPLES_PER_MS, decode_ulaw
from engine.pipeline import AnalysisOptions, analyze


@ray.remote(num_cpus=1, max_retries=1)
def analyse_recording(
    inbound: bytes,
    outbound: bytes | None,
    options: AnalysisOptions,
    scorer: ActorHandle[Any] | None,
) -> dict[str, Any]:
    """``{"events": [CallEvent...], "tracks": {...}, "duration_ms", "summary"}`` of a call from its mu-law tracks."""
    caller = decode_ulaw(inbound)
    agent = decode_ulaw(outbound) if outbound is not None else None
    score = None
    speaker_scorer = None
    if scorer is not None:

        def score(audio: list[npt.NDArray[np.int16]]) -> list[dict[str, Any] | None]:
            return list(ray.get(scorer.score.remote(list(audio))))

        spec: Any = ray.get(scorer.caller_spec.remote()) if options.speaker_baseline else None
        if spec is not None:
            from models.caller import CallerScorer

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
