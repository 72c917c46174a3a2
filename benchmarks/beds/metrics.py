"""Sample quality on the digits bed, measured with the evaluator's features.

Samples are rounded to the data's 17 grey levels first (the digits are integers 0..16).
- adherence: accuracy of the evaluator on the requested class, and its mean probability;
- per-class Frechet distance between generated and real features (mean over classes);
- precision / recall: k-NN manifolds in feature space (Kynkaeaenniemi et al. 2019), k = 3, per class;
- diversity: mean pairwise feature distance within a class, relative to the real data's;
- near copies: share of samples closer to a training image than 90% of held-out real images are
  (about 0.1 for a model that generalises; far more means it memorised).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg


def quantise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels -> the nearest of the 17 grey levels of the data, back in [-1, 1]."""
    return ((x.clamp(-1, 1) + 1) * 8).round() / 8 - 1


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean.real))


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = torch.cdist(fake, real)
    precision = (d <= r_real.view(1, -1)).any(1).float().mean().item()
    recall = (d.t() <= r_fake.view(1, -1)).any(1).float().mean().item()
    return precision, recall


def mean_pairwise(x: torch.Tensor) -> float:
    d = torch.cdist(x, x)
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)))


@torch.no_grad()
def evaluate(samples: torch.Tensor, labels: torch.Tensor, evaluator, real_x: torch.Tensor, real_y: torch.Tensor,
             train_x: torch.Tensor | None = None) -> dict[str, float]:
    """samples (N, 64) in [-1, 1] with their requested labels; real_x / real_y the reference set."""
    s = quantise(samples)
    logits = evaluator(s)
    prob = logits.softmax(1)
    out = {"accuracy": (logits.argmax(1) == labels).float().mean().item(),
           "p_class": prob[torch.arange(len(labels)), labels].mean().item()}
    f_fake, f_real = evaluator.features(s), evaluator.features(real_x)
    fds, precisions, recalls, diversity = [], [], [], []
    for c in range(10):
        a, b = f_fake[labels == c], f_real[real_y == c]
        if len(a) < 4:
            continue
        fds.append(frechet(a.double().numpy(), b.double().numpy()))
        p, r = precision_recall(b, a)
        precisions.append(p)
        recalls.append(r)
        diversity.append(mean_pairwise(a) / mean_pairwise(b))
    out.update(fd=float(np.mean(fds)), precision=float(np.mean(precisions)), recall=float(np.mean(recalls)),
               diversity=float(np.mean(diversity)))
    if train_x is not None:
        nearest = torch.cdist(s, train_x).min(1).values
        held_out = torch.cdist(real_x, train_x).min(1).values
        out["near_copies"] = (nearest < held_out.quantile(0.1)).float().mean().item()
    return out
