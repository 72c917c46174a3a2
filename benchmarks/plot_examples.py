"""The README's pictures of the Guidance Schedule Plot node, drawn from real runs on the digits bed
through ComfyUI and the pack's nodes: the interval (0.28, 5.42] with w = 3, and Adaptive Guidance
(threshold 0.995) with LinearAG on a batch of three digits.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/plot_examples.py      # about half a minute on 2 cores

Writes docs/plot_interval.png and docs/plot_adaptive.png.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402  (at the pack's root)

ROOT = Path(__file__).resolve().parents[1]


def save(image, name):
    from PIL import Image
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(ROOT / "docs" / name)
    print("wrote", ROOT / "docs" / name)


def main():
    standalone.import_comfyui(cpu=True, progress_bars=False)
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    from benchmarks.beds import digits
    from benchmarks.beds.comfy_models import class_conditioning, digits_model
    from benchmarks.quality import LINEAR_AG_FILE, calibrate_linear_ag
    from guidance_schedules.nodes.adaptive import AdaptiveGuidanceGuider
    from guidance_schedules.nodes.interval import GuidanceIntervalGuider
    from guidance_schedules.nodes.plot import GuidanceSchedulePlot
    model, sigmas, euler = digits_model("labelnoise30"), digits.karras_sigmas(), comfy.samplers.sampler_object("euler")

    def run(guider, labels):
        latent = {"samples": torch.zeros(len(labels), 1, 8, 8)}
        samples = SamplerCustomAdvanced().sample(Noise_RandomNoise(7), guider, euler, sigmas, latent)[0]
        return GuidanceSchedulePlot().plot(samples, guider=guider)[0]

    none = class_conditioning(None, digits.NULL_CLASS + 1)
    interval = GuidanceIntervalGuider().get_guider(model, class_conditioning([3], 11), none, 3.0,
                                                   sigma_hi=5.42, sigma_lo=0.28)[0]
    save(run(interval, [3]), "plot_interval.png")
    calibrate_linear_ag(model, sigmas)
    adaptive = AdaptiveGuidanceGuider().get_guider(model, class_conditioning([3, 8, 1], 11), none, 3.0, 0.995,
                                                   linear_ag=LINEAR_AG_FILE)[0]
    save(run(adaptive, [3, 8, 1]), "plot_adaptive.png")


if __name__ == "__main__":
    main()
