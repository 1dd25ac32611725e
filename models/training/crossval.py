"""Speaker-grouped cross-validation of a training recipe over every non-test speaker.

    python -m models.training.crossval --out oof.npz [--folds 4] [--jobs 2] [recipe options of models.training.train]

The non-test speakers are dealt into ``--folds`` folds (per dataset, men then women, round robin, so each
fold mixes both corpora and genders). Each fold is held out once: the recipe trains on the other folds (as
``python -m models.training.train --once`` does on the training speakers) and scores the held-out clips. Pooled over
all folds, every non-test speaker is predicted by a model that never heard it: 22 speakers behind each
figure instead of the 6 validation speakers, so recipes and settings can be compared with less noise than a
single split allows. Test speakers are never read.

Prints, pooled over the out-of-fold clips: 4-class UA, angry-vs-neutral balanced accuracy, frustration
ROC-AUC and ECE, and the 4-class UA per fold. The ECE is cross-fitted: each fold's probabilities are
calibrated (temperature, Platt) on the other folds' out-of-fold logits. ``--out`` keeps the out-of-fold
logits (``models.training.crossval.read_oof``) for calibration and per-caller studies; ``--keep-models`` each fold's
model (``fold<k>.pt`` beside its log), calibrated as the refit is, by every out-of-fold logit, so that
``models.training.evaluate --weights`` can score the test speakers with models trained on fewer speakers than the refit.
``--report --out F --calibrated-by G`` also scores F's logits with the calibration and centroids fitted on G's
(another cross-validation, e.g. fewer folds): whether a calibration fitted to one set of fold models holds for
another.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.caller import SHRINK, arrival_order, class_centroids, in_order, platt_frustration, softmax
from models.emotion import EmotionModel, read_weights
from models.training.calibrate import fit_calibration
from models.training.data import AROUSAL, SPLITS, Clip, load_clips
from models.training.evaluate import (
    Scored,
    chance_per_speaker,
    ece_per_speaker,
    figures,
    mean_figures,
    platt_refit,
    ua4,
)
from models.training.fit import FOLDS, add_recipe_arguments, recipe_clips, recipe_of, train
from models.training.metrics import chance_ece, expected_calibration_error

Floats = npt.NDArray[np.float64]


def speaker_folds(clips: list[Clip], folds: int) -> list[set[tuple[str, str]]]:
    """The non-test speakers, as (dataset, speaker) pairs, dealt into ``folds`` folds (one per speaker when
    there are fewer): per dataset, men then women then speakers of unknown gender, each sorted, round robin
    continuing across datasets."""
    genders: dict[tuple[str, str], str] = {}
    for c in clips:
        if c.split != "test":
            genders.setdefault((c.dataset, c.speaker), c.gender)
    rank = {"male": 0, "female": 1}
    order = sorted(genders, key=lambda s: (s[0], rank.get(genders[s], 2), s[1]))
    if len(order) < 2:
        raise ValueError(f"{len(order)} non-test speaker(s): cross-validation needs two or more")
    out: list[set[tuple[str, str]]] = [set() for _ in range(min(folds, len(order)))]
    for i, s in enumerate(order):
        out[i % len(out)].add(s)
    return out


@dataclass
class OutOfFold:
    """Every non-test clip scored by the fold model that did not train on its speaker."""

    classes: tuple[str, ...]
    frustration: tuple[str, ...]
    logits: Floats  # (n, len(classes)), raw
    labels: list[str]
    speakers: list[str]  # dataset:speaker
    fold: npt.NDArray[np.int64]
    recipe: str = ""  # repr of the training recipe that made them


def _run_fold(
    args: argparse.Namespace,
    clips: list[Clip],
    root: Path,
    k: int,
    held: set[tuple[str, str]],
    logs: Path,
    keep_model: bool,
) -> dict[str, Any]:
    """Train on every fold but ``held``; the held-out clips' raw logits (the model kept in ``logs`` if
    ``keep_model``). Runs in a worker process."""
    torch.set_num_threads(1)
    with open(logs / f"fold{k}.log", "w") as log_file:

        def log(line: str) -> None:
            print(line, file=log_file, flush=True)

        blob = train(clips, root, val_speakers=held, log=log, **recipe_of(args))
    if keep_model:
        torch.save(blob, logs / f"fold{k}.pt")
    model = EmotionModel(blob)
    mine = [c for c in clips if (c.dataset, c.speaker) in held and c.emotion in model.classes]
    logits, _ = model.logits(load_clips(mine, root))
    return {
        "classes": list(model.classes),
        "frustration": list(blob["frustration"]),
        "logits": logits,
        "labels": [c.emotion for c in mine],
        "speakers": [f"{c.dataset}:{c.speaker}" for c in mine],
        "seconds": blob["meta"]["train_seconds"],
    }


def cross_validate(
    args: argparse.Namespace, clips: list[Clip], root: Path, logs: Path, *, keep_models: bool = False
) -> OutOfFold:
    """Each fold trained in its own process (``args.jobs`` at a time), its training log (and with
    ``keep_models`` its model, uncalibrated) in ``logs``."""
    folds = speaker_folds(clips, args.folds)
    for k, held in enumerate(folds):
        print(f"fold {k}: {', '.join(f'{d}:{s}' for d, s in sorted(held))}  (log: {logs / f'fold{k}.log'})")
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [
            pool.submit(_run_fold, args, clips, root, k, held, logs, keep_models) for k, held in enumerate(folds)
        ]
        parts = []
        for k, future in enumerate(futures):
            parts.append(future.result())
            print(f"fold {k} trained in {parts[-1]['seconds']:.0f} s", flush=True)
    classes = parts[0]["classes"]
    if any(p["classes"] != classes for p in parts):
        raise ValueError("folds trained on different class sets: a label is missing from some fold's speakers")
    return OutOfFold(
        tuple(classes),
        tuple(parts[0]["frustration"]),
        np.concatenate([p["logits"] for p in parts]),
        [lab for p in parts for lab in p["labels"]],
        [s for p in parts for s in p["speakers"]],
        np.concatenate([np.full(len(p["labels"]), k) for k, p in enumerate(parts)]),
    )


def calibration_of(
    oof: OutOfFold, keep: npt.NDArray[np.bool_], logits: Floats | None = None
) -> tuple[float, tuple[float, float]]:
    """Temperature and Platt coefficients fitted on the out-of-fold logits (or ``logits``) ``keep``
    selects, as ``models.training.train`` fits them on the validation speakers."""
    y = np.array([oof.classes.index(lab) for lab in oof.labels])[keep]
    return fit_calibration((oof.logits if logits is None else logits)[keep], y, frustration_indices(oof))


def frustration_indices(oof: OutOfFold) -> list[int]:
    return [oof.classes.index(c) for c in oof.frustration if c in oof.classes]


def cross_fitted(
    oof: OutOfFold,
    logits: Floats | None = None,
    *,
    source: OutOfFold | None = None,
    source_logits: Floats | None = None,
) -> Scored:
    """Out-of-fold scores (of ``logits`` if given: the out-of-fold logits transformed), each fold calibrated
    on the other folds' rows; with ``source``, on another cross-validation's out-of-fold logits (or
    ``source_logits``) of the speakers outside the fold: a calibration fitted to other fold models."""
    logits = oof.logits if logits is None else logits
    calibrating, calibrating_logits = (oof, logits) if source is None else (source, source_logits)
    probs = np.zeros_like(logits)
    frustration = np.zeros(len(oof.labels))
    for k in np.unique(oof.fold):
        mine = oof.fold == k
        keep = ~mine if source is None else outside(source, oof, mine)
        temperature, platt = calibration_of(calibrating, keep, calibrating_logits)
        probs[mine] = softmax(logits[mine] / temperature)
        frustration[mine] = platt_frustration(probs[mine], frustration_indices(oof), platt)
    arousal = probs @ np.array([AROUSAL.get(c, 0.5) for c in oof.classes])
    return Scored(oof.classes, oof.labels, probs, frustration, oof.frustration, arousal, oof.speakers)


def outside(source: OutOfFold, oof: OutOfFold, mine: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The rows of ``source`` whose speakers are none of the speakers of ``oof``'s rows ``mine``."""
    return ~np.isin(source.speakers, sorted(set(np.array(oof.speakers)[mine])))


