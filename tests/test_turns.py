"""engine/turns.py: turns, interruptions, backchannels, latency and silence, on known answers."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.frames import TRACKS
from engine.turns import Interruption, Silence, Turn, TurnTracker, track_call
from tests.support import data_path


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def feed(pattern: dict[str, str], **options: int) -> list[object]:
    """Frame flags as strings ('1' speech) per track, 20 ms a character."""
    tracker = TurnTracker(**options)
    events: list[object] = []
    for k in range(max(len(p) for p in pattern.values())):
        events += tracker.push({t: p[k] == "1" if k < len(p) else False for t, p in pattern.items()})
    return events + tracker.flush()


def test_pauses_shorter_than_the_hold_stay_in_one_turn() -> None:
    # 1 s speech, 300 ms pause, 1 s speech: one turn with hold 500 ms, two with hold 200 ms.
    inbound = "1" * 50 + "0" * 15 + "1" * 50 + "0" * 40
    one = [e for e in feed({"inbound": inbound, "outbound": ""}) if isinstance(e, Turn)]
    assert [(t.start_ms, t.end_ms) for t in one] == [(0, 2300)]
    two = [e for e in feed({"inbound": inbound, "outbound": ""}, hold_ms=200) if isinstance(e, Turn)]
    assert [(t.start_ms, t.end_ms) for t in two] == [(0, 1000), (1300, 2300)]


def test_blips_are_dropped_and_backchannels_are_not_interruptions() -> None:
    events = feed({"outbound": "1" * 150 + "0" * 40, "inbound": "0" * 40 + "1" * 20 + "0" * 40 + "11" + "0" * 100})
    turns = [e for e in events if isinstance(e, Turn)]
    assert len(turns) == 2  # the agent's 3 s turn and the caller's 400 ms "mm-hmm"; the 40 ms blip is dropped
    mm = next(t for t in turns if t.track == "inbound")
    agent = next(t for t in turns if t.track == "outbound")
    assert mm.backchannel and not mm.interrupted_other and mm.overlap_ms == 400
    assert not agent.interrupted_by_other
    assert not [e for e in events if isinstance(e, Interruption)]


def test_barge_in_and_silence() -> None:
    # Agent speaks 0-3 s; caller barges in at 2 s until 5 s; 4 s of nobody; agent answers at 9 s.
    events = feed({"outbound": "1" * 150 + "0" * 300 + "1" * 50 + "0" * 30, "inbound": "0" * 100 + "1" * 150})
    turns = {(t.track, t.start_ms): t for t in events if isinstance(t, Turn)}
    caller, agent, answer = turns[("inbound", 2000)], turns[("outbound", 0)], turns[("outbound", 9000)]
    assert caller.interrupted_other and caller.overlap_ms == 1000 and caller.response_latency_ms is None
    assert agent.interrupted_by_other and not agent.interrupted_other
    assert answer.response_latency_ms == 4000 and answer.gap_before_ms == 4000
    assert [e for e in events if isinstance(e, Interruption)] == [Interruption("inbound", 2000, 1000, caller.turn_id)]
    assert [e for e in events if isinstance(e, Silence)] == [Silence(5000, 9000)]


def test_the_scripted_call() -> None:
    """synthetic_dialogue: exact ground truth (turns.csv and its README)."""
    call = data_path("calls/synthetic_dialogue/turns.csv").parent
    inbound, outbound = (soundfile.read(call / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound"))
    events = track_call(inbound, outbound)
    turns = [e for e in events if isinstance(e, Turn)]
    script = rows(call / "turns.csv")
    assert len(turns) == len(script) == 10
    for turn, row in zip(sorted(turns, key=lambda t: t.start_ms), script, strict=True):
        assert turn.track == row["track"]
        assert abs(turn.start_ms - float(row["start_s"]) * 1000) <= 150, (turn, row)
        assert abs(turn.end_ms - float(row["end_s"]) * 1000) <= 150, (turn, row)
    barge_ins = [e for e in events if isinstance(e, Interruption)]
    assert [(e.by, round(e.at_ms / 1000, 1)) for e in barge_ins] == [("inbound", 17.8), ("inbound", 41.5)]
    silences = [e for e in events if isinstance(e, Silence)]
    assert len(silences) == 1 and abs(silences[0].duration_ms - 4000) <= 150
    answer = next(t for t in turns if abs(t.start_ms - 23394) <= 150)
    assert answer.response_latency_ms is not None and abs(answer.response_latency_ms - 2500) <= 150
    assert [t.turn_id for t in turns] == list(range(10))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    frames=st.integers(0, 400),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    speechy=st.floats(0.05, 0.95),
)
def test_blocks_decide_what_frames_decide(seed: int, frames: int, cuts: list[int], speechy: float) -> None:
    """``push_block`` cut anywhere: the same events, at the same frames, and the same open turn after every
    frame, as one frame at a time (random runs of speech on both tracks, so turns overlap, interrupt and
    leave silences)."""
    rng = np.random.default_rng(seed)
    runs = {t: np.repeat(rng.random(frames) < speechy, rng.integers(1, 60, frames))[:frames] for t in TRACKS}
    options = {"hold_ms": 200, "silence_ms": 600, "min_turn_ms": 60}
    one, expected = TurnTracker(**options), []
    for k in range(frames):
        events = one.push({t: bool(runs[t][k]) for t in TRACKS})
        expected.append((events, {t: one.open_start_ms(t) for t in TRACKS}))
    blocks, got = TurnTracker(**options), []
    bounds = [0, *sorted(min(c, frames) for c in cuts), frames]
    for lo, hi in itertools.pairwise(bounds):
        decided, opens = blocks.push_block({t: runs[t][lo:hi].astype(np.uint8) for t in TRACKS})
        for i in range(hi - lo):
            got.append((decided.get(i, []), {t: None if opens[t][i] < 0 else opens[t][i] * 20 for t in TRACKS}))
    assert got == expected
    assert one.flush() == blocks.flush()
