"""One training run of the emotion model, and the options (the recipe) that define it.

``train`` fits, calibrates and returns a weights blob; ``add_recipe_arguments``, ``recipe_of`` and
``recipe_clips`` turn a command line into its keyword arguments and clips. Shared by ``models.training.train``
(the refit that ships) and ``models.training.crossval`` (one run per speaker fold).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.audio import SAMPLE_RATE, Audio, trim
from models.emotion import EmotionModel
from models.net import EmotionNet
from models.training.augment import PhoneChannel
from models.training.calibrate import fit_calibration
from models.training.data import (
    AROUSAL,
    FOUR,
    FRUSTRATION,
    Clip,
    classes_for,
    corpus_arguments,
    default_manifest,
    load_clips,
    read_manifest,
    resolve_root,
)
from models.training.metrics import confusion, roc_auc, unweighted_accuracy

CROP_S = 3.0  # training crops are at most one inference window long
FOLDS = 4  # speaker folds of the cross-validation behind the calibration (one per speaker when fewer)
DEFAULTS = {
    "vtlp": 0.0,
    "mixup": 0.0,
    "epochs": 50,
    "batch": 32,
    "lr": 3e-3,
    "weight_decay": 1e-2,
    "ema_decay": 0.995,
    "seed": 20261124,
}


def split_speakers(clips: list[Clip], seed: int) -> tuple[list[Clip], list[Clip]]:
    """(train, validation) clips. Test-split speakers are dropped. If no clip falls in a known validation
    split (a user's own manifest), a seeded fifth of the speakers of each dataset (or of the clips, when
    the manifest has no speakers) is held out for validation."""
    usable = [c for c in clips if c.split != "test"]
    if any(c.split == "val" for c in usable):
        return [c for c in usable if c.split == "train"], [c for c in usable if c.split == "val"]
    rng = random.Random(seed)
    held: set[tuple[str, str]] = set()
    for dataset in sorted({c.dataset for c in usable}):
        speakers = sorted({c.speaker for c in usable if c.dataset == dataset})
        if len(speakers) >= 2 and speakers != [""]:
            held |= {(dataset, s) for s in rng.sample(speakers, max(1, round(len(speakers) / 5)))}
    if held:
        return [c for c in usable if (c.dataset, c.speaker) not in held], [
            c for c in usable if (c.dataset, c.speaker) in held
        ]
    order = list(range(len(usable)))
    rng.shuffle(order)
    cut = max(1, len(usable) // 5)
    return [usable[i] for i in sorted(order[cut:])], [usable[i] for i in sorted(order[:cut])]


def corpus_balanced_weights(clips: list[Clip]) -> npt.NDArray[np.float64] | None:
    """Per-clip loss weights making every (dataset, class) cell weigh the same (mean weight 1); None for clips of
    one dataset, where they would be the class weights the loss already has."""
    cells = [(c.dataset, c.emotion) for c in clips]
    if len({d for d, _ in cells}) < 2:
        return None
    count = Counter(cells)
    return np.array([len(cells) / (len(count) * count[k]) for k in cells])


def make_batch(
    audio: list[Audio], channel: PhoneChannel | None, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of at most CROP_S (through a random phone channel when ``channel``), zero-padded:
    waveforms ``(B, N)`` and lengths ``(B,)``."""
    crop = int(CROP_S * SAMPLE_RATE)
    items = []
    for x in audio:
        if len(x) > crop:
            start = int(rng.integers(0, len(x) - crop + 1))
            x = x[start : start + crop]
        items.append(channel(x) if channel else x)
    longest = max(len(x) for x in items)
    wave = np.zeros((len(items), longest), dtype=np.float32)
    for i, x in enumerate(items):
        wave[i, : len(x)] = x
    return torch.from_numpy(wave), torch.tensor([len(x) for x in items])


def validation_report(model: EmotionModel, audio: list[Audio], labels: list[str]) -> str:
    """4-class UA, angry-vs-neutral balanced accuracy and frustration AUC on validation clips (uncalibrated)."""
    logits, _ = model.logits(audio)
    names = model.classes
    four = [names.index(c) for c in FOUR if c in names]
    y = np.array([names.index(lab) if lab in names else -1 for lab in labels])
    parts = []
    sel = np.isin(y, four)
    if sel.sum() and len(four) > 1:
        pred = np.array(four)[np.argmax(logits[sel][:, four], axis=1)]
        parts.append(f"UA4 {unweighted_accuracy(confusion(y[sel], pred, len(names))):.3f}")
    if "angry" in names:
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        parts.append(f"frustration AUC {roc_auc(y == names.index('angry'), p[:, names.index('angry')]):.3f}")
    return "  ".join(parts)