def write_oof(path: Path, oof: OutOfFold, recipe: dict[str, Any]) -> None:
    np.savez(
        path,
        classes=np.array(oof.classes),
        frustration=np.array(oof.frustration),
        logits=oof.logits,
        labels=np.array(oof.labels),
        speakers=np.array(oof.speakers),
        fold=oof.fold,
        recipe=np.array(repr(recipe)),
    )


def read_oof(path: Path) -> OutOfFold:
    with np.load(path) as f:
        return OutOfFold(
            tuple(str(c) for c in f["classes"]),
            tuple(str(c) for c in f["frustration"]),
            f["logits"].astype(np.float64),
            [str(s) for s in f["labels"]],
            [str(s) for s in f["speakers"]],
            f["fold"].astype(np.int64),
            str(f["recipe"]),
        )


def same_recipe(stored: str, recipe: dict[str, Any]) -> bool:
    """Whether out-of-fold logits written with recipe ``stored`` (a repr) are of ``recipe``; options added to
    ``models.training.train`` since they were written count at their defaults."""
    defaults = recipe_of(add_recipe_arguments(argparse.ArgumentParser()).parse_args([]))
    return bool({**defaults, **ast.literal_eval(stored)} == recipe)


def report(oof: OutOfFold) -> None:
    scored = cross_fitted(oof)
    f = figures(scored)
    n_speakers = len(set(oof.speakers))
    print(f"\npooled out-of-fold figures, {len(oof.labels)} clips of {n_speakers} speakers (cross-fitted calibration)")
    nan = float("nan")
    print(
        f"  4-class UA {f.get('ua4', nan):.3f}  angry vs neutral BA {f.get('angry_vs_neutral_ba', nan):.3f}"
        f"  frustration AUC {f['frustration_auc']:.3f}  ECE {f['frustration_ece']:.3f}"
        f"  | 8-class UA {f['ua_all']:.3f}  arousal AUC {f['arousal_auc']:.3f}"
    )
    per_fold = [ua4(scored, oof.fold == k) for k in np.unique(oof.fold)]
    print("  4-class UA per fold: " + ", ".join(f"{v:.3f}" for v in per_fold))
    who = np.array(oof.speakers)
    each = np.array([ua4(scored, who == s) for s in sorted(set(oof.speakers))])
    if (~np.isnan(each)).any():
        print(f"  4-class UA per speaker: mean {np.nanmean(each):.3f}, sd {np.nanstd(each):.3f}")
    caller_study(oof)
    ece_of_test_sized_sets(oof)


