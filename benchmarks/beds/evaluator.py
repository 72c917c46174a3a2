"""A small CNN classifier of the 8x8 digits: class adherence of samples and the features for the
per-class Frechet distance (the 64-d layer before the last ReLU).

Train:  python -m benchmarks.beds.evaluator   (from the pack's root; about a minute on 2 cores)
"""
from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file, save_file

from .digits import SHIFTS, WEIGHTS, load_split, shift_images


class DigitsEvaluator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten())
        self.fc = torch.nn.Linear(64 * 16, 64)
        self.head = torch.nn.Linear(64, 10)
        self.drop = torch.nn.Dropout(0.2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 64) pixels in [-1, 1] -> (B, 64) features (before the last ReLU)."""
        return self.fc(self.conv(x.view(-1, 1, 8, 8)))

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.features(x))))


def train(steps: int = 3000, seed: int = 0, log=print):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = load_split()
    model = DigitsEvaluator()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_train), (128,), generator=g)
        x = shift_images(x_train[idx], torch.randint(0, len(SHIFTS), (128,), generator=g))
        x = x + 0.1 * torch.randn(x.shape, generator=g)  # tolerate sampling noise
        loss = torch.nn.functional.cross_entropy(model(x), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            model.eval()
            with torch.no_grad():
                acc = (model(x_test).argmax(1) == y_test).float().mean().item()
            model.train()
            log(f"step {step}: loss {loss.item():.4f} held-out accuracy {acc:.4f}")
    return model.eval(), acc


def load() -> DigitsEvaluator:
    model = DigitsEvaluator()
    model.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS / "digits_evaluator.safetensors")).items()})
    return model.eval().requires_grad_(False)


def main():
    argparse.ArgumentParser(description="Train the digits evaluator CNN.").parse_args()
    torch.set_num_threads(2)
    model, acc = train()
    save_file({k: v.half() for k, v in model.state_dict().items()}, str(WEIGHTS / "digits_evaluator.safetensors"),
              metadata={"held_out_accuracy": f"{acc:.4f}"})
    print(f"saved, held-out accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
