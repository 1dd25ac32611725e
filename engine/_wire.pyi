# Types of engine/csrc/wire.c: a read's media messages, up to its first other frame.
NEED_MORE: int  # the scan reached the end of the whole frames
OTHER: int  # the frame at the returned offset is not a media message (the caller parses it)
HAND_OVER: int  # the frame at the returned offset goes to websockets' parser (a close, a fragment, ...)

def scan(
    buf: bytes | bytearray, at: int, limit: int, max_message: int
) -> tuple[int, list[tuple[int, str, str, int, int, bytes]], int]: ...
