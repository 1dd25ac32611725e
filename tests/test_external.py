"""engine/external.py: posted transcript segments checked, redacted and matched to turns (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from engine import external


def turn(turn_id: int, track: str, start: int, end: int) -> dict[str, Any]:
    return {"turn_id": turn_id, "track": track, "start_ms": start, "end_ms": end}


def seg(track: str, start: int, end: int, text: str, **kw: Any) -> dict[str, Any]:
    return external.parse({"segments": [{"track": track, "start_ms": start, "end_ms": end, "text": text, **kw}]})[0]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, '{"segments": [...]}'),
        ({"segments": []}, "1 to 1000"),
        ({"segments": [{"speaker": "bot", "start_ms": 0, "end_ms": 1, "text": ""}]}, "segments[0]: give track"),
        ({"segments": [{"track": "inbound", "start_ms": -1, "end_ms": 1, "text": ""}]}, "segments[0].start_ms"),
        ({"segments": [{"track": "inbound", "start_ms": 9, "end_ms": 1, "text": ""}]}, "before start_ms"),
        ({"segments": [{"track": "inbound", "start_ms": 0, "end_ms": 1, "text": 5}]}, "segments[0].text"),
        ({"segments": [{"track": "inbound", "start_ms": 0, "end_ms": 1, "text": "a", "words": [{}]}]}, "words[0]"),
        (
            {"segments": [{"track": "inbound", "start_ms": 0, "end_ms": 9, "text": "a",
                           "words": [{"word": "a", "start_ms": 0, "end_ms": 9, "confidence": 2}]}]},
            "confidence",
        ),
    ],
)  # fmt: skip
def test_bad_segments_are_refused_naming_the_problem(body: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        external.parse(body)


def test_a_segment_has_the_same_id_when_posted_again_and_speaker_names_its_track() -> None:
    a = seg("inbound", 0, 900, "hello there")
    b = external.parse({"segments": [{"speaker": "caller", "start_ms": 0, "end_ms": 900, "text": "hello there"}]})[0]
    assert a == b and a["track"] == "inbound"
    assert seg("inbound", 0, 900, "hello", id="s-1")["id"] == "s-1"


def test_segments_go_to_the_turn_of_their_track_they_overlap_most() -> None:
    turns = [turn(0, "outbound", 0, 4000), turn(1, "inbound", 3500, 6000), turn(2, "inbound", 6500, 9000)]
    segments = [
        seg("inbound", 5000, 7000, "mostly the second"),  # 1000 ms in turn 1, 500 in turn 2
        seg("inbound", 3000, 3600, "edge"),  # only inbound turn 1 (turn 0 is the other track)
        seg("outbound", 100, 900, "agent"),
        seg("inbound", 9000, 9500, "after"),  # touches turn 2 only: waits for a turn
    ]
    matched = external.match(turns, segments)
    assert {k: [s["text"] for s in v] for k, v in matched.items()} == {
        1: ["mostly the second", "edge"],
        0: ["agent"],
    }


def test_kept_segments_hold_redacted_words_only_and_turns_join_them_in_time_order() -> None:
    card = external.redacted(seg("inbound", 1000, 3000, "it's 4539 1488 0343 6467 thanks"))
    assert "text" not in card and [w["word"] for w in card["words"]] == ["it's", "[card number]", "thanks"]
    assert card["redactions"][0]["kind"] == "card number"
    assert 1000 <= card["redactions"][0]["start_ms"] < card["redactions"][0]["end_ms"] <= 3000
    # Read out across two segments: caught when the turn's words are joined.
    a = external.redacted(seg("inbound", 4000, 5000, "four five three nine one four eight eight"))
    b = external.redacted(seg("inbound", 5000, 6000, "zero three four three six four six seven"))
    assert a["redactions"] == b["redactions"] == []
    fields = external.turn_fields([b, card, a])
    assert fields["text"] == "it's [card number] thanks [card number]"
    assert [r["kind"] for r in fields["redactions"]] == ["card number", "card number"]
    assert fields["transcript_source"] == "external" and fields["transcript"] == "done"
    starts = [w["start_ms"] for w in fields["words"]]
    assert starts == sorted(starts)


def test_given_word_times_are_kept() -> None:
    words = [
        {"word": "yes", "start_ms": 100, "end_ms": 300, "confidence": 0.9},
        {"word": "please", "start_ms": 350, "end_ms": 700},
    ]
    kept = external.redacted(seg("outbound", 0, 800, "yes please", words=words))
    assert kept["words"] == [
        {"word": "yes", "start_ms": 100, "end_ms": 300, "confidence": 0.9},
        {"word": "please", "start_ms": 350, "end_ms": 700, "confidence": 0.0},
    ]


def test_a_segment_naming_its_stream_matches_that_streams_turns_only() -> None:
    turns = [turn(0, "inbound", 1000, 3000) | {"stream_sid": "MZ1"}]
    turns += [turn(4, "inbound", 1000, 2500) | {"stream_sid": "MZ2"}]  # the call's second stream: its own clock
    first = seg("inbound", 1000, 2500, "hello", stream_sid="MZ1")
    second = seg("inbound", 1000, 2500, "hello", stream_sid="MZ2")
    assert first["id"] != second["id"]
    assert external.match(turns, [external.redacted(first), external.redacted(second)]) == {
        0: [external.redacted(first)],
        4: [external.redacted(second)],
    }
