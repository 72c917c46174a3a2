"""Which similarity Adaptive Guidance can threshold: the median cosine similarity of the conditional and
unconditional predictions per step along CFG runs of the digits bed, in the denoised space and in the
noise space (README, decision log 10). A diagnostic, not a test; it needs no ComfyUI.

    python benchmarks/similarity.py [--variant labelnoise30]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@torch.no_grad()
def similarity_curves(variant, w=3.0, n_per_class=50):
    """Median cosine similarity of the conditional and unconditional predictions per step, in the
    denoised space and in the noise space, along CFG trajectories: which space AG can threshold."""
    from benchmarks.beds import digits
    model = digits.load(variant)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    null = torch.full_like(labels, digits.NULL_CLASS)
    sigmas = digits.karras_sigmas()
    x = torch.randn(len(labels), 64, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    print(f"\nSimilarity of the predictions along CFG w={w:g} runs, digits bed ({variant}), median over "
          f"{len(labels)} samples\n\n| step | sigma | cos(D_c, D_u) | cos(eps_c, eps_u) |\n|---|---|---|---|")
    for i in range(len(sigmas) - 1):
        s = torch.full((len(labels),), float(sigmas[i]))
        d_c, d_u = model.denoise(x, s, labels), model.denoise(x, s, null)
        cos_d = torch.nn.functional.cosine_similarity(d_c, d_u, dim=1).median().item()
        cos_e = torch.nn.functional.cosine_similarity(x - d_c, x - d_u, dim=1).median().item()
        if i % 3 == 0 or i == len(sigmas) - 2:
            print(f"| {i} | {float(sigmas[i]):.3f} | {cos_d:.4f} | {cos_e:.5f} |")
        x = x + (x - (d_u + w * (d_c - d_u))) / sigmas[i] * (sigmas[i + 1] - sigmas[i])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=["early", "labelnoise30"], default="labelnoise30")
    similarity_curves(parser.parse_args().variant)


if __name__ == "__main__":
    main()
