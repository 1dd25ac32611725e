"""A decided turn waiting for its measurements (``PendingTurn``): prosody of its audio, the speaker's z-scores
and, live, the emotion model's scores. ``engine.pipeline`` makes them; a live host measures them off the audio
path (``actors.measurer``), in decision order per call."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from engine.events import TURN_ENDED, CallEvent
from engine.pitch import PitchStream
from engine.prosody import SpeakerBaseline, turn_features


class TurnScorer(Protocol):
    """Scores one speaker's turns in order from the emotion model's raw logits, keeping that speaker's
    state between turns (``models.caller.CallerScorer``: the speaker's voice offset)."""

    def score(self, logits: list[float], n_windows: int) -> dict[str, Any]: ...


class PendingTurn:
    """A decided turn whose ``turn.ended`` waits for its measurements: prosody of its audio and the
    speaker's z-scores, and (``needs_scores``) the emotion model's scores. ``measure`` or ``skip`` it
    once, in decision order per call (the baselines); ``set_scores`` once, from anywhere."""

    __slots__ = (
        "_at",
        "_baseline",
        "_document",
        "_raw",
        "_samples",
        "_scored",
        "_skipped",
        "_stream",
        "at_ms",
        "audio",
        "clip",
        "track",
    )

    def __init__(
        self,
        at_ms: int,
        document: dict[str, Any],
        samples: npt.NDArray[np.int16],
        baseline: SpeakerBaseline,
        *,
        needs_scores: bool = False,
        stream: PitchStream | None = None,
        at: int = 0,
        clip: tuple[int, npt.NDArray[np.int16]] | None = None,
    ) -> None:
        self.at_ms, self.track = at_ms, str(document["track"])
        self.audio = samples  # what is measured and scored (the turn's end, at most feature_max_s)
        self.clip = clip  # the whole turn (at most clip_max_s), for the transcriber; leaves with the event
        self._document = document
        self._samples: npt.NDArray[np.int16] | None = samples
        self._baseline = baseline
        self._skipped: str | None = None
        self._scored = not needs_scores
        self._raw: tuple[list[float], int] | None = None  # the model's raw logits and windows, for ``rescore``
        self._stream, self._at = stream, at  # the track's pitch frames so far; ``samples`` start at sample ``at``

    @property
    def done(self) -> bool:
        return self._samples is None and self._scored

    @property
    def scored(self) -> bool:
        """The emotion model's result (or its absence) is set, or the turn needs none."""
        return self._scored

    @property
    def speaker(self) -> str:
        return str(self._document["speaker"])

    @property
    def turn_id(self) -> int:
        return int(self._document["turn_id"])

    def set_scores(self, result: dict[str, Any] | None) -> None:
        """The emotion model's result for this turn (``EmotionScoring.score``), or None if it has none. A
        result with the model's raw ``logits`` can be scored again for its speaker (``rescore``)."""
        if result is not None:
            self._document["frustration"] = result["frustration"]
            self._document["emotion"] = {
                "label": result["label"],
                "scores": result["scores"],
                "arousal": result["arousal"],
            }
            if "baseline_turns" in result:
                self._document["emotion"]["baseline_turns"] = result["baseline_turns"]
            if result.get("logits") is not None:
                self._raw = (list(result["logits"]), int(result["windows"]))
        self._scored = True

    def rescore(self, scorer: TurnScorer) -> None:
        """Score the turn again from its raw logits with its speaker's state (in turn order, once)."""
        if self._raw is not None:
            raw, self._raw = self._raw, None
            self.set_scores(scorer.score(*raw))

    @property
    def skipped(self) -> str | None:
        """Why the turn went out unmeasured, or None."""
        return self._skipped

    def measure(self) -> None:
        """Prosody and z-scores (milliseconds per second of audio); updates the speaker's baseline."""
        samples = self._samples
        if samples is None:
            return
        if samples.size:
            features = turn_features(samples.astype(np.float64) / 32768.0, stream=self._stream, at=self._at)
            relative = self._baseline.relative(features)
            if not self._document["backchannel"]:  # a speaker's baseline is their turns, not their "mm-hmm"s
                self._baseline.update(features)
            self._document["features"] = {**features, **relative}
        self._stream = None
        self._samples = None  # last: another thread may read ``done`` and send the document at once
        self.audio = np.zeros(0, np.int16)

    def skip(self, reason: str) -> None:
        """Let the turn go out without features (``features_skipped`` says why); its audio is let go."""
        if self._samples is not None:
            self._skipped = reason
            self._document["features_window_ms"] = 0
            self._document["features_skipped"] = reason
            self._stream = None
            self._samples = None  # last, as in ``measure``
            self.audio = np.zeros(0, np.int16)

    def event(self, seq: int) -> CallEvent:
        if not self.done:
            raise RuntimeError(f"turn {self._document['turn_id']} is not measured yet")
        clip, self.clip = self.clip, None
        return CallEvent(TURN_ENDED, seq, self.at_ms, self._document, clip)

    @property
    def frustration(self) -> float | None:
        value = self._document.get("frustration")
        return None if value is None else float(value)
