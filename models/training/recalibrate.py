"""Recalibrate emotion-model weights on your own labelled clips, keeping the network as it is.

    python -m models.training.recalibrate --manifest CSV [--root DIR] [--weights W.pt] [--speakers S,...] --out W2.pt
    python -m models.training.recalibrate --study     # how many speakers of a new population it takes (shared corpus)

A model's probabilities are calibrated for the speakers it was calibrated on. On another population (other
callers, language, line) the ranking usually holds but the probabilities shift: trained without EmoDB, the
shipped model ranks EmoDB's angry clips well above the rest yet its frustration ECE there is 0.11. Retraining
(``python -m models.training.train --manifest``) needs hundreds of clips and half an hour; this refits, in seconds, only
what turns the network's logits into probabilities, from a few labelled turns of the new population:

- per turn: the softmax temperature and the Platt coefficients of the frustration log-odds
  (``models.training.calibrate.fit_calibration``, as ``models.training.train`` fits them);
- per caller (``models.caller``): the class centroids (the mean logits of each labelled class; classes without
  clips keep the model's centroids), then a temperature and Platt of their own, fitted on the clips' logits
  adjusted as a live call would adjust them: each speaker's clips in a random order against the centroids of
  the other speakers (with one speaker, against the model's centroids, which are then kept).

The network's weights are copied bit for bit. The clips should be of speakers the network never trained on
(otherwise the fit is overconfident), 8 kHz mono, and include frustrated (angry) and other clips; a label the
model lacks counts as not frustrated and stays out of the temperature fit; silent clips are left out.
``--study`` measures it on the shared corpus: the model trained without EmoDB, recalibrated on k EmoDB
speakers, scored on the other EmoDB speakers, for every choice of the k.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.caller import SHRINK, class_centroids
from models.emotion import NO_EMODB_WEIGHTS, WEIGHTS, EmotionModel, read_weights, weights_path
from models.training.calibrate import fit_calibration
from models.training.crossval import OutOfFold, per_caller
from models.training.data import Clip, corpus_arguments, default_manifest, load_clips, read_manifest, resolve_root
from models.training.evaluate import HEADLINE, figures, score_logits, scored_per_caller
from models.training.metrics import chance_ece

Floats = npt.NDArray[np.float64]


def recalibration(
    model: EmotionModel, logits: Floats, labels: list[str], speakers: list[str]
) -> tuple[dict[str, Any], str]:
    """The calibration of ``model`` refitted on labelled clips (raw logits ``(n, classes)`` from
    ``EmotionModel.logits``; speakers ``dataset:speaker``, "" where unknown), in the weights file's keys, and
    a note on the per-caller part. Per turn: ``models.training.calibrate.fit_calibration`` (a label the model lacks is
    left out of the temperature and counts as not frustrated). Per caller: the clips' class centroids (the
    model's for a class without clips), and a temperature and Platt fitted on the clips adjusted as
    ``models.training.crossval.per_caller`` adjusts out-of-fold logits, each speaker's clips in a random order against
    the other speakers' centroids (a clip without a speaker is a caller of its own, scored alone; with a
    single speaker, the model's centroids are kept and adjusted against)."""
    y = np.array([model.classes.index(lab) if lab in model.classes else -1 for lab in labels], dtype=np.int64)
    frustration = list(model.frustration_classes)
    positive = np.isin(y, frustration)
    if not positive.any() or positive.all():
        names = "+".join(model.classes[i] for i in frustration)
        raise ValueError(f"recalibration needs {names} clips and other clips; got {positive.sum()} of {len(labels)}")
    temperature, platt = fit_calibration(logits, y, frustration)
    out: dict[str, Any] = {"temperature": temperature, "platt": list(platt)}
    if model.caller is None:
        return out, "these weights have no per-caller calibration"
    own = np.asarray(model.caller["centroids"], dtype=np.float64)
    shrink = float(model.caller.get("shrink", SHRINK))
    callers = [s or f"clip {i}" for i, s in enumerate(speakers)]  # a clip without a speaker: a caller of its own
    order = sorted(set(callers))
    oof = OutOfFold(
        model.classes,
        tuple(model.classes[i] for i in frustration),
        logits,
        labels,
        callers,
        np.array([order.index(c) for c in callers]),
    )
    adjusted = per_caller(oof, "random", 0, fallback=own, shrink=shrink)
    caller_t, caller_platt = fit_calibration(adjusted, y, frustration)
    one_caller = len(order) == 1  # no other caller to adjust against: keep the model's centroids, as fitted
    centroids = own if one_caller else class_centroids(logits, labels, model.classes, fallback=own)
    out["caller"] = {
        "centroids": centroids.tolist(),
        "shrink": shrink,
        "temperature": caller_t,
        "platt": list(caller_platt),
    }
    named = len(set(speakers) - {""})
    if named == 0:
        return out, "per-caller calibration refitted on turns scored alone: the clips name no speakers"
    if one_caller:
        return out, "per-caller calibration refitted against the model's class centroids (one speaker)"
    return out, f"per-caller calibration and class centroids refitted on {named} speaker(s)"


