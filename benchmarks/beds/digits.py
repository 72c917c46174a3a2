"""A class-conditional diffusion model on scikit-learn's handwritten digits (8x8, 10 classes).

Residual MLP on the 64 pixels with EDM preconditioning (Karras et al. 2022), conditioned on the
noise level, the class (10 = the null class, used for the unconditional prediction) and a +-1 pixel
shift label: training images are shifted at random and the model is told the shift, so the
augmentation never leaks into samples (which use shift (0, 0)).

Train:  python -m benchmarks.beds.digits --variant early        (from the pack's root)
        python -m benchmarks.beds.digits --variant labelnoise30
Variants (both shipped in weights/, they answer different questions):
- early: stopped at the best held-out loss, before convergence, so guidance has something to fix
  (a converged model gets the class right without guidance);
- labelnoise30: 30% of the training labels redrawn at random, so class adherence depends strongly
  on the guidance weight.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = Path(__file__).resolve().parent / "weights"
NULL_CLASS = 10
SIGMA_DATA = 0.8
SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
NO_SHIFT = SHIFTS.index((0, 0))
SEED = 0


def load_split(seed: int = SEED):
    """Digits scaled to [-1, 1] as (N, 64) float tensors, split 80/20 with a fixed seed.
    Returns (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 8.0 - 1.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = len(x) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def shift_images(x: torch.Tensor, shift_index: torch.Tensor) -> torch.Tensor:
    """Shift each 8x8 image by its (dy, dx), filling with the background value -1."""
    imgs = x.view(-1, 8, 8)
    padded = torch.nn.functional.pad(imgs, (1, 1, 1, 1), value=-1.0)
    out = torch.empty_like(imgs)
    for k, (dy, dx) in enumerate(SHIFTS):
        rows = shift_index == k
        if rows.any():
            out[rows] = padded[rows, 1 - dy:9 - dy, 1 - dx:9 - dx]
    return out.view(-1, 64)


class ResidualBlock(torch.nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.fc1 = torch.nn.Linear(width, width * 2)
        self.fc2 = torch.nn.Linear(width * 2, width)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, h, emb):
        return h + self.fc2(self.drop(torch.nn.functional.silu(self.fc1(self.norm(h) + emb))))


class DigitsDenoiser(torch.nn.Module):
    """F(c_in x, c_noise, class, shift); D = c_skip x + c_out F (EDM preconditioning)."""

    def __init__(self, width: int = 256, blocks: int = 4, dropout: float = 0.1):
        super().__init__()
        self.width, self.blocks = width, blocks
        self.inp = torch.nn.Linear(64, width)
        self.noise = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.SiLU(), torch.nn.Linear(width, width))
        self.label = torch.nn.Embedding(NULL_CLASS + 1, width)
        self.shift = torch.nn.Embedding(len(SHIFTS), width)
        self.body = torch.nn.ModuleList([ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 64))
        self.register_buffer("freqs", torch.randn(16, generator=torch.Generator().manual_seed(1)) * 4)

    def raw(self, x_in, c_noise, label, shift):
        angles = c_noise.view(-1, 1) * self.freqs.view(1, -1) * 2 * math.pi
        emb = self.noise(torch.cat([angles.sin(), angles.cos()], dim=1)) + self.label(label) + self.shift(shift)
        h = self.inp(x_in)
        for block in self.body:
            h = block(h, emb)
        return self.out(h)

    def denoise(self, x, sigma, label, shift=None):
        """D(x; sigma, class): x and the result are (B, 64) in [-1, 1] pixel units; sigma (B,)."""
        sigma = sigma.view(-1, 1).to(x.dtype)
        if shift is None:
            shift = torch.full((x.shape[0],), NO_SHIFT, dtype=torch.long, device=x.device)
        c_skip = SIGMA_DATA ** 2 / (sigma ** 2 + SIGMA_DATA ** 2)
        c_out = sigma * SIGMA_DATA / (sigma ** 2 + SIGMA_DATA ** 2).sqrt()
        c_in = 1 / (sigma ** 2 + SIGMA_DATA ** 2).sqrt()
        return c_skip * x + c_out * self.raw(c_in * x, sigma.log().view(-1) / 4, label, shift)