def ece_of_test_sized_sets(oof: OutOfFold, draws: int = 2000) -> None:
    """How far the ECE of a test split this small strays from the pooled one: the cross-fitted ECE of each
    speaker, and of random speaker subsets with as many speakers per corpus as the test split (SPLITS), each
    clip alone and per caller (random order), beside their chance levels (``models.training.metrics.chance_ece``: the
    median ECE of an exactly calibrated model with the same scores; for the sets, over the first 200 draws),
    and how many speakers lie beyond the 95th percentile of their own chance ECE."""
    who = np.array(oof.speakers)
    pools = {d: sorted({w for w in who if w.startswith(f"{d}:")}) for d in SPLITS}
    shape = {d: len(SPLITS[d]["test"]) for d in SPLITS if pools[d]}
    if not shape or any(len(pools[d]) < n for d, n in shape.items()):
        return
    positive = np.isin(oof.labels, oof.frustration)
    rng = np.random.default_rng(0)
    sets = [[s for d, n in shape.items() for s in rng.choice(pools[d], n, replace=False)] for _ in range(draws)]
    picks = [np.isin(who, chosen) for chosen in sets]
    what = " + ".join(f"{n} {d}" for d, n in shape.items())
    print(f"\nfrustration ECE of test-sized speaker sets: random sets of {what} speakers ({draws} draws)")
    for name, scored in (
        ("each clip alone", cross_fitted(oof)),
        ("per caller, random order", cross_fitted(oof, per_caller(oof, "random", 0))),
    ):
        e = np.array([expected_calibration_error(positive[m], scored.frustration[m]) for m in picks])
        each = ece_per_speaker(scored)
        at_chance = np.median([np.median(chance_ece(scored.frustration[m], draws=100)) for m in picks[:200]])
        chance = chance_per_speaker(scored)
        medians = [float(np.median(v)) for v in chance.values()]
        beyond = sum(each[sp] > np.percentile(v, 95) for sp, v in chance.items())
        print(
            f"  {name:<26} sets: median {np.median(e):.3f} (at chance {at_chance:.3f}),"
            f" 10-90% {np.percentile(e, 10):.3f}-{np.percentile(e, 90):.3f}, max {e.max():.3f},"
            f" <= 0.05 in {(e <= 0.05).mean():.0%}  | one speaker: {min(each.values()):.3f}-{max(each.values()):.3f}"
            f" (at chance {min(medians):.3f}-{max(medians):.3f}; over its 95th percentile: {beyond} of {len(each)})"
        )
        fits = np.array([platt_refit(positive[m], scored.frustration[m])[:2] for m in picks])
        slope, shift = fits[:, 0], fits[:, 1]
        print(
            f"  {'':<26} Platt refitted on each set (in sample): slope median {np.median(slope):.2f},"
            f" 5-95% {np.percentile(slope, 5):.2f}-{np.percentile(slope, 95):.2f}; intercept median"
            f" {np.median(shift):+.2f}, 5-95% {np.percentile(shift, 5):+.2f}-{np.percentile(shift, 95):+.2f},"
            f" range {shift.min():+.2f}-{shift.max():+.2f}"
        )