def recalibrated(blob: dict[str, Any], calibration: dict[str, Any], source: str, speakers: list[str]) -> dict[str, Any]:
    """``blob`` (a weights file's contents) with ``calibration`` in place and the old one kept in its meta."""
    before = {k: blob[k] for k in ("temperature", "platt", "caller") if k in blob}
    named = sorted(set(speakers) - {""})
    meta = blob.get("meta", {}) | {
        "recalibrated_on": {"manifest": source, "speakers": named, "before": before},
        "calibration": f"recalibrated on {source} (models.training.recalibrate)",
        "calibration_speakers": named,
    }
    return blob | calibration | {"meta": meta}


def clips_of(args: argparse.Namespace) -> tuple[Path, list[Clip], Path]:
    manifest = args.manifest or default_manifest()
    if not manifest.exists():
        raise FileNotFoundError(f"manifest {manifest} not found (set MISE_TEST_DATA or pass --manifest)")
    clips = read_manifest(manifest)
    if args.speakers:
        wanted = set(args.speakers.split(","))
        clips = [c for c in clips if f"{c.dataset}:{c.speaker}" in wanted]
        missing = wanted - {f"{c.dataset}:{c.speaker}" for c in clips}
        if missing:
            raise FileNotFoundError(f"no clips of speaker(s) {', '.join(sorted(missing))} in {manifest}")
    return manifest, clips, resolve_root(manifest, args.root, clips)