def train(
    clips: list[Clip],
    root: Path,
    *,
    epochs: int,
    batch: int,
    lr: float,
    weight_decay: float,
    seed: int,
    frustration: tuple[str, ...] = FRUSTRATION,
    net_config: dict[str, Any] | None = None,
    ema_decay: float = 0.995,
    vtlp: float = 0.0,
    mixup: float = 0.0,
    balance: str = "class",
    calibration: dict[str, Any] | None = None,
    val_speakers: set[tuple[str, str]] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Train, calibrate and return the weights blob (see ``models.emotion.EmotionModel``).

    ``calibration`` (the blob of the same recipe trained on the training speakers alone, whose temperature
    and Platt coefficients were fitted on the validation speakers) refits instead: the validation speakers
    are trained on too, and the calibration is taken from that blob. ``val_speakers`` ((dataset, speaker)
    pairs) replaces the validation split: those speakers validate, every other non-test speaker trains."""
    net_config = dict(net_config or {})
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if val_speakers is None:
        train_clips, val_clips = split_speakers(clips, seed)
    else:
        usable = [c for c in clips if c.split != "test"]
        val_clips = [c for c in usable if (c.dataset, c.speaker) in val_speakers]
        train_clips = [c for c in usable if (c.dataset, c.speaker) not in val_speakers]
    if calibration is not None:
        train_clips, val_clips = train_clips + val_clips, []
    classes = classes_for(train_clips)
    if len(classes) < 2:
        raise ValueError(f"need at least two emotion labels to train, got {list(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    val_clips = [c for c in val_clips if c.emotion in index]
    t0 = time.perf_counter()
    train_audio = [trim(x) for x in load_clips(train_clips, root)]
    val_audio = load_clips(val_clips, root)
    y = np.array([index[c.emotion] for c in train_clips])
    log(
        f"{len(train_clips)} training clips ({len({(c.dataset, c.speaker) for c in train_clips})} speakers), "
        f"{len(val_clips)} validation clips ({len({(c.dataset, c.speaker) for c in val_clips})} speakers); "
        f"classes {', '.join(classes)}; read in {time.perf_counter() - t0:.1f} s"
    )
    counts = np.bincount(y, minlength=len(classes)).astype(np.float64)
    class_weight = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    net = EmotionNet(len(classes), **net_config)
    net.spec_augment = True
    net.vtlp = vtlp
    log(f"model: {sum(p.numel() for p in net.parameters()):,} parameters; {epochs} epochs of {len(y)} clips")
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=0.05)
    # --balance corpus: each (dataset, class) cell weighs the same, whatever its corpus's class mix
    cell_weights = corpus_balanced_weights(train_clips) if balance == "corpus" else None
    if cell_weights is not None:
        log("loss weights: per (dataset, class) cell")
    per_clip_loss = nn.CrossEntropyLoss(reduction="none", label_smoothing=0.05)

    def loss_of(logits: torch.Tensor, target: torch.Tensor, idx: npt.NDArray[np.int64]) -> torch.Tensor:
        """The batch's loss; ``idx``: its clips' rows in the training set."""
        if cell_weights is None:
            return loss_fn(logits, target)  # type: ignore[no-any-return]
        w = torch.from_numpy(cell_weights[idx]).float()
        return (per_clip_loss(logits, target) * w).sum() / w.sum()  # type: ignore[no-any-return]

    channel = PhoneChannel(rng)

    # An exponential moving average of the weights (and batch-norm statistics) is what ships: single
    # checkpoints of this small-data training swing by several points of UA from epoch to epoch.
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def update_ema() -> None:
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                ema[k].mul_(ema_decay).add_(v.detach(), alpha=1 - ema_decay)
            else:
                ema[k].copy_(v)

    def blob(
        state: dict[str, torch.Tensor], temperature: float = 1.0, platt: tuple[float, float] = (1.0, 0.0)
    ) -> dict[str, Any]:
        return {
            "classes": list(classes),
            "net": dict(net_config),
            "state": {k: v.detach().clone() for k, v in state.items()},
            "temperature": temperature,
            "platt": list(platt),
            "frustration": list(frustration),
            "arousal": {c: AROUSAL.get(c, 0.5) for c in classes},
        }

    for epoch in range(1, epochs + 1):
        net.train()
        order = rng.permutation(len(y))
        total, seen = 0.0, 0
        t_epoch = time.perf_counter()
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            if len(idx) < 2:  # batch norm needs two
                continue
            wave, lengths = make_batch([train_audio[i] for i in idx], channel, rng)
            target = torch.from_numpy(y[idx])
            if mixup > 0:  # mixup of the pooled statistics (and of the targets), Beta(mixup, mixup)
                lam = float(rng.beta(mixup, mixup))
                perm = torch.from_numpy(rng.permutation(len(idx)))
                pooled = net.embed(wave, lengths)
                logits = net.head(lam * pooled + (1 - lam) * pooled[perm])
                loss = lam * loss_of(logits, target, idx) + (1 - lam) * loss_of(logits, target[perm], idx[perm.numpy()])
            else:
                loss = loss_of(net(wave, lengths), target, idx)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            update_ema()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        line = f"epoch {epoch:3d}/{epochs}  loss {total / max(seen, 1):.3f}  {time.perf_counter() - t_epoch:5.1f} s"
        if val_clips and (epoch % 5 == 0 or epoch == epochs):
            line += "  | validation " + validation_report(
                EmotionModel(blob(ema)), val_audio, [c.emotion for c in val_clips]
            )
        log(line)

    temperature, platt = 1.0, (1.0, 0.0)
    if calibration is not None:
        if list(calibration["classes"]) != list(classes):
            raise ValueError(f"calibration blob has classes {calibration['classes']}, this training {list(classes)}")
        temperature, platt = (
            float(calibration["temperature"]),
            (float(calibration["platt"][0]), float(calibration["platt"][1])),
        )
        log(f"calibration given (not fitted here): temperature {temperature:.3f}, Platt {platt[0]:.3f} {platt[1]:+.3f}")
    elif val_clips:
        logits, _ = EmotionModel(blob(ema)).logits(val_audio)
        y_val = np.array([index[c.emotion] for c in val_clips])
        temperature, platt = fit_calibration(logits, y_val, [index[c] for c in frustration if c in index])
        log(
            f"calibration on {len(val_clips)} validation clips: "
            f"temperature {temperature:.3f}, Platt {platt[0]:.3f} {platt[1]:+.3f}"
        )
    out = blob(ema, temperature, platt)
    out["meta"] = {
        "seed": seed,
        "epochs": epochs,
        "ema_decay": ema_decay,
        "vtlp": vtlp,
        "mixup": mixup,
        "balance": balance,
        "train_speakers": sorted({f"{c.dataset}:{c.speaker}" for c in train_clips}),
        "val_speakers": sorted({f"{c.dataset}:{c.speaker}" for c in val_clips}),
        "calibration_speakers": (calibration or {}).get("meta", {}).get("val_speakers")
        or sorted({f"{c.dataset}:{c.speaker}" for c in val_clips}),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    log(f"trained in {time.perf_counter() - t0:.0f} s")
    return out


def add_recipe_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options that define a training recipe (shared with ``models.training.crossval``); returns ``ap``."""
    corpus_arguments(ap)
    ap.add_argument("--exclude-dataset", action="append", default=[], help="leave out a dataset (repeatable)")
    ap.add_argument("--frustration-labels", default=",".join(FRUSTRATION), help="labels that count as frustration")
    ap.add_argument("--cmn", action="store_true", help="remove each band's mean over the clip")
    ap.add_argument("--width", type=int, default=128, help="channels of the convolutions")
    ap.add_argument("--pitch-bins", type=int, default=0, help="periodicity (lag-gram) channels; 0: log-mel only")
    ap.add_argument(
        "--balance",
        choices=("class", "corpus"),
        default="class",
        help="loss weights: per class (default), or per (dataset, class) cell so no corpus carries a class prior",
    )
    for name, value in DEFAULTS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return ap


def recipe_of(args: argparse.Namespace) -> dict[str, Any]:
    """``train``'s keyword arguments from the options of ``add_recipe_arguments``."""
    return {
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "frustration": tuple(s.strip() for s in args.frustration_labels.split(",") if s.strip()),
        "net_config": {"cmn": args.cmn, "width": args.width, "pitch_bins": args.pitch_bins},
        "ema_decay": args.ema_decay,
        "vtlp": args.vtlp,
        "mixup": args.mixup,
        "balance": args.balance,
    }


def recipe_clips(args: argparse.Namespace) -> tuple[Path, list[Clip], Path]:
    """The manifest, its clips (less ``--exclude-dataset``) and their root; FileNotFoundError without one."""
    manifest = args.manifest or default_manifest()
    if not manifest.exists():
        raise FileNotFoundError(f"manifest {manifest} not found (set MISE_TEST_DATA or pass --manifest)")
    clips = [c for c in read_manifest(manifest) if c.dataset not in set(args.exclude_dataset)]
    return manifest, clips, resolve_root(manifest, args.root, clips)
