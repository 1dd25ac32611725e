"""Manifests of labelled clips, label vocabulary and the speaker-independent splits. No torch.

A manifest is a CSV with at least ``path`` (relative to the data root), ``emotion`` and ``speaker``;
``dataset`` (empty means one dataset) and ``gender`` are optional. The shared corpus is
``<root>/emotion/manifest.csv`` with root ``$MISE_TEST_DATA`` (default ``../shared/data`` from the repo).
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from models.audio import SAMPLE_RATE, Audio, as_float

REPO = Path(__file__).resolve().parents[2]  # the checkout: models/training/data.py is three levels down

# Canonical order of the classes the model knows; calm is folded into neutral (both are low-arousal,
# non-negative delivery, and the live question is "is this neutral").
CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")
ALIASES: dict[str, str] = {
    "calm": "neutral",
    "fear": "fearful",
    "anger": "angry",
    "happiness": "happy",
    "sadness": "sad",
}
FOUR = ("neutral", "happy", "sad", "angry")
# Frustration: negative, high-arousal delivery. Of the acted labels only anger is unambiguously both;
# disgust is negative but mostly low-to-mid arousal (contempt) and fear is high-arousal but not
# directed at the listener. MODEL_CARD.md reports the alternative angry+disgust too.
FRUSTRATION = ("angry", "frustrated")
# Arousal of each class on 0..1 (circumplex placement as in Russell 1980); the arousal score is the
# probability-weighted mean. Unknown user labels count as 0.5.
AROUSAL = {
    "neutral": 0.25,
    "happy": 0.75,
    "sad": 0.15,
    "angry": 0.95,
    "fearful": 0.85,
    "disgust": 0.55,
    "surprised": 0.85,
    "boredom": 0.05,
    "frustrated": 0.85,
}

# Speaker-independent split of the shared corpus, balanced by gender. Test speakers are never used for
# training or any choice; validation speakers pick settings and fit the calibration.
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "ravdess": {"test": ("15", "16", "17", "18"), "val": ("11", "12", "13", "14")},
    "emodb": {"test": ("15", "16"), "val": ("12", "14")},
}


def canonical(label: str) -> str:
    label = label.strip().lower()
    return ALIASES.get(label, label)


@dataclass(frozen=True)
class Clip:
    path: str
    dataset: str
    speaker: str
    emotion: str  # canonical
    gender: str = ""  # male / female / "" (unknown): balances the cross-validation folds

    @property
    def split(self) -> str:
        """``test``, ``val`` or ``train`` under SPLITS (speakers of unknown datasets are ``train``)."""
        for name, speakers in SPLITS.get(self.dataset, {}).items():
            if self.speaker in speakers:
                return name
        return "train"


def default_root() -> Path:
    return Path(os.environ.get("MISE_TEST_DATA", REPO.parent / "shared" / "data"))


def corpus_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``--manifest`` and ``--root`` flags every training and evaluation command takes."""
    ap.add_argument("--manifest", type=Path, default=None, help="CSV of labelled clips (default: the shared corpus)")
    ap.add_argument("--root", type=Path, default=None, help="folder the manifest paths are relative to")


def default_manifest() -> Path:
    return default_root() / "emotion" / "manifest.csv"


def read_manifest(path: Path) -> list[Clip]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"path", "emotion"} - set(rows[0] if rows else {"path", "emotion"})
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {sorted(missing)}")
    return [
        Clip(
            r["path"],
            (r.get("dataset") or "").strip(),
            (r.get("speaker") or "").strip(),
            canonical(r["emotion"]),
            (r.get("gender") or "").strip().lower(),
        )
        for r in rows
    ]


def classes_for(clips: list[Clip]) -> tuple[str, ...]:
    """The model's classes for these training clips: the known ones present, in canonical order, then
    any other labels sorted."""
    present = {c.emotion for c in clips}
    return tuple(c for c in CLASSES if c in present) + tuple(sorted(present - set(CLASSES)))


def load_audio(path: Path) -> Audio:
    """A clip as float32 mono at 8 kHz (other rates are refused: resample first, e.g. with sox)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: {rate} Hz; the emotion model wants {SAMPLE_RATE} Hz audio")
    return as_float(data.mean(axis=1))


def load_clips(clips: list[Clip], root: Path) -> list[Audio]:
    return [load_audio(root / c.path) for c in clips]


def resolve_root(manifest: Path, root: Path | None, clips: list[Clip]) -> Path:
    """The folder a manifest's paths are relative to: ``root`` if given; else the manifest's own folder
    when its first clip is there; else the shared data root (``$MISE_TEST_DATA``)."""
    if root is not None:
        return root
    if clips and (manifest.parent / clips[0].path).exists():
        return manifest.parent
    return default_root()
