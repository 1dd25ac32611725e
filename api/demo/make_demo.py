"""Regenerate the bundled demo call (api/demo/{inbound,outbound}.wav) from its script.

Needs espeak-ng and sox (Debian packages); run once by a developer, the WAVs are committed:
    python api/demo/make_demo.py
The call is our own script (Apache-2.0 like the rest of the repo): a caller (inbound, en-gb female)
and an agent (outbound, en-us male), with a barge-in, a 3.5 s dead air and an agitated caller turn,
so every signal Mise computes has something to show. Output: G.711 mu-law, 8 kHz mono, both tracks
the same length, a whole number of 20 ms frames.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

RATE = 22050
HERE = Path(__file__).parent

# (track, start_s, text, espeak extra args)
SCRIPT = [
    ("outbound", 0.5, "Thanks for calling Contoso Internet, this is Alex. How can I help?", []),
    ("inbound", 5.3, "Hi. My internet has been dropping out every evening this week.", []),
    ("outbound", 8.9, "Sorry about that. Let me pull up your line. Can you confirm the postcode on the account?", []),
    ("inbound", 13.4, "It's S W one, A A.", []),
    (
        "outbound",
        15.6,
        "Thanks. I can see some errors on the line. I'm going to run a test now, it takes a moment.",
        [],
    ),
    (
        "inbound",
        24.2,
        "This is the third time I've called! Every time you run a test and nothing changes!",
        ["-a", "190", "-s", "210", "-p", "75"],
    ),
    (
        "outbound",
        28.2,
        "I understand, and I'm sorry. This time I'm booking an engineer visit for tomorrow morning.",
        [],
    ),
    ("inbound", 30.9, "Tomorrow morning works.", []),
    ("outbound", 34.2, "Great. You'll get a text with the time slot. Anything else I can help with?", []),
    ("inbound", 38.6, "No, that's all. Thanks.", []),
]
VOICES = {"inbound": "en-gb+f3", "outbound": "en-us+m3"}


def speak(text: str, voice: str, extra: list[str], tmp: Path) -> np.ndarray:
    out = tmp / "u.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), *extra, text], check=True)
    audio, rate = soundfile.read(out, dtype="float32")
    assert rate == RATE, rate
    loud = np.flatnonzero(np.abs(audio) > 10 ** (-50 / 20))
    return np.asarray(audio[loud[0] : loud[-1] + 1], dtype=np.float32)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        utterances = [(track, start, speak(text, VOICES[track], extra, tmp)) for track, start, text, extra in SCRIPT]
        end_s = max(start + len(u) / RATE for _, start, u in utterances) + 1.0
        frames = int(np.ceil(end_s / 0.02))
        length = int(frames * 0.02 * RATE) + RATE  # a little spare; sox trims to whole frames below
        tracks = {"inbound": np.zeros(length, np.float32), "outbound": np.zeros(length, np.float32)}
        for track, start, u in utterances:
            at = round(start * RATE)
            tracks[track][at : at + len(u)] += u * 0.5
            print(f"{track:8s} {start:6.2f}-{start + len(u) / RATE:6.2f} s")
        for track, audio in tracks.items():
            raw = tmp / f"{track}.wav"
            soundfile.write(raw, audio, RATE, subtype="FLOAT")
            out = HERE / f"{track}.wav"
            subprocess.run(
                [
                    "sox",
                    "-D",
                    str(raw),
                    "-r",
                    "8000",
                    "-c",
                    "1",
                    "-e",
                    "mu-law",
                    "-b",
                    "8",
                    str(out),
                    "sinc",
                    "300-3400",
                    "rate",
                    "8000",
                    "trim",
                    "0",
                    f"{frames * 160}s",
                ],
                check=True,
            )
            print(out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
