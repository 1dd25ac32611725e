"""Evaluate emotion-model weights on a manifest of labelled clips.

    python -m models.training.evaluate        # shipped weights on the held-out test speakers of the shared corpus,
                                     # beside the log-mel-statistics baseline, plus the cross-corpus check
    python -m models.training.evaluate --manifest CSV --root DIR --predictions OUT.jsonl [--weights W.pt]

Prints a confusion matrix, per-class recall, unweighted accuracy (UA: mean recall), the 4-class UA
(neutral+calm / happy / sad / angry, argmax over those four), angry-vs-neutral balanced accuracy
(angry when P(angry) > P(neutral)), frustration ROC-AUC against all other clips and the expected
calibration error of the frustration probability (10 equal-width bins), beside its chance level: the ECE a
model exactly calibrated with the same scores would show on as many clips (labels drawn from the scores), the
floor no model reaches on a sample this size. On the shared corpus it also scores
each test speaker's clips as one caller's turns, as the live path does (``models.caller``). ``--predictions`` writes one
JSON line per clip: ``{"path", "label", "scores": {class: prob}, "frustration", "arousal"}`` (``label``: the most
probable class, not the manifest's).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.audio import Audio
from models.caller import CallerScorer, arrival_order, frustration_log_odds, platt_frustration
from models.emotion import NO_EMODB_WEIGHTS, WEIGHTS, EmotionModel, read_weights, weights_path
from models.training.baseline import LogMelStatsBaseline
from models.training.calibrate import fit_platt
from models.training.data import (
    AROUSAL,
    CLASSES,
    FOUR,
    Clip,
    classes_for,
    corpus_arguments,
    default_manifest,
    load_clips,
    read_manifest,
    resolve_root,
)
from models.training.metrics import (
    chance_ece,
    confusion,
    expected_calibration_error,
    format_confusion,
    recalls,
    roc_auc,
    unweighted_accuracy,
)


@dataclass
class Scored:
    """Per-clip outputs of a model on labelled clips: probabilities ``(n, len(classes))``, frustration ``(n,)``."""

    classes: tuple[str, ...]
    labels: list[str]
    probs: npt.NDArray[np.float64]
    frustration: npt.NDArray[np.float64]
    frustration_classes: tuple[str, ...]
    arousal: npt.NDArray[np.float64]
    speakers: list[str] | None = None  # dataset:speaker of each clip, for the per-speaker line


def ua4(s: Scored, keep: npt.NDArray[np.bool_]) -> float:
    """4-class UA on the clips ``keep`` selects (NaN without all four classes in the model)."""
    idx = {c: i for i, c in enumerate(s.classes)}
    four = [idx[c] for c in FOUR if c in idx]
    y = np.array([idx.get(lab, -1) for lab in s.labels])
    sel = np.isin(y, four) & keep
    if len(four) < 4 or not sel.any():
        return float("nan")
    pred = np.array(four)[np.argmax(s.probs[sel][:, four], axis=1)]
    return unweighted_accuracy(confusion(y[sel], pred, len(s.classes)))


HEADLINE = ("ua4", "angry_vs_neutral_ba", "frustration_auc", "frustration_ece")  # the four figures


def mean_figures(runs: list[Scored]) -> list[float]:
    """The HEADLINE figures, each averaged over ``runs`` (scorings of the same clips, e.g. several orders)."""
    each = [figures(s) for s in runs]
    return [float(np.mean([f.get(k, np.nan) for f in each])) for k in HEADLINE]


def ece_per_speaker(s: Scored) -> dict[str, float]:
    """The frustration ECE of each speaker's clips alone (``s.speakers`` required)."""
    assert s.speakers is not None
    who = np.array(s.speakers)
    positive = np.isin(s.labels, s.frustration_classes)
    return {sp: expected_calibration_error(positive[who == sp], s.frustration[who == sp]) for sp in sorted(set(who))}


def chance_per_speaker(s: Scored) -> dict[str, npt.NDArray[np.float64]]:
    """The ECEs an exactly calibrated model with these scores would show on each speaker's clips, one per
    draw of labels (``models.training.metrics.chance_ece``; label-free)."""
    assert s.speakers is not None
    who = np.array(s.speakers)
    return {sp: chance_ece(s.frustration[who == sp]) for sp in sorted(set(who))}