def per_caller(
    oof: OutOfFold,
    order: str,
    seed: int,
    *,
    source: OutOfFold | None = None,
    fallback: Floats | None = None,
    shrink: float = SHRINK,
) -> Floats:
    """The out-of-fold logits through ``models.caller``: each speaker's clips as one caller's turns, in
    ``order`` (``models.caller.arrival_order``), with the class centroids of the other folds' clips (of
    ``source``'s clips of the speakers outside the fold, if given; a class without clips there takes its
    row of ``fallback``, ``models.caller.class_centroids``)."""
    rng = np.random.default_rng(seed)
    out = oof.logits.copy()
    who = np.array(oof.speakers)
    calm = np.array(oof.labels) == "neutral"
    for k in np.unique(oof.fold):
        mine = oof.fold == k
        fitting, other = (oof, ~mine) if source is None else (source, outside(source, oof, mine))
        labels = [lab for lab, o in zip(fitting.labels, other, strict=True) if o]
        centroids = class_centroids(fitting.logits[other], labels, oof.classes, fallback=fallback)
        for s in sorted(set(who[mine])):
            rows = arrival_order(np.flatnonzero(who == s), calm, order, rng)
            out[rows] = in_order(oof.logits[rows], range(len(rows)), centroids, shrink=shrink)
    return out


def transfer_report(oof: OutOfFold, source: OutOfFold, seeds: int = 10) -> None:
    """Does a calibration fitted to one set of fold models hold for another, as the shipped calibration,
    fitted to the fold models, must hold for the refit? ``oof``'s out-of-fold logits scored with the
    calibration and centroids fitted on ``source``'s out-of-fold logits of the other speakers, beside
    ``oof``'s own cross-fitted calibration."""
    if source.classes != oof.classes or source.frustration != oof.frustration:
        raise ValueError("the two cross-validations have different classes")
    angry = np.isin(oof.labels, oof.frustration)
    print("\ncalibration transfer: these logits calibrated by their own folds, and by the other cross-validation's")
    print(f"  {'protocol':<34}{'calibrated by':<15}UA4    BA     AUC    ECE     mean frustration, angry clips")

    def line(name: str, by: str, runs: list[Scored]) -> None:
        values = "  ".join(f"{v:.3f}" for v in mean_figures(runs))
        print(f"  {name:<34}{by:<15}{values}   {np.mean([s.frustration[angry] for s in runs]):.3f}")

    line("each clip alone", "own folds", [cross_fitted(oof)])
    line("each clip alone", "other", [cross_fitted(oof, source=source, source_logits=source.logits)])
    for order, n in (("random", seeds), ("calm first", 1)):
        name = f"per caller, {order}" + (f" ({n})" if n > 1 else "")
        own = [cross_fitted(oof, per_caller(oof, order, k)) for k in range(n)]
        other = [
            cross_fitted(
                oof,
                per_caller(oof, order, k, source=source),
                source=source,
                source_logits=per_caller(source, order, k),
            )
            for k in range(n)
        ]
        line(name, "own folds", own)
        line(name, "other", other)


def caller_study(oof: OutOfFold, seeds: int = 10) -> None:
    """Pooled figures with each speaker's clips scored as one caller's turns (``models.caller``), in random
    order (mean over ``seeds`` orders) and with the calm turns first or last; calibration cross-fitted on the
    other folds' adjusted logits."""
    if "neutral" not in oof.classes:
        return
    calm = np.array(oof.labels) == "neutral"
    angry = np.isin(oof.labels, oof.frustration)

    def line(name: str, runs: list[Scored]) -> None:
        values = "  ".join(f"{v:.3f}" for v in mean_figures(runs))
        mean_f = np.mean([s.frustration for s in runs], axis=0)
        print(f"  {name:<34}{values}   {mean_f[calm].mean():.3f}  {mean_f[angry].mean():.3f}")

    print("\nper caller (models.caller: each speaker's clips as one call's turns, their voice offset removed)")
    print(f"  {'protocol':<34}UA4    BA     AUC    ECE     mean frustration: calm clips, angry clips")
    line("each clip alone", [cross_fitted(oof)])
    line(f"per caller, random order ({seeds})", [cross_fitted(oof, per_caller(oof, "random", k)) for k in range(seeds)])
    line("per caller, calm clips first", [cross_fitted(oof, per_caller(oof, "calm first", 0))])
    line("per caller, calm clips last", [cross_fitted(oof, per_caller(oof, "calm last", 0))])