def edm_loss(model, x0, label, shift, generator):
    b = x0.shape[0]
    sigma = (torch.randn(b, generator=generator) * 1.2 - 1.2).exp()
    noisy = x0 + torch.randn(x0.shape, generator=generator) * sigma.view(-1, 1)
    weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
    return (weight.view(-1, 1) * (model.denoise(noisy, sigma, label, shift) - x0) ** 2).mean()


def train(variant: str, steps: int = 3000, batch: int = 256, seed: int = SEED, log=print):
    """Train a variant; returns (EMA model, info dict). Deterministic for a seed on the CPU."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = load_split()
    labels = y_train.clone()
    if variant == "labelnoise30":
        redraw = torch.rand(len(labels), generator=g) < 0.3
        labels[redraw] = torch.randint(0, 10, (int(redraw.sum()),), generator=g)
    model = DigitsDenoiser()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    eval_g = torch.Generator().manual_seed(seed + 1)
    best, best_state, best_step = float("inf"), None, 0
    start = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_train), (batch,), generator=g)
        shift = torch.randint(0, len(SHIFTS), (batch,), generator=g)
        label = labels[idx].clone()
        label[torch.rand(batch, generator=g) < 0.15] = NULL_CLASS  # learn the unconditional model too
        loss = edm_loss(model, shift_images(x_train[idx], shift), label, shift, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - 0.995)
        if step % 100 == 0:
            with torch.no_grad():
                eval_g.manual_seed(seed + 1)  # the same held-out noise every time
                noshift = torch.full((len(x_test),), NO_SHIFT)
                held_out = sum(edm_loss(ema, x_test, y_test, noshift, eval_g).item() for _ in range(8)) / 8
            if held_out < best:
                best, best_state, best_step = held_out, copy.deepcopy(ema.state_dict()), step
            log(f"step {step}: train {loss.item():.4f} held-out {held_out:.4f} ({time.time() - start:.0f} s)")
    if variant == "early":
        ema.load_state_dict(best_state)
        chosen = best_step
    else:
        chosen = steps
    return ema, {"variant": variant, "steps": str(chosen), "held_out_loss": f"{best:.5f}", "seed": str(seed),
                 "sigma_data": str(SIGMA_DATA), "width": str(model.width), "blocks": str(model.blocks)}


def save(model, info, path):
    save_file({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, str(path), metadata=info)


def load(variant: str) -> DigitsDenoiser:
    """A shipped variant ('early' or 'labelnoise30'), in eval mode, float32."""
    path = WEIGHTS / f"digits_{variant}.safetensors"
    model = DigitsDenoiser()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def main():
    parser = argparse.ArgumentParser(description="Train a digits test-bed model.")
    parser.add_argument("--variant", choices=["early", "labelnoise30"], required=True)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, info = train(args.variant, args.steps)
    WEIGHTS.mkdir(exist_ok=True)
    save(model, info, WEIGHTS / f"digits_{args.variant}.safetensors")
    print("saved", info)


if __name__ == "__main__":
    main()


def karras_sigmas(steps: int = 32, sigma_min: float = 0.005, sigma_max: float = 20.0, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)]).float()


@torch.no_grad()
def sample_cfg(model: DigitsDenoiser, labels: torch.Tensor, w: float, sigmas: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Plain Euler with CFG, outside ComfyUI: a reference for the tests and the training script."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), 64, generator=g) * sigmas[0]
    null = torch.full_like(labels, NULL_CLASS)
    for i in range(len(sigmas) - 1):
        s = torch.full((len(labels),), float(sigmas[i]))
        d_c = model.denoise(x, s, labels)
        d = d_c if w == 1 else model.denoise(x, s, null) + w * (d_c - model.denoise(x, s, null))
        x = x + (x - d) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x