def figures(s: Scored) -> dict[str, float]:
    """The headline numbers (NaN where the clips do not allow one)."""
    idx = {c: i for i, c in enumerate(s.classes)}
    y = np.array([idx.get(lab, -1) for lab in s.labels])
    known = y >= 0
    out: dict[str, float] = {}
    m = confusion(y[known], np.argmax(s.probs[known], axis=1), len(s.classes))
    out["ua_all"] = unweighted_accuracy(m)
    if not np.isnan(value := ua4(s, np.ones(len(y), dtype=bool))):
        out["ua4"] = value
    if "angry" in idx and "neutral" in idx:
        a, n = idx["angry"], idx["neutral"]
        sel = np.isin(y, [a, n])
        if sel.any():
            pred = np.where(s.probs[sel, a] > s.probs[sel, n], a, n)
            out["angry_vs_neutral_ba"] = unweighted_accuracy(confusion(y[sel], pred, len(s.classes)))
    positive = np.isin(s.labels, s.frustration_classes)
    out["frustration_auc"] = roc_auc(positive, s.frustration)
    out["frustration_ece"] = expected_calibration_error(positive, s.frustration)
    out["angry_disgust_auc"] = roc_auc(np.isin(s.labels, ("angry", "disgust")), s.frustration)
    rated = np.array([lab in AROUSAL and AROUSAL[lab] != 0.55 for lab in s.labels])  # disgust: mid arousal
    high = np.array([AROUSAL.get(lab, 0.5) > 0.5 for lab in s.labels])
    out["arousal_auc"] = roc_auc(high[rated], s.arousal[rated])
    return out


def report(title: str, s: Scored, *, matrix: bool = True) -> dict[str, float]:
    f = figures(s)
    rows = [c for c in CLASSES if c in s.labels] + sorted(set(s.labels) - set(CLASSES))
    print(f"\n== {title}: {len(s.labels)} clips")
    if matrix:
        col = {c: i for i, c in enumerate(s.classes)}
        m = np.zeros((len(rows), len(s.classes)), dtype=np.int64)
        for lab, p in zip(s.labels, s.probs, strict=True):
            m[rows.index(lab), int(np.argmax(p))] += 1
        print(format_confusion(m, rows, list(s.classes)))
        square = np.zeros((len(s.classes), len(s.classes)), dtype=np.int64)
        for r, lab in enumerate(rows):
            if lab in col:
                square[col[lab]] = m[r]
        rec = recalls(square)
        print("recall: " + ", ".join(f"{c} {rec[i]:.3f}" for i, c in enumerate(s.classes) if not np.isnan(rec[i])))
    names = {
        "ua_all": "UA, all classes",
        "ua4": "UA, 4 classes (neutral+calm/happy/sad/angry)",
        "angry_vs_neutral_ba": "angry vs neutral+calm, balanced accuracy",
        "frustration_auc": f"frustration ({'+'.join(s.frustration_classes)}) vs all other clips, ROC-AUC",
        "frustration_ece": "frustration ECE (10 bins)",
        "angry_disgust_auc": "frustration score vs angry+disgust, ROC-AUC",
        "arousal_auc": "arousal score, high vs low-arousal labels, ROC-AUC",
    }
    for key, name in names.items():
        if key in f and not np.isnan(f[key]):
            print(f"  {name:<52} {f[key]:.3f}")
            if key == "frustration_ece":
                chance = chance_ece(s.frustration)
                name = "  ECE at chance (exactly calibrated, same scores)"
                print(f"  {name:<52} {np.median(chance):.3f}  (95th percentile {np.percentile(chance, 95):.3f})")
                print(in_sample_platt(s))
    if s.speakers is not None:
        if "ua4" in f:
            who = np.array(s.speakers)
            each = {sp: ua4(s, who == sp) for sp in sorted(set(s.speakers))}
            shown = ", ".join(f"{sp} {v:.2f}" for sp, v in each.items() if not np.isnan(v))
            print(f"  4-class UA per speaker: {shown}")
        print("  frustration ECE per speaker: " + ", ".join(f"{sp} {v:.3f}" for sp, v in ece_per_speaker(s).items()))
        at_chance = ", ".join(f"{sp} {np.median(v):.3f}" for sp, v in chance_per_speaker(s).items())
        print(f"    at chance, per speaker:    {at_chance}")
    return f