def run(args: argparse.Namespace) -> int:
    try:
        manifest, clips, root = clips_of(args)
        audio = load_clips(clips, root)
    except (OSError, ValueError) as e:
        print(f"cannot read clips: {e}", file=sys.stderr)
        return 2
    source = args.weights or weights_path(WEIGHTS)
    blob = read_weights(source)
    model = EmotionModel(blob)
    speakers = [f"{c.dataset}:{c.speaker}" if c.speaker else "" for c in clips]
    trained_on = set(speakers) & set(model.meta.get("train_speakers", ()))
    if trained_on:
        print(f"warning: {source.name} trained on {', '.join(sorted(trained_on))}: their scores are overconfident")
    unknown = sorted({c.emotion for c in clips} - set(model.classes))
    if unknown:
        print(f"labels the model lacks ({', '.join(unknown)}): not frustrated, and not in the temperature fit")
    logits, counts = model.logits(audio)
    heard = np.array(counts) > 0
    if not heard.all():
        print(f"skipped {(~heard).sum()} silent clip(s)")
    clips = [c for c, h in zip(clips, heard, strict=True) if h]
    logits, counts = logits[heard], [n for n in counts if n > 0]
    speakers = [s for s, h in zip(speakers, heard, strict=True) if h]
    try:
        calibration, caller_note = recalibration(model, logits, [c.emotion for c in clips], speakers)
    except ValueError as e:
        print(f"recalibration failed: {e}", file=sys.stderr)
        return 1
    ece = [
        figures(score_logits(m, clips, logits, counts)[0])["frustration_ece"]
        for m in (model, model.recalibrated(calibration))
    ]
    named = len(set(speakers) - {""})
    print(f"{len(clips)} clips of {named or 'unnamed'} speaker(s) from {manifest.name}")
    print(f"  temperature {model.temperature:.3f} -> {calibration['temperature']:.3f}")
    print(f"  Platt {tuple(round(v, 3) for v in model.platt)} -> {tuple(round(v, 3) for v in calibration['platt'])}")
    print(
        f"  frustration ECE on these clips, each clip alone: {ece[0]:.3f} -> {ece[1]:.3f}"
        " (in sample: judge it on other speakers, as --study does)"
    )
    print(f"  {caller_note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(recalibrated(blob, calibration, manifest.name, speakers), args.out)
    print(f"wrote {args.out} (network unchanged; load it with models.load_emotion_model)")
    return 0


def held_out_figures(
    model: EmotionModel, calibration: dict[str, Any], logits: Floats, counts: list[int], clips: list[Clip], seed: int
) -> tuple[list[float], list[float], float]:
    """HEADLINE figures of ``clips`` each clip alone and per caller (one random order) under ``calibration``
    (weights-file keys; empty: the model's own), and the chance level of the ECE each clip alone."""
    scorer = model.recalibrated(calibration)
    caller_spec = scorer.caller_spec()
    assert caller_spec is not None
    alone = score_logits(scorer, clips, logits, counts)[0]
    per_call = scored_per_caller(scorer, caller_spec, clips, logits, counts, "random", seed)
    one, two = figures(alone), figures(per_call)
    chance = float(np.median(chance_ece(alone.frustration, draws=200)))
    return [one.get(k, np.nan) for k in HEADLINE], [two.get(k, np.nan) for k in HEADLINE], chance


def study(args: argparse.Namespace) -> int:
    """The model trained without EmoDB, recalibrated on k EmoDB speakers and scored on the others."""
    manifest = default_manifest()
    if not manifest.exists():
        print(f"shared corpus {manifest} not found: set MISE_TEST_DATA", file=sys.stderr)
        return 2
    clips = [c for c in read_manifest(manifest) if c.dataset == "emodb"]
    model = EmotionModel(read_weights(args.weights or weights_path(NO_EMODB_WEIGHTS)))
    if model.caller is None:
        print(
            "the study needs weights with a per-caller calibration (not `models.training.train --once`)",
            file=sys.stderr,
        )
        return 1
    logits, counts = model.logits(load_clips(clips, resolve_root(manifest, args.root, clips)))
    heard = np.array(counts) > 0
    who = np.array([f"{c.dataset}:{c.speaker}" for c in clips])
    labels = [c.emotion for c in clips]
    speakers = sorted(set(who))
    if any(not 0 < k < len(speakers) for k in args.k):
        print(f"--k takes 1 to {len(speakers) - 1} speakers (some must be left to score)", file=sys.stderr)
        return 2
    print(
        f"{len(clips)} EmoDB clips of {len(speakers)} speakers; model trained without EmoDB "
        f"({(args.weights or weights_path(NO_EMODB_WEIGHTS)).name}). Each row: recalibrated on k speakers'"
    )
    print(
        "clips (every choice of the k), scored on the other speakers; medians over the choices, UA4 / BA / AUC / ECE;"
    )
    print("chance: the ECE an exactly calibrated model with the same scores would show (each clip alone)")
    head = f"  {'k':>2} {'choices':>7} {'clips':>5}  {'each clip alone':<30}{'per caller, random order':<30}"
    print(f"{head}chance  ECE <= 0.05 (alone / per caller)")
    line = "  {k:>2} {n:>7} {clips:>5}  {alone:<30}{caller:<30}{chance:.3f}   {share:.0%} / {share_c:.0%}"
    for k in (0, *args.k):
        choices = [()] if k == 0 else list(itertools.combinations(speakers, k))
        rows = []
        for j, chosen in enumerate(choices):
            fit = np.isin(who, chosen)
            calibration: dict[str, Any] = {}  # k = 0: the model's own
            if k:
                used = np.flatnonzero(fit & heard)
                calibration = recalibration(model, logits[used], [labels[i] for i in used], list(who[used]))[0]
            rest = np.flatnonzero(~fit)
            rest_clips, rest_counts = [clips[i] for i in rest], [counts[i] for i in rest]
            alone, caller, chance = held_out_figures(model, calibration, logits[rest], rest_counts, rest_clips, j)
            rows.append((alone, caller, chance, int(fit.sum())))
        a = np.median([r[0] for r in rows], axis=0)
        c = np.median([r[1] for r in rows], axis=0)
        print(
            line.format(
                k=k,
                n=len(choices),
                clips=int(np.median([r[3] for r in rows])),
                alone=" / ".join(f"{v:.3f}" for v in a),
                caller=" / ".join(f"{v:.3f}" for v in c),
                chance=float(np.median([r[2] for r in rows])),
                share=np.mean([r[0][3] <= 0.05 for r in rows]),
                share_c=np.mean([r[1][3] <= 0.05 for r in rows]),
            )
        )
    print("k = 0: the shipped calibration (fitted on RAVDESS speakers), on all EmoDB speakers")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.training.recalibrate", description=__doc__.split("\n\n")[0])
    corpus_arguments(ap)
    ap.add_argument("--weights", type=Path, default=None, help="weights to recalibrate (default: the shipped ones)")
    ap.add_argument("--speakers", default="", help="only these speakers' clips, as dataset:speaker,...")
    ap.add_argument("--out", type=Path, default=None, help="where to write the recalibrated weights")
    ap.add_argument("--study", action="store_true", help="the cross-corpus study on the shared corpus (no --out)")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5], help="with --study: speakers to recalibrate on")
    args = ap.parse_args(argv)
    if not args.study and args.out is None:
        ap.error("--out is required (or --study)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    return study(args) if args.study else run(args)


if __name__ == "__main__":
    sys.exit(main())
