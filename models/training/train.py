"""Train the emotion model on a manifest of labelled 8 kHz clips, calibrated on speakers it did not train on.

    python -m models.training.train                                   # the shared corpus -> models/weights/emotion.pt
    python -m models.training.train --exclude-dataset emodb --out models/weights/emotion_no_emodb.pt
    python -m models.training.train --manifest my.csv --root DIR --out my.pt   # your own clips, same CSV format

Speakers listed as ``test`` in ``models.training.data.SPLITS`` are never read. By default the recipe is first
cross-validated over speaker folds of the other speakers (``models.training.crossval``: ``--folds``, ``--jobs``), then
trained on all of them; that refit is what is written, calibrated with the cross-validation's out-of-fold
logits, per turn and per caller (``models.caller``). ``--save-oof F`` keeps those logits, ``--oof F`` reuses
them. ``--once``: a first fit on the training speakers only, calibrated on the validation speakers (SPLITS, or
for other manifests a seeded fifth of the speakers); ``--first-fit W.pt``: a refit keeping such a first fit's
calibration (also the default for manifests of fewer than three speakers).
One thread, fixed seeds: the same command gives the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from models.emotion import read_weights
from models.training.crossval import calibrated_refit
from models.training.data import REPO, Clip
from models.training.fit import FOLDS, add_recipe_arguments, recipe_clips, recipe_of, train

MIN_CV_SPEAKERS = 3  # below this, calibrate on held-out validation speakers instead


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.training.train", description=__doc__.split("\n\n")[0])
    add_recipe_arguments(ap)
    ap.add_argument("--out", type=Path, default=REPO / "models" / "weights" / "emotion.pt")
    ap.add_argument(
        "--once",
        action="store_true",
        help="train once, on the training speakers, calibrated on the validation speakers (default: cross-validate "
        "over speaker folds, then refit on every non-test speaker, calibrated by the out-of-fold logits)",
    )
    ap.add_argument(
        "--first-fit", type=Path, default=None, help="refit a first fit (a --once run), keeping its calibration"
    )
    ap.add_argument("--folds", type=int, default=FOLDS, help=f"speaker folds of the cross-validation (default {FOLDS})")
    ap.add_argument("--jobs", type=int, default=1, help="folds trained at once, one process and one core each")
    ap.add_argument("--oof", type=Path, default=None, help="reuse an earlier run's out-of-fold logits")
    ap.add_argument("--save-oof", type=Path, default=None, help="keep the cross-validation's out-of-fold logits here")
    return ap.parse_args(argv)


def refit_on_validation(
    args: argparse.Namespace, clips: list[Clip], root: Path, recipe: dict[str, Any]
) -> dict[str, Any]:
    """With fewer than MIN_CV_SPEAKERS speakers (or ``--first-fit``): a first fit calibrated on the validation
    speakers, then the refit on every speaker, which keeps that calibration."""
    if args.first_fit:
        first = read_weights(args.first_fit)
        net = {"pitch_bins": 0} | dict(first["net"])  # weights from before the option lack it
        meta = first.get("meta", {})
        same_data = meta.get("excluded_datasets", []) == sorted(args.exclude_dataset)
        same_run = (meta.get("seed"), meta.get("epochs")) == (args.seed, args.epochs)
        if net != recipe["net_config"] or not same_run or not same_data:
            raise ValueError(f"{args.first_fit} was not trained with this recipe")
        print(f"first fit: {args.first_fit} (calibrated on {', '.join(meta.get('val_speakers', []))})")
    else:
        print(f"fewer than {MIN_CV_SPEAKERS} speakers for cross-validation: calibrated on held-out validation speakers")
        first = train(clips, root, **recipe)
    print("refit: training + validation speakers, with the first fit's calibration")
    return train(clips, root, calibration=first, **recipe)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        manifest, clips, root = recipe_clips(args)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    recipe = recipe_of(args)
    speakers = {(c.dataset, c.speaker) for c in clips if c.split != "test" and c.speaker}
    try:
        if args.once:
            blob = train(clips, root, **recipe)
        elif args.first_fit is None and len(speakers) >= MIN_CV_SPEAKERS:
            blob = calibrated_refit(args, clips, root)
        else:
            blob = refit_on_validation(args, clips, root, recipe)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"training failed: {e}", file=sys.stderr)
        return 1
    blob["meta"]["excluded_datasets"] = sorted(args.exclude_dataset)
    blob["meta"]["manifest"] = manifest.name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
