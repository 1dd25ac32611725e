"""Why the log-mel-statistics baseline lands below the issue's "about 0.66 / 0.95 / 0.90": the same
logistic regression on other features and under other evaluation protocols (shared corpus only).

    python -m models.training.baseline_study                 # about three minutes on one core
    python -m models.training.baseline_study --weights W.pt  # the network part with other weights (e.g. a --once fit)

Each row is one feature set; columns are (4-class UA, angry-vs-neutral balanced accuracy, angry ROC-AUC)
on the validation speakers and on the test speakers (trained on the training speakers, as
``python -m models.training.evaluate`` does), and pooled over leave-one-speaker-out folds of the 22 non-test
speakers (each speaker predicted by a regression trained on the other 21). Diagnostic only: no shipped
setting is chosen from the test columns.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torchaudio

from engine.prosody import FEATURE_KEYS, turn_features
from models.audio import Audio, trim
from models.emotion import EmotionModel, read_weights, weights_path
from models.net import LogMel
from models.net_config import FRONT_END
from models.training.baseline import fit_logistic
from models.training.data import CLASSES, FOUR, default_manifest, default_root, load_clips, read_manifest
from models.training.metrics import confusion, roc_auc, unweighted_accuracy

Floats = npt.NDArray[np.float64]
Order = Callable[[npt.NDArray[np.int64], np.random.Generator], npt.NDArray[np.int64]]
SHRINK = 3  # causal protocol: a speaker's k-th clip is shifted by k / (k + SHRINK) of the estimated offset


def raw_log_mel(x: Audio, n_mels: int = 48, f_min: float = 200.0, f_max: float = 3600.0) -> Floats:
    """Log-mel in dB without level normalisation (absolute loudness kept)."""
    cfg = dict(FRONT_END, n_mels=n_mels, f_min=f_min, f_max=f_max)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, power=2.0, center=False, **cfg)
    w = torch.nn.functional.pad(torch.from_numpy(x)[None], (0, max(0, 512 - len(x))))
    return np.asarray((10 * torch.log10(mel(w) + 1e-10))[0].double().numpy())


def mean_std(specs: list[Floats]) -> Floats:
    return np.stack([np.r_[s.mean(1), s.std(1)] for s in specs])


def rich(specs: list[Floats]) -> Floats:
    """Mean, std, 10/50/90th percentiles and delta statistics of each band, and frame-energy statistics."""
    rows = []
    for s in specs:
        d = np.diff(s, axis=1) if s.shape[1] > 1 else np.zeros_like(s)
        e = 10 * np.log10((10 ** (s / 10)).sum(0) + 1e-10)
        pct = np.percentile(s, [10, 50, 90], axis=1).ravel()
        energy = [e.mean(), e.std(), np.percentile(e, 90), np.percentile(e, 10)]
        rows.append(np.r_[s.mean(1), s.std(1), pct, np.abs(d).mean(1), d.std(1), energy])
    return np.stack(rows)


def fit(x: Floats, y: npt.NDArray[np.int64]) -> Callable[[Floats], Floats]:
    """The baseline's class-weighted multinomial logistic regression (L2 as in models.training.baseline)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor(np.c_[(x - mean) / std, np.ones(len(x))])
    weights = fit_logistic(xt, torch.tensor(y), len(CLASSES))

    def predict(z: Floats) -> Floats:
        logits = torch.tensor(np.c_[(z - mean) / std, np.ones(len(z))]) @ weights
        return np.asarray(torch.softmax(logits, 1).numpy())

    return predict


