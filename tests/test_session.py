"""StreamSession: which frames fit where in a Media Stream's life."""

from __future__ import annotations

from engine.frames import Connected, Dtmf, Mark, Media, Reason, Rejected, Start, Stop
from engine.session import Phase, StreamSession

START = Start(1, "MZ1", "AC1", "CA1", ("inbound", "outbound"), {})


def media(chunk: int, track: str = "inbound", stream: str = "MZ1") -> Media:
    return Media(chunk + 1, stream, track, chunk, (chunk - 1) * 20, b"\xff" * 160)


def test_the_normal_life_of_a_stream() -> None:
    s = StreamSession()
    assert s.accept(Connected("Call", "1.0.0")) == Connected("Call", "1.0.0")
    assert s.accept(START) is START and s.phase is Phase.LIVE
    assert isinstance(s.accept(media(1)), Media)
    assert isinstance(s.accept(media(1, "outbound")), Media)  # chunks count per track
    assert isinstance(s.accept(Dtmf(3, "MZ1", "inbound", "5")), Dtmf)
    assert isinstance(s.accept(Mark(4, "MZ1", "m")), Mark)
    assert isinstance(s.accept(Stop(5, "MZ1", "AC1", "CA1")), Stop) and s.phase is Phase.STOPPED


def reason(s: StreamSession, frame: object) -> Reason:
    out = s.accept(frame)  # type: ignore[arg-type]
    assert isinstance(out, Rejected), out
    return out.reason


def test_refusals() -> None:
    s = StreamSession()
    assert reason(s, media(1)) is Reason.MEDIA_BEFORE_START
    assert reason(s, Stop(2, "MZ1", "AC1", "CA1")) is Reason.MEDIA_BEFORE_START
    s.accept(START)
    assert reason(s, START) is Reason.DUPLICATE_START
    s.accept(media(1))
    assert reason(s, media(1)) is Reason.DUPLICATE_CHUNK
    assert reason(s, media(2, stream="MZ-other")) is Reason.STREAM_MISMATCH
    s.accept(Stop(9, "MZ1", "AC1", "CA1"))
    assert reason(s, media(3)) is Reason.AFTER_STOP


def test_refuse_media_checks_a_media_frame_from_its_fields_as_accept_does() -> None:
    """What the socket's decoded media messages go through (api/ingest.py): accept's verdicts, from the fields."""

    def verdict(s: StreamSession, chunk: int, stream: str = "MZ1") -> Reason | None:
        refused = s.refuse_media(stream, "inbound", chunk)
        return None if refused is None else refused.reason

    s = StreamSession()
    assert verdict(s, 1) is Reason.MEDIA_BEFORE_START
    s.accept(START)
    assert verdict(s, 1) is None
    assert verdict(s, 1) is Reason.DUPLICATE_CHUNK
    assert reason(s, media(1)) is Reason.DUPLICATE_CHUNK  # one memory of the chunks for both
    assert verdict(s, 2, stream="MZ-other") is Reason.STREAM_MISMATCH
    assert verdict(s, 2, stream="") is None  # no streamSid: this stream's
    s.accept(Stop(9, "MZ1", "AC1", "CA1"))
    assert verdict(s, 3) is Reason.AFTER_STOP


def test_out_of_order_chunks_are_not_duplicates_and_memory_stays_bounded() -> None:
    s = StreamSession()
    s.accept(START)
    for chunk in [3, 1, 2, *range(4, 20_000)]:
        assert isinstance(s.accept(media(chunk)), Media)
    assert reason(s, media(19_999)) is Reason.DUPLICATE_CHUNK
    assert len(s._chunks["inbound"].seen) <= 2 * 4096 + 1


def test_a_huge_first_chunk_does_not_make_memory_grow() -> None:
    s = StreamSession()
    s.accept(START)
    s.accept(media(10**9))
    for chunk in range(1, 20_000):
        s.accept(media(chunk))
    assert len(s._chunks["inbound"].seen) <= 2 * 4096