def platt_refit(positive: npt.NDArray[np.bool_], frustration: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Platt scaling refitted on these very clips' frustration log-odds (in sample, so optimistic): its slope,
    intercept and the ECE after it. A slope near 1 with an intercept far from 0 is a shift of the clips' scores
    as a block, which recalibrating on their population fixes (``models.training.recalibrate``); a slope far from 1,
    over- or underconfidence."""
    as_probs = frustration[:, None]
    a, b = fit_platt(frustration_log_odds(as_probs, [0]), positive)
    return a, b, expected_calibration_error(positive, platt_frustration(as_probs, [0], (a, b)))


def in_sample_platt(s: Scored) -> str:
    """``report``'s line for ``platt_refit``."""
    positive = np.isin(s.labels, s.frustration_classes)
    if positive.all() or not positive.any():
        return "    (no Platt refit: the clips need frustrated and other ones)"
    a, b, refitted = platt_refit(positive, s.frustration)
    name = "  ECE with Platt refitted on these clips (in sample)"
    return f"  {name:<52} {refitted:.3f}  (slope {a:.2f}, intercept {b:+.2f})"


def score_model(model: EmotionModel, clips: list[Clip], audio: list[Audio]) -> tuple[Scored, list[dict[str, object]]]:
    """Each clip scored alone, as ``EmotionModel.score`` does."""
    return score_logits(model, clips, *model.logits(list(audio)))


def score_logits(
    model: EmotionModel, clips: list[Clip], logits: npt.NDArray[np.float64], counts: list[int]
) -> tuple[Scored, list[dict[str, object]]]:
    """``score_model`` from the clips' raw logits (``EmotionModel.logits``)."""
    results = [model.result(z, n) for z, n in zip(logits, counts, strict=True)]
    return scored_of(model, clips, results), results


def scored_of(model: EmotionModel, clips: list[Clip], results: list[dict[str, Any]]) -> Scored:
    probs = np.array([[r["scores"][c] for c in model.classes] for r in results])
    frus = np.array([r["frustration"] for r in results])
    frustration = tuple(model.classes[i] for i in model.frustration_classes)
    arousal = np.array([r["arousal"] for r in results])
    speakers = [f"{c.dataset}:{c.speaker}" for c in clips]
    return Scored(model.classes, [c.emotion for c in clips], probs, frus, frustration, arousal, speakers)


def scored_per_caller(
    model: EmotionModel,
    spec: dict[str, Any],
    clips: list[Clip],
    logits: npt.NDArray[np.float64],
    counts: list[int],
    order: str,
    seed: int,
) -> Scored:
    """Each speaker's clips scored as one caller's turns by a ``models.caller.CallerScorer`` of ``spec``, in
    ``order`` (``models.caller.arrival_order``, seeded)."""
    rng = np.random.default_rng(seed)
    who = np.array([f"{c.dataset}:{c.speaker}" for c in clips])
    calm = np.array([c.emotion == "neutral" for c in clips])
    results: list[dict[str, Any]] = [{}] * len(clips)
    for speaker in sorted(set(who)):
        rows = arrival_order(np.flatnonzero(who == speaker), calm, order, rng)
        caller = CallerScorer(spec)
        for i in rows:
            results[i] = caller.score(logits[i], counts[i])
    return scored_of(model, clips, results)


def per_caller(
    model: EmotionModel, clips: list[Clip], logits: npt.NDArray[np.float64], counts: list[int], *, seeds: int = 10
) -> None:
    """Each speaker's clips scored as one caller's turns, in order, through the live path's
    ``models.caller.CallerScorer`` (the caller's voice offset learned from their earlier turns): in random
    orders (figures averaged over ``seeds`` orders), calm clips first (the usual call) and calm clips last."""
    spec = model.caller_spec()
    if spec is None:
        print("  (these weights have no per-caller calibration: `python -m models.training.train --once` made them)")
        return
    calm = np.array([c.emotion == "neutral" for c in clips])
    angry = np.isin([c.emotion for c in clips], [model.classes[i] for i in model.frustration_classes])

    def run(order: str, seed: int) -> Scored:
        return scored_per_caller(model, spec, clips, logits, counts, order, seed)

    head = "".join(f"{k:>7}" for k in ("UA4", "BA", "AUC", "ECE", "chance"))
    print(f"  {'order of the clips':<32}{head}   mean frustration: calm, angry clips")
    runs = {"random (10 orders)": [run("random", k) for k in range(seeds)]}
    runs |= {name: [run(name, 0)] for name in ("calm first", "calm last")}
    for name, scored in runs.items():
        frus = np.mean([s.frustration for s in scored], axis=0)
        chance = np.mean([np.median(chance_ece(s.frustration)) for s in scored])
        values = "".join(f"{v:>7.3f}" for v in [*mean_figures(scored), chance])
        print(f"  {name:<32}{values}   {frus[calm].mean():.3f}, {frus[angry].mean():.3f}")


def score_baseline(
    train: tuple[list[Clip], list[Audio]],
    val: tuple[list[Clip], list[Audio]],
    test: tuple[list[Clip], list[Audio]],
    *,
    refit: bool = False,
) -> Scored:
    """The baseline fitted on ``train`` and calibrated on ``val``; with ``refit``, as the model's refit is,
    fitted again on ``train`` and ``val`` keeping the first fit's calibration."""
    classes = classes_for(train[0])
    base = LogMelStatsBaseline(classes, ("angry",))
    val_keep = [i for i, c in enumerate(val[0]) if c.emotion in classes]
    val_audio, val_labels = [val[1][i] for i in val_keep], [val[0][i].emotion for i in val_keep]
    base.fit(train[1], [c.emotion for c in train[0]], val_audio, val_labels)
    if refit:  # an empty validation set leaves the Platt coefficients as they are
        base.fit(list(train[1]) + val_audio, [c.emotion for c in train[0]] + val_labels, [], [])
    probs = base.probabilities(test[1])
    arousal = probs @ np.array([AROUSAL.get(c, 0.5) for c in classes])
    speakers = [f"{c.dataset}:{c.speaker}" for c in test[0]]
    return Scored(
        classes, [c.emotion for c in test[0]], probs, base.frustration_of(probs), ("angry",), arousal, speakers
    )


def is_refit(model: EmotionModel, val_clips: list[Clip]) -> bool:
    """Were these weights trained on validation speakers too (a refit, ``models.training.train`` without
    ``--once``, or a fold model of ``models.training.crossval --keep-models``)?"""
    return bool(set(model.meta.get("train_speakers", ())) & {f"{c.dataset}:{c.speaker}" for c in val_clips})


def write_predictions(path: Path, clips: list[Clip], results: list[dict[str, object]]) -> None:
    with open(path, "w") as f:
        for clip, r in zip(clips, results, strict=True):
            row = {"path": clip.path, "label": r["label"], "scores": r["scores"]}
            row |= {"frustration": r["frustration"], "arousal": r["arousal"]}
            f.write(json.dumps(row) + "\n")


def _without(split: tuple[list[Clip], list[Audio]], dataset: str) -> tuple[list[Clip], list[Audio]]:
    keep = [i for i, c in enumerate(split[0]) if c.dataset != dataset]
    return [split[0][i] for i in keep], [split[1][i] for i in keep]


def shared_corpus(args: argparse.Namespace) -> int:
    """Shipped weights on the test speakers, the baseline beside them, then the cross-corpus check."""
    manifest = default_manifest()
    if not manifest.exists():
        print(f"shared corpus {manifest} not found: set MISE_TEST_DATA or pass --manifest", file=sys.stderr)
        return 2
    root = resolve_root(manifest, args.root, [])
    clips = read_manifest(manifest)
    audio = load_clips(clips, root)
    by_split: dict[str, tuple[list[Clip], list[Audio]]] = {}
    for name in ("train", "val", "test"):
        keep = [i for i, c in enumerate(clips) if c.split == name]
        by_split[name] = ([clips[i] for i in keep], [audio[i] for i in keep])
    test_clips, test_audio = by_split["test"]
    model = EmotionModel(read_weights(args.weights or weights_path(WEIGHTS)))
    speakers = sorted({f"{c.dataset}:{c.speaker}" for c in test_clips})
    print(f"held-out test speakers (never trained on): {', '.join(speakers)}")
    test_logits = model.logits(list(test_audio))
    scored, results = score_logits(model, test_clips, *test_logits)
    report("model, each clip alone", scored)
    print("\n== model, per caller: each test speaker's clips as one caller's turns (as the live path scores them)")
    per_caller(model, test_clips, *test_logits)
    if args.predictions:
        write_predictions(args.predictions, test_clips, results)
    val_clips, val_audio = by_split["val"]
    refit = is_refit(model, val_clips)
    if not args.no_baseline:
        title = "baseline: log-mel statistics + logistic regression" + (", refit likewise" if refit else "")
        report(title, score_baseline(*by_split.values(), refit=refit))
    if refit:
        print("\n(trained on validation speakers, as a refit or a cross-validation fold is: no validation figures)")
    else:
        title = "model on the validation speakers (they chose settings and fit the calibration: optimistic)"
        report(title, score_model(model, val_clips, val_audio)[0], matrix=False)

    cross = args.cross_weights or weights_path(NO_EMODB_WEIGHTS)
    emodb = [i for i, c in enumerate(clips) if c.dataset == "emodb"]
    if cross.exists() and emodb:
        other = EmotionModel(read_weights(cross))
        e_clips, e_audio = [clips[i] for i in emodb], [audio[i] for i in emodb]
        print(
            "\ncross-corpus: trained without EmoDB (python -m models.training.train --exclude-dataset emodb), tested on"
        )
        print("all EmoDB speakers (German, another recording setup)")
        e_logits = other.logits(list(e_audio))
        e_scored = score_logits(other, e_clips, *e_logits)[0]
        report("model, cross-corpus on EmoDB, each clip alone", e_scored, matrix=False)
        print("\n== model, cross-corpus on EmoDB, per caller (each EmoDB speaker's clips as one caller's turns)")
        per_caller(other, e_clips, *e_logits)
        if not args.no_baseline:
            rav = {k: _without(v, "emodb") for k, v in by_split.items()}
            base = score_baseline(rav["train"], rav["val"], (e_clips, e_audio), refit=is_refit(other, rav["val"][0]))
            report("baseline, cross-corpus on EmoDB", base, matrix=False)
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.training.evaluate", description=__doc__.split("\n\n")[0])
    corpus_arguments(ap)
    ap.add_argument("--weights", type=Path, default=None, help="weights to evaluate (default: the shipped ones)")
    ap.add_argument(
        "--cross-weights", type=Path, default=None, help="weights trained without EmoDB (default: the shipped ones)"
    )
    ap.add_argument("--predictions", type=Path, default=None, help="write per-clip JSON lines here")
    ap.add_argument("--test-speakers-only", action="store_true", help="with --manifest: only the SPLITS test speakers")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline (shared corpus only)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    if args.manifest is None:
        return shared_corpus(args)
    if not args.manifest.exists():
        print(f"manifest {args.manifest} not found", file=sys.stderr)
        return 2
    clips = read_manifest(args.manifest)
    if args.test_speakers_only:
        clips = [c for c in clips if c.split == "test"]
    root = resolve_root(args.manifest, args.root, clips)
    try:
        audio = load_clips(clips, root)
    except (OSError, ValueError) as e:
        print(f"cannot read clips: {e}", file=sys.stderr)
        return 1
    model = EmotionModel(read_weights(args.weights or weights_path(WEIGHTS)))
    scored, results = score_model(model, clips, audio)
    report(f"model on {args.manifest.name}", scored)
    if args.predictions:
        write_predictions(args.predictions, clips, results)
        print(f"wrote {len(results)} predictions to {args.predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