def headline(p: Floats, y: npt.NDArray[np.int64]) -> str:
    """4-class UA, angry-vs-neutral BA, angry ROC-AUC"""
    four = [CLASSES.index(c) for c in FOUR]
    sel = np.isin(y, four)
    ua4 = unweighted_accuracy(confusion(y[sel], np.array(four)[p[sel][:, four].argmax(1)], len(CLASSES)))
    a, n = CLASSES.index("angry"), CLASSES.index("neutral")
    sel = np.isin(y, [a, n])
    ba = unweighted_accuracy(confusion(y[sel], np.where(p[sel, a] > p[sel, n], a, n), len(CLASSES)))
    return f"{ua4:.3f} {ba:.3f} {roc_auc(y == a, p[:, a]):.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.training.baseline_study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="the network to study (default: the shipped one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clips = read_manifest(default_manifest())
    audio = [trim(x) for x in load_clips(clips, default_root())]
    y = np.array([CLASSES.index(c.emotion) for c in clips])
    speaker = np.array([f"{c.dataset}:{c.speaker}" for c in clips])
    split = np.array([c.split for c in clips])
    front = LogMel(**FRONT_END)
    with torch.inference_mode():
        normalised = [front(torch.from_numpy(x)[None])[0][0].double().numpy() for x in audio]
    raw = [raw_log_mel(x) for x in audio]
    wide = [raw_log_mel(x, 64, 60.0, 4000.0) for x in audio]
    measured = [turn_features(x) for x in audio]
    prosody = np.nan_to_num(np.array([[np.nan if f[k] is None else f[k] for k in FEATURE_KEYS] for f in measured]))

    def per_speaker(x: Floats) -> Floats:
        """Each feature z-scored over all clips of the clip's speaker (needs the speaker's other clips)."""
        x = x.copy()
        for s in np.unique(speaker):
            m = speaker == s
            x[m] = (x[m] - x[m].mean(0)) / (x[m].std(0) + 1e-6)
        return x

    base = mean_std(normalised)
    best = np.c_[rich(normalised), prosody]
    rows = {
        "A shipped baseline: level-normalised, mean+std": base,
        "B loudness kept (no level normalisation)": mean_std(raw),
        "C A + the clip's active level (dBFS)": np.c_[base, [[np.percentile(s, 90)] for s in map(_energy, raw)]],
        "D loudness kept, 64 bands 60-4000 Hz": mean_std(wide),
        "E level-normalised, richer statistics": rich(normalised),
        "F A + 11 prosody features (pitch, voicing, rate)": np.c_[base, prosody],
        "G E + prosody": best,
        "H A, z-scored per speaker": per_speaker(base),
        "I G, z-scored per speaker": per_speaker(best),
    }
    print("4-class UA, angry-vs-neutral BA, angry ROC-AUC; LR trained on the training speakers (val, test) or")
    print("leave-one-speaker-out over the 22 non-test speakers (LOSO-22)")
    print(f"{'features':<50}{'val':>20}{'test':>20}{'LOSO-22':>20}")
    non_test = split != "test"
    for name, x in rows.items():
        model = fit(x[split == "train"], y[split == "train"])
        cols = [headline(model(x[split == part]), y[split == part]) for part in ("val", "test")]
        pooled = np.zeros((len(y), len(CLASSES)))
        for s in np.unique(speaker[non_test]):
            held = speaker == s
            pooled[held] = fit(x[non_test & ~held], y[non_test & ~held])(x[held])
        cols.append(headline(pooled[non_test], y[non_test]))
        print(f"{name:<50}" + "".join(f"{c:>20}" for c in cols), flush=True)
    rng = np.random.default_rng(0)
    fold = rng.integers(0, 5, len(y))
    pooled = np.zeros((len(y), len(CLASSES)))
    for k in range(5):
        pooled[fold == k] = fit(base[fold != k], y[fold != k])(base[fold == k])
    print(f"A with random 5-fold clip splits (speakers shared), all 28 speakers: {headline(pooled, y)}")
    speaker_protocols(EmotionModel(read_weights(args.weights or weights_path())), audio, y, speaker, split)
    return 0


def speaker_protocols(
    model: EmotionModel,
    audio: list[Audio],
    y: npt.NDArray[np.int64],
    speaker: npt.NDArray[np.str_],
    split: npt.NDArray[np.str_],
) -> None:
    """The shipped network under the per-speaker protocols of rows H and I: its logits shifted by the
    speaker's mean logits (to the validation speakers' mean), over all of the speaker's clips, or causally
    (each clip by the speaker's earlier clips only, as a live call could), and what the causal version does
    to a caller who is calm at first, the usual call, where the acted corpus's balanced mix of emotions per
    speaker no longer holds."""
    logits = np.zeros((len(y), len(CLASSES)))
    known = [CLASSES.index(c) for c in model.classes]
    logits[:, known] = model.logits(audio)[0]
    logits[:, [i for i in range(len(CLASSES)) if i not in known]] = -1e9
    a, n = CLASSES.index("angry"), CLASSES.index("neutral")

    def probs(z: Floats) -> Floats:
        e = np.exp(z - z.max(1, keepdims=True))
        return np.asarray(e / e.sum(1, keepdims=True))

    calmness = probs(logits)[:, n]  # P(neutral) per clip, as scored alone

    def centre(rows: npt.NDArray[np.int64], calm: bool) -> tuple[Floats, float]:
        """The mean logits of ``rows`` (weighted by P(neutral) when ``calm``) and the weight behind it."""
        w = calmness[rows] if calm else np.ones(len(rows))
        return (w[:, None] * logits[rows]).sum(0) / max(w.sum(), 1e-9), float(w.sum())

    references = {calm: centre(np.flatnonzero(split == "val"), calm)[0] for calm in (False, True)}

    def shifted(part: str, order: Order | None, calm: bool = False, seed: int = 0) -> Floats:
        z = logits.copy()
        reference = references[calm]
        rng = np.random.default_rng(seed)
        for s in np.unique(speaker[split == part]):
            clips = np.flatnonzero(speaker == s)
            if order is None:  # all of the speaker's clips
                z[clips] += reference - centre(clips, calm)[0]
                continue
            clips = order(clips, rng)
            for j in range(1, len(clips)):  # the first clip of a speaker is scored as it is
                mean, weight = centre(clips[:j], calm)
                z[clips[j]] += weight / (weight + SHRINK) * (reference - mean)
        return z

    def shuffled(clips: npt.NDArray[np.int64], rng: np.random.Generator) -> npt.NDArray[np.int64]:
        return rng.permutation(clips)

    def calm_first(clips: npt.NDArray[np.int64], rng: np.random.Generator) -> npt.NDArray[np.int64]:
        return np.asarray(np.r_[clips[y[clips] == n], clips[y[clips] != n]], dtype=np.int64)

    print(f"\nthe shipped network under the same protocols ({headline.__doc__})")
    print(f"{'protocol':<66}{'val':>20}{'test':>20}")
    protocols: list[tuple[str, Callable[[str], Floats]]] = [
        ("per clip (as shipped)", lambda part: probs(logits)),
        ("H/I: the speaker's mean logits over all its clips removed", lambda part: probs(shifted(part, None))),
        (
            f"causal: the mean of the speaker's earlier clips, shrinkage {SHRINK}",
            lambda part: np.mean([probs(shifted(part, shuffled, seed=k)) for k in range(10)], axis=0),
        ),
        (
            "causal, calm-weighted: earlier clips weighted by their P(neutral)",
            lambda part: np.mean([probs(shifted(part, shuffled, True, seed=k)) for k in range(10)], axis=0),
        ),
    ]
    # A refit trained on the validation speakers too: its validation column would be training figures, and
    # the reference (the validation speakers' mean) comes from clips it was trained on.
    parts = ("test",) if set(model.meta.get("train_speakers", ())) & set(speaker[split == "val"]) else ("val", "test")
    for name, protocol in protocols:
        cols = [headline(protocol(part)[split == part], y[split == part]) for part in parts]
        cols = ["(trained on)"] * (2 - len(parts)) + cols
        print(f"{name:<66}" + "".join(f"{c:>20}" for c in cols))
    print("a calm-first caller (the speaker's neutral clips first, then the rest), per causal protocol:")
    for calm in (False, True):
        for part in parts:
            m = split == part
            before, after = probs(logits), probs(shifted(part, calm_first, calm))
            quiet = m & (y == n)
            print(
                f"  {'calm-weighted' if calm else 'plain mean':<14}{part:<5} {headline(after[m], y[m])}; "
                f"P(angry) of calm clips {before[quiet, a].mean():.3f} -> {after[quiet, a].mean():.3f}"
            )


def _energy(spec: Floats) -> Floats:
    return np.asarray(10 * np.log10((10 ** (spec / 10)).sum(0) + 1e-10))


if __name__ == "__main__":
    sys.exit(main())
