"""The reference the model must beat: utterance statistics of the same level-normalised log-mel (mean and
standard deviation of each band over the trimmed clip) and a multinomial logistic regression (L2),
trained on the same speakers, frustration Platt-calibrated on the same validation speakers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from models.audio import Audio, trim
from models.caller import frustration_log_odds, platt_frustration
from models.net import LogMel
from models.net_config import FRONT_END
from models.training.calibrate import fit_platt

L2 = 1e-2  # chosen on the validation speakers (1e-3..1e-1 within 0.02 UA of each other)


def statistics(audio: list[Audio]) -> npt.NDArray[np.float64]:
    """Per-clip mean and standard deviation of each log-mel band: ``(len(audio), 2 * n_mels)``."""
    front = LogMel(**FRONT_END)
    rows = []
    with torch.inference_mode():
        for x in audio:
            spec, _ = front(torch.from_numpy(trim(x))[None, :])
            rows.append(torch.cat([spec[0].mean(dim=1), spec[0].std(dim=1)]).double().numpy())
    return np.stack(rows)


def fit_logistic(xt: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class-weighted multinomial logistic regression with an L2 penalty (``L2``, not on the bias): the
    weights ``(features, n_classes)`` for standardised features ``xt`` whose last column is ones."""
    counts = torch.bincount(y, minlength=n_classes).double()
    class_weight = counts.sum() / (n_classes * counts.clamp(min=1))
    w = torch.zeros(xt.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w, y, weight=class_weight) + L2 * (w[:-1] ** 2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return w.detach()


class LogMelStatsBaseline:
    def __init__(self, classes: tuple[str, ...], frustration: tuple[str, ...]) -> None:
        self.classes = classes
        self.frustration = [i for i, c in enumerate(classes) if c in frustration]
        self.mean = np.zeros(1)
        self.std = np.ones(1)
        self.weight = torch.zeros(1)
        self.platt = (1.0, 0.0)

    def fit(self, audio: list[Audio], labels: list[str], val_audio: list[Audio], val_labels: list[str]) -> None:
        x = statistics(audio)
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        xt = torch.tensor(np.c_[(x - self.mean) / self.std, np.ones(len(x))], dtype=torch.float64)
        y = torch.tensor([self.classes.index(c) for c in labels])
        self.weight = fit_logistic(xt, y, len(self.classes))
        if val_audio and self.frustration:
            p = self.probabilities(val_audio)
            positive = np.isin([self.classes.index(c) for c in val_labels], self.frustration)
            self.platt = fit_platt(frustration_log_odds(p, self.frustration), positive)

    def probabilities(self, audio: list[Audio]) -> npt.NDArray[np.float64]:
        x = (statistics(audio) - self.mean) / self.std
        z = torch.tensor(np.c_[x, np.ones(len(x))], dtype=torch.float64) @ self.weight
        return np.asarray(torch.softmax(z, dim=1).numpy())

    def frustration_of(self, probs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return platt_frustration(probs, self.frustration, self.platt)
