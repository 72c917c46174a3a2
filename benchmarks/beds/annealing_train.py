"""Train an annealing guidance scheduler network for the digits bed (the paper's objective).

    python -m benchmarks.beds.annealing_train          (from the pack's root; a few minutes on 2 cores)

Objective (Yehezkel et al. 2025), per example with lambda ~ U(0, 1):
    L = lambda * ||delta_{t-1}||^2 + (1 - lambda) * ||eps_hat_t - eps||^2
where x_t = x0 + sigma_t eps from a real image x0, eps_hat_t is the guided noise estimate with the
network's scale w_t, x_{t-1} is the CFG++ (unconditional re-noising) Euler step from x_t, and
delta_{t-1} = eps_u - eps_c at x_{t-1}: the gradient flows through the frozen model's evaluation
there. The bed model is an EDM model, so the network reads the model's own timestep
c_noise = log(sigma) / 4, which ComfyUI's EDM model sampling also hands over, and its file says so
in `trained_for` (prediction "edm", 1 latent channel, "continuous" timesteps).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import standalone  # noqa: E402  (at the pack's root)

standalone.import_pack()  # the pack's samplers/, without its ComfyUI __init__
from guidance_schedules.samplers.annealing import (AnnealingNetwork, AnnealingScheduler, NetworkConfig,  # noqa: E402
                                                   TrainedFor, save_scheduler)

from . import digits  # noqa: E402

OUTPUT = digits.WEIGHTS / "annealing_digits.safetensors"
TRAINED_FOR = TrainedFor(model_family="digits_bed", prediction="edm", latent_channels=1, timesteps="continuous",
                         source="benchmarks/beds/annealing_train.py (digits labelnoise30)")


def train(steps: int = 1500, batch: int = 256, seed: int = 0, log=print) -> AnnealingScheduler:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = digits.load("labelnoise30")
    x_train, y_train, _, _ = digits.load_split()
    sigmas = digits.karras_sigmas(32, 0.005, 20.0).double()
    config = NetworkConfig(t_embed_normalization=1.0, delta_embed_normalization=5.0)
    net = AnnealingNetwork(config).double()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    null = torch.full((batch,), digits.NULL_CLASS)
    start = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_train), (batch,), generator=g)
        x0, label = x_train[idx].double(), y_train[idx]
        i = torch.randint(0, len(sigmas) - 2, (batch,), generator=g)  # a step with a next sigma > 0
        s, s_next = sigmas[i].view(-1, 1), sigmas[i + 1].view(-1, 1)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x = x0 + s * eps
        lam = torch.rand(batch, generator=g, dtype=torch.float64)
        with torch.no_grad():
            d_c, d_u = model.denoise(x.float(), s.view(-1).float(), label).double(), \
                model.denoise(x.float(), s.view(-1).float(), null).double()
        delta_norm = ((d_c - d_u) / s).norm(dim=1)
        w = net(s.view(-1).log() / 4, delta_norm, lam).view(-1, 1)
        d_hat = d_u + w * (d_c - d_u)
        eps_hat = (x - d_hat) / s
        x_next = d_hat + s_next * (x - d_u) / s  # CFG++: re-noise with the unconditional prediction
        delta_next = (model.denoise(x_next.float(), s_next.view(-1).float(), label).double()
                      - model.denoise(x_next.float(), s_next.view(-1).float(), null).double()) / s_next
        loss = (lam * (delta_next ** 2).sum(1) + (1 - lam) * ((eps_hat - eps) ** 2).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log(f"step {step}: loss {loss.item():.3f}, w mean {w.mean().item():.3f} "
                f"[{w.min().item():.2f}, {w.max().item():.2f}] ({time.time() - start:.0f} s)")
    return AnnealingScheduler(net.float().eval().requires_grad_(False), TRAINED_FOR, str(OUTPUT))


def main():
    parser = argparse.ArgumentParser(description="Train the digits bed's annealing scheduler network.")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    scheduler = train(args.steps)
    OUTPUT.unlink(missing_ok=True)  # this script owns its output file
    save_scheduler(scheduler, str(OUTPUT))
    print("saved", OUTPUT)


if __name__ == "__main__":
    main()