def calibrate(oof: OutOfFold) -> dict[str, Any]:
    """The shipped calibration from out-of-fold logits: temperature and Platt per clip, and per caller the
    class centroids with a temperature and Platt fitted on the per-caller adjusted logits (random order)."""
    temperature, platt = calibration_of(oof, np.ones(len(oof.labels), dtype=bool))
    adjusted = per_caller(oof, "random", 0)
    caller_t, caller_platt = calibration_of(oof, np.ones(len(oof.labels), dtype=bool), adjusted)
    return {
        "temperature": temperature,
        "platt": list(platt),
        "caller": {
            "centroids": class_centroids(oof.logits, oof.labels, oof.classes).tolist(),
            "shrink": SHRINK,
            "temperature": caller_t,
            "platt": list(caller_platt),
        },
    }


def calibrated_refit(args: argparse.Namespace, clips: list[Clip], root: Path) -> dict[str, Any]:
    """``python -m models.training.train``'s default: cross-validate the recipe (or read the out-of-fold logits of an
    earlier run from ``args.oof``), train it on every non-test speaker, and calibrate that with the
    out-of-fold logits (kept in ``args.save_oof`` if given)."""
    recipe = recipe_of(args)
    oof_path = args.oof
    if oof_path is not None:
        oof = read_oof(oof_path)
        speakers = {f"{c.dataset}:{c.speaker}" for c in clips if c.split != "test"}
        if not same_recipe(oof.recipe, recipe) or set(oof.speakers) != speakers:
            raise ValueError(f"{oof_path} was not made with this recipe and these speakers")
        print(f"out-of-fold logits: {oof_path}")
    else:
        with tempfile.TemporaryDirectory(prefix="mise-cv-") as logs:
            oof = cross_validate(args, clips, root, Path(logs))
        if args.save_oof:
            write_oof(args.save_oof, oof, recipe)
        report(oof)
    calibration = calibrate(oof)
    print("refit: every non-test speaker, calibrated by the out-of-fold logits")
    blob = train(clips, root, calibration={"classes": list(oof.classes), **calibration, "meta": {}}, **recipe)
    return calibrated_by(blob, oof, calibration)


def calibrated_by(blob: dict[str, Any], oof: OutOfFold, calibration: dict[str, Any]) -> dict[str, Any]:
    """``blob`` with ``calibration`` (``calibrate(oof)``): temperature, Platt and per-caller section."""
    blob = blob | calibration
    blob["meta"] = blob["meta"] | {
        "calibration_speakers": sorted(set(oof.speakers)),
        "calibration": f"out-of-fold logits of {len(np.unique(oof.fold))} speaker folds",
    }
    return blob


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.training.crossval", description=__doc__.split("\n\n")[0])
    add_recipe_arguments(ap)
    ap.add_argument("--folds", type=int, default=FOLDS, help=f"speaker folds (default {FOLDS})")
    ap.add_argument("--jobs", type=int, default=1, help="folds trained at once, one process and one core each")
    ap.add_argument("--out", type=Path, required=True, help="where to keep the out-of-fold logits (.npz)")
    ap.add_argument(
        "--keep-models",
        action="store_true",
        help="keep each fold's model (fold<k>.pt beside its log), calibrated by every out-of-fold logit",
    )
    ap.add_argument("--report", action="store_true", help="only print the figures of an existing --out file")
    ap.add_argument(
        "--calibrated-by",
        type=Path,
        default=None,
        help="with --report: also score --out's logits with the calibration fitted on this cross-validation's",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report:
        oof = read_oof(args.out)
        report(oof)
        try:
            if args.calibrated_by is not None:
                transfer_report(oof, read_oof(args.calibrated_by))
        except ValueError as e:
            print(f"cannot compare with {args.calibrated_by}: {e}", file=sys.stderr)
            return 1
        return 0
    t0 = time.perf_counter()
    try:
        _, clips, root = recipe_clips(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        logs = args.out.parent / (args.out.stem + "-logs")
        logs.mkdir(exist_ok=True)
        oof = cross_validate(args, clips, root, logs, keep_models=args.keep_models)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"cross-validation failed: {e}", file=sys.stderr)
        return 1
    write_oof(args.out, oof, recipe_of(args))
    if args.keep_models:
        calibration = calibrate(oof)
        for k in np.unique(oof.fold):
            path = logs / f"fold{k}.pt"
            torch.save(calibrated_by(read_weights(path), oof, calibration), path)
    report(oof)
    took = time.perf_counter() - t0
    print(f"\n{len(np.unique(oof.fold))} folds in {took:.0f} s ({args.jobs} at a time); logits in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
