"""The per-call analysis pipeline: both tracks' ring buffers in, call events out.

    rings -> 20 ms frames (a settle lag behind the newest audio) -> CallVad -> TurnTracker
          -> per finished turn: prosody features + speaker z-scores -> CallEvent

``CallAnalyzer.advance(rings)`` analyses every frame that has *settled*: frames more than
``settle_ms`` older than the newest audio of either track. Audio is placed in the rings by Twilio
timestamp, so a frame that arrives up to ``settle_ms`` late (network jitter, tracks delivered out of
step) is still analysed in its place; a frame later than that is still stored, but the analysis has
already taken its slot as silence (``late_ms``). A track that carries no
audio at all (a one-track stream) reads as silence.

Time is the stream clock only (frame k covers [20 k, 20 k + 20) ms); the wall clock never enters, so
the same audio always gives the same events. The end-of-turn decision comes ``hold_ms`` after the
speech ends (in stream time) plus the settle lag; the event carries ``at_ms``, the stream time of
that decision.

Deciding and measuring are apart. Deciding a turn (VAD, tracker) costs microseconds per frame;
measuring it (prosody, z-scores) costs milliseconds per second of turn. A decided turn becomes a
``PendingTurn`` (``engine.pending``) that holds a copy of its audio, at most the last ``feature_max_s`` of
it (longer turns: ``features_window_ms`` says what was measured). Its ``turn.ended`` leaves once it is measured (or
skipped). Events leave strictly in decision order: ``release()`` hands out the longest prefix that is
ready, so an interruption decided after a turn never overtakes it. With ``measure_inline`` (offline,
tests) ``advance`` measures at once; a live host sets it False and runs ``PendingTurn.measure`` off
the audio path (``take_pending``), in decision order per call, because the speaker baselines are
updated in that order. Live, most of a turn's measuring is done before it ends: while a track holds the
floor its speech so far is fed to a ``PitchStream`` (``_follow``), whose per-frame pitch analysis (~90% of the
cost) the host runs between turns (``streams``); the turn's measurement then reuses those frames and
only chooses the path and measures the voice (exactly the same features, ~3x sooner).

Bounded: the pipeline keeps O(1) state per call (the tracker remembers a few turns; baselines are
running sums) plus the turns not yet measured, which the host bounds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.events import FRUSTRATION_ALERT, INTERRUPTION, SILENCE, TURN_STARTED, CallEvent
from engine.frames import SPEAKER_OF_TRACK, TRACKS
from engine.g711 import SAMPLES_PER_MS
from engine.pending import PendingTurn, TurnScorer
from engine.pitch import PitchStream
from engine.prosody import FEATURE_KEYS, RELATIVE_KEYS, SpeakerBaseline
from engine.ring import RingBuffer
from engine.summary import CallSummary
from engine.turns import Interruption, Silence, Turn, TurnTracker
from engine.vad import FRAME, FRAME_MS, CallVad

MAX_FRAMES_PER_STEP = 3000  # 60 s of audio: a bigger jump is caught up over several steps


@dataclass(frozen=True)
class AnalysisOptions:
    hold_ms: int = 500  # pauses shorter than this stay inside a turn
    min_turn_ms: int = 120  # shorter bursts are blips, not turns
    backchannel_max_ms: int = 1000
    min_overlap_ms: int = 200  # overlap needed for an interruption
    silence_ms: int = 3000  # dead air at least this long is a `silence` event
    settle_ms: int = 60  # analyse frames this far behind the newest audio (jitter allowance)
    step_ms: int = 100  # ... once at least this much is ready: each step has a fixed cost, whatever its length
    feature_max_s: float = 6.0  # prosody of at most this much of a turn (its end): bounds a decision's cost
    alert_on: float = 0.7  # a caller turn this frustrated (or more) opens an episode: one frustration.alert
    alert_off: float = 0.4  # the episode closes at a caller turn below this (hysteresis)
    ema_alpha: float = 0.3  # weight of the newest caller turn in the call's running frustration (tension arc)
    speaker_baseline: bool = True  # emotion scores relative to each speaker's voice, learned from their turns
    clip_max_s: float = 0.0  # > 0: a turn's event carries up to this much of its audio for the transcriber

    def tracker(self) -> TurnTracker:
        return TurnTracker(
            hold_ms=self.hold_ms,
            min_turn_ms=self.min_turn_ms,
            backchannel_max_ms=self.backchannel_max_ms,
            min_overlap_ms=self.min_overlap_ms,
            silence_ms=self.silence_ms,
        )


class CallAnalyzer:
    """One call's analysis state. Not thread-safe: one thread at a time, except ``PendingTurn.measure``."""

    def __init__(
        self,
        options: AnalysisOptions | None = None,
        *,
        measure_inline: bool = True,
        scores: bool = False,
        speaker_scorer: Callable[[], TurnScorer] | None = None,
    ) -> None:
        self.options = options or AnalysisOptions()
        self._inline = measure_inline
        self._scores = scores  # turns wait for the emotion model's scores (``PendingTurn.set_scores``)
        # Per speaker, made on first use: their turns are scored again, in order, as they leave (``release``).
        self._speaker_scorer = speaker_scorer
        self._speaker_scorers: dict[str, TurnScorer] = {}
        self._alerting = False  # inside a frustration episode of the caller
        # Decided, not yet released, in order. Sequence numbers are given as events leave (``release``).
        self._outbox: deque[tuple[str, int, dict[str, Any]] | PendingTurn] = deque()
        self._new: list[PendingTurn] = []  # pending turns not yet handed to ``take_pending``
        self._vad = CallVad()
        self._tracker = self.options.tracker()
        self._baselines = {track: SpeakerBaseline() for track in TRACKS}
        self._next = 0  # next frame to analyse
        self._seq = 0
        self._started: dict[str, int | None] = dict.fromkeys(TRACKS)  # announced open turn starts
        # Live (not inline): each track's pitch frames, analysed off the audio path while a turn is open.
        self._streams: dict[str, PitchStream | None] = dict.fromkeys(TRACKS)
        self._last_end_ms = 0  # end of the latest turn of anyone
        self.summary = CallSummary()
        self._arrived_analysed: dict[str, int] = dict.fromkeys(TRACKS, 0)  # samples there when analysed

    @property
    def analysed_ms(self) -> int:
        return self._next * FRAME_MS

    def advance(self, rings: Mapping[str, RingBuffer]) -> list[CallEvent]:
        """Analyse the frames that have settled (at most ``MAX_FRAMES_PER_STEP``); the events ready to leave."""
        head = max(ring.head for ring in rings.values())
        ready = max(0, head - self.options.settle_ms * SAMPLES_PER_MS) // FRAME
        if (ready - self._next) * FRAME_MS >= self.options.step_ms:
            self._run(rings, min(ready, self._next + MAX_FRAMES_PER_STEP))
        return self.release()

    def finish(self, rings: Mapping[str, RingBuffer]) -> list[CallEvent]:
        """The stream ended: analyse everything left, close open turns, report trailing dead air. Returns
        the events ready to leave; with ``measure_inline=False`` the rest follow ``release()`` once the
        pending turns are measured."""
        head = max(ring.head for ring in rings.values())
        while self._next < head // FRAME:
            self._run(rings, min(head // FRAME, self._next + MAX_FRAMES_PER_STEP))
        self._decided(rings, self._tracker.flush())
        end_ms = self._next * FRAME_MS
        if end_ms - self._last_end_ms >= self.options.silence_ms:
            self._decided(rings, [Silence(self._last_end_ms, end_ms)])
        return self.release()

    def continue_from(self, seq: int, turn_id: int) -> None:
        """Number this call's events from ``seq`` and its turns from ``turn_id``: the call went on from
        another host (failover) whose numbers reached there."""
        self._seq = max(self._seq, seq)
        self._tracker.continue_from(turn_id)

    def note(self, kind: str, data: dict[str, Any]) -> None:
        """An event from outside the analysis (the call's start and end) in the call's event sequence."""
        self._emit(kind, data)

    def take_pending(self) -> list[PendingTurn]:
        """Turns decided since the last call that still need measuring, in decision order."""
        if not self._new:  # the common case, every push: no new list
            return []
        new, self._new = self._new, []
        return new

    def release(self) -> list[CallEvent]:
        """The decided events that can leave now: everything before the first turn not yet measured."""
        out: list[CallEvent] = []
        while self._outbox:
            head = self._outbox[0]
            if isinstance(head, PendingTurn):
                if not head.done:
                    break
                if self._speaker_scorer is not None:
                    if head.track not in self._speaker_scorers:
                        self._speaker_scorers[head.track] = self._speaker_scorer()
                    head.rescore(self._speaker_scorers[head.track])
                out.append(head.event(self._next_seq()))
                out += self._frustration(head)
            else:
                kind, at_ms, data = head
                out.append(CallEvent(kind, self._next_seq(), at_ms, data))
            self._outbox.popleft()
        return out

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _frustration(self, turn: PendingTurn) -> list[CallEvent]:
        """The caller's tension arc, and one ``frustration.alert`` per episode (hysteresis)."""
        f = turn.frustration
        if f is None or turn.speaker != "caller":
            return []
        self.summary.count_frustration(f, self.options.ema_alpha)
        if self._alerting:
            self._alerting = f >= self.options.alert_off
            return []
        if f < self.options.alert_on:
            return []
        self._alerting = True
        self.summary.frustration_alerts += 1
        data = {
            "speaker": turn.speaker,
            "track": turn.track,
            "turn_id": turn.turn_id,
            "frustration": f,
            "frustration_ema": self.summary.frustration_ema,
            "threshold": self.options.alert_on,
        }
        return [CallEvent(FRUSTRATION_ALERT, self._next_seq(), turn.at_ms, data)]

    @property
    def unreleased(self) -> int:
        """Events decided but held back behind a turn not yet measured."""
        return len(self._outbox)

    def _run(self, rings: Mapping[str, RingBuffer], until: int) -> None:
        self._skip_gap(rings, until)
        if until <= self._next:
            return
        start, end = self._next * FRAME, until * FRAME
        blocks = {track: _read(rings[track], start, end) for track in TRACKS}
        for track in TRACKS:
            ring = rings[track]
            lo, hi = max(start, ring.oldest), min(end, ring.head)
            if hi > lo:
                self._arrived_analysed[track] += ring.arrived_count(lo, hi)
        decided, opens = self._tracker.push_block(self._vad.decide(blocks))
        # Tracks with a turn open in the block, or announced before it: only they can announce or forget one.
        turning = [
            (track, opens[track]) for track in TRACKS if self._started[track] is not None or max(opens[track]) >= 0
        ]
        first = self._next
        for i in range(until - first):  # what each frame decided, at that frame's time
            self._next = first + i + 1
            if i in decided:
                self._decided(rings, decided[i])
            if turning:
                self._announce_starts([(track, starts[i]) for track, starts in turning])
        if not self._inline:  # once per step: a turn's end is decided hold_ms after its audio, fed by then
            self._follow(rings)

    def _follow(self, rings: Mapping[str, RingBuffer]) -> None:
        """Feed the audio of each track holding the floor to its ``PitchStream``, from the turn's start to the
        end of its latest speech: the turn ends there unless the track speaks again, so the hold after it
        (and a pause, until speech resumes and it joins the turn) is not analysed for nothing."""
        for track in TRACKS:
            open_ms, speech_end_ms = self._tracker.open_start_ms(track), self._tracker.open_speech_end_ms(track)
            if open_ms is None or speech_end_ms is None:
                continue
            end = min(self._next * FRAME, speech_end_ms * SAMPLES_PER_MS)
            start, stream = open_ms * SAMPLES_PER_MS, self._streams[track]
            if stream is None or stream.end < start:  # a new turn: a stream of its own from its start
                keep_s = self.options.feature_max_s + (self.options.hold_ms + self.options.settle_ms) / 1000 + 1.0
                stream = self._streams[track] = PitchStream(start, keep_s=keep_s)
            if not stream.dead and stream.end < end:
                stream.feed(_read(rings[track], stream.end, end))

    def streams(self, behind: int = 1) -> list[PitchStream]:
        """The tracks' pitch streams with at least ``behind`` frames to analyse (``PitchStream.catch_up``), and
        those with any whose track has gone quiet: its turn ends there unless it speaks again within the hold,
        and its measurement will want those frames then."""
        now = self._next * FRAME
        return [
            s
            for s in self._streams.values()
            if s is not None and not s.dead and (s.behind >= behind or (s.end < now and s.behind > 0))
        ]

    def _skip_gap(self, rings: Mapping[str, RingBuffer], until: int) -> None:
        """Jump over audio that is certainly silence on both tracks (no longer held, or never sent),
        instead of analysing it frame by frame: a timestamp jump of hours costs nothing."""
        if not (self._vad.idle and self._tracker.idle):
            return
        silent_until = until
        for ring in rings.values():
            held_from = ring.oldest if ring.head > self._next * FRAME else until * FRAME
            silent_until = min(silent_until, held_from // FRAME)
        if silent_until - self._next > 1:
            self._vad.skip(silent_until - self._next)
            self._tracker.skip(silent_until - self._next)
            self._next = silent_until

    def late_ms(self, rings: Mapping[str, RingBuffer]) -> dict[str, float]:
        """Per track, audio that reached the ring after its slot was analysed (as silence)."""
        out: dict[str, float] = {}
        for track in TRACKS:
            ring = rings[track]
            lo = max(self._next * FRAME, ring.oldest)
            pending = ring.arrived_count(lo, ring.head) if ring.head > lo else 0
            out[track] = (ring.received - pending - self._arrived_analysed[track]) / SAMPLES_PER_MS
        return out

    def _announce_starts(self, open_starts: list[tuple[str, int]]) -> None:
        """``turn.started`` once an open turn outlasts a blip (so it is a turn, or a backchannel); given each
        track's open turn's first frame now (-1: none)."""
        now_ms = self._next * FRAME_MS
        for track, start_frame in open_starts:
            start = start_frame * FRAME_MS
            if start_frame < 0:
                self._started[track] = None
            elif self._started[track] != start and now_ms - start >= self.options.min_turn_ms:
                self._started[track] = start
                data = {"track": track, "speaker": SPEAKER_OF_TRACK[track], "start_ms": start}
                self._emit(TURN_STARTED, data)

    def _decided(self, rings: Mapping[str, RingBuffer], decided: list[Any]) -> None:
        for item in decided:
            if isinstance(item, Turn):
                self._pend(rings[item.track], item)
                self.summary.count_turn(item)
                self._last_end_ms = max(self._last_end_ms, item.end_ms)
            elif isinstance(item, Interruption):
                speaker = SPEAKER_OF_TRACK[item.by]
                self.summary.interruptions[speaker] += 1
                data = {
                    "by": speaker,
                    "track": item.by,
                    "at_ms": item.at_ms,
                    "overlap_ms": item.overlap_ms,
                    "turn_id": item.turn_id,
                }
                self._emit(INTERRUPTION, data)
            elif isinstance(item, Silence):
                self.summary.count_silence(item.duration_ms)
                data = {"start_ms": item.start_ms, "end_ms": item.end_ms, "duration_ms": item.duration_ms}
                self._emit(SILENCE, data)

    def _pend(self, ring: RingBuffer, turn: Turn) -> None:
        """Queue the turn's ``turn.ended`` with a copy of the audio to measure (the ring moves on)."""
        end = min(turn.end_ms * SAMPLES_PER_MS, ring.head)
        window = int(self.options.feature_max_s * 1000) * SAMPLES_PER_MS
        start = max(turn.start_ms * SAMPLES_PER_MS, end - window, ring.oldest)
        samples = _read(ring, start, end) if end > start else np.zeros(0, np.int16)
        document = self._turn_document(turn, samples.size // SAMPLES_PER_MS)
        clip = None
        if self.options.clip_max_s > 0:
            first = max(turn.start_ms * SAMPLES_PER_MS, end - int(self.options.clip_max_s * 1000) * SAMPLES_PER_MS)
            clip = (first // SAMPLES_PER_MS, _read(ring, first, end) if end > first else np.zeros(0, np.int16))
            document["transcript"] = "pending"  # words follow in turn.transcribed (or it says why not)
        pending = PendingTurn(
            self._next * FRAME_MS,
            document,
            samples,
            self._baselines[turn.track],
            needs_scores=self._scores,
            stream=None if self._inline else self._streams[turn.track],
            at=start,
            clip=clip,
        )
        if self._inline:
            pending.measure()
        else:
            self._new.append(pending)
        self._outbox.append(pending)

    @staticmethod
    def _turn_document(turn: Turn, window_ms: int) -> dict[str, Any]:
        features: dict[str, float | None] = dict.fromkeys(FEATURE_KEYS)
        return {
            "turn_id": turn.turn_id,
            "speaker": turn.speaker,
            "track": turn.track,
            "start_ms": turn.start_ms,
            "end_ms": turn.end_ms,
            "duration_ms": turn.duration_ms,
            "text": None,  # no transcription yet
            "backchannel": turn.backchannel,
            "overlap_ms": turn.overlap_ms,
            "interrupted_other": turn.interrupted_other,
            "interrupted_by_other": turn.interrupted_by_other,
            "gap_before_ms": turn.gap_before_ms,
            "response_latency_ms": turn.response_latency_ms,
            "features": {**features, **dict.fromkeys(RELATIVE_KEYS)},
            "features_window_ms": window_ms,
            "features_skipped": None,  # why a live host left the features out (overload), else None
            "frustration": None,  # the emotion model fills these (issue 4)
            "emotion": None,
        }

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self._outbox.append((kind, self._next * FRAME_MS, data))


def _read(ring: RingBuffer, start: int, end: int) -> npt.NDArray[np.int16]:
    """Samples [start, end) of a ring; what it does not hold (too old, or not yet there) is silence."""
    lo, hi = max(start, ring.oldest), min(end, ring.head)
    if lo == start and hi == end:  # the common case: all of it held
        return ring.read(start, end)
    out = np.zeros(end - start, dtype=np.int16)
    if hi > lo:
        out[lo - start : hi - start] = ring.read(lo, hi)
    return out


def analyze(
    inbound: npt.NDArray[np.int16],
    outbound: npt.NDArray[np.int16] | None = None,
    options: AnalysisOptions | None = None,
    *,
    chunk_ms: int = 1000,
    score: Callable[[list[npt.NDArray[np.int16]]], list[dict[str, Any] | None]] | None = None,
    speaker_scorer: Callable[[], TurnScorer] | None = None,
) -> tuple[list[CallEvent], CallSummary]:
    """Offline: whole tracks (int16, 8 kHz, one clock) through the live path, ``chunk_ms`` at a time. With
    ``score`` (the emotion model's ``score_with_logits``), turns are scored as a live host scores them:
    each turn's audio as it is decided, then measured, and scored again per speaker (``speaker_scorer``)
    as it leaves."""
    tracks = {"inbound": inbound, "outbound": outbound if outbound is not None else np.zeros(0, np.int16)}
    capacity = max(60 * 8000, 2 * chunk_ms * SAMPLES_PER_MS)
    rings = {track: RingBuffer(capacity) for track in TRACKS}
    analyzer = CallAnalyzer(
        options, measure_inline=score is None, scores=score is not None, speaker_scorer=speaker_scorer
    )

    def measured(ready: list[CallEvent]) -> list[CallEvent]:
        if score is None:
            return ready
        pending = analyzer.take_pending()
        if pending:
            for turn, result in zip(pending, score([p.audio for p in pending]), strict=True):
                turn.set_scores(result)
                turn.measure()
        return ready + analyzer.release()

    events: list[CallEvent] = []
    step = chunk_ms * SAMPLES_PER_MS
    for start in range(0, max(len(x) for x in tracks.values()), step):
        for track, x in tracks.items():
            if start < len(x):
                rings[track].write(start, x[start : start + step])
        events += measured(analyzer.advance(rings))
    return events + measured(analyzer.finish(rings)), analyzer.summary
