"""The pictures of the Guidance Schedule Plot node in the README and the template browser, drawn from real
runs on the digits bed through ComfyUI and the pack's nodes: the interval (0.28, 5.42] with w = 3,
Adaptive Guidance (threshold 0.995) without and with LinearAG on three digits, and annealing guidance
with the network trained for the bed (lambda 0.4).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/plot_examples.py      # about half a minute on 2 cores

Writes web/docs/plot_interval.png, plot_adaptive.png and plot_annealing.png (the nodes' help pages and the
README show them) and, for every example workflow, workflows/TITLE.jpg:
its card in the template browser (the method and the example's path in large letters, and which steps the real
run guided, one bar per step).
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


def picture(image):
    from PIL import Image
    return Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8))


def save(image, name):
    picture(image).save(ROOT / "web" / "docs" / name)
    print("wrote", ROOT / "web" / "docs" / name)


def wan22_plot():
    """The plot of the interval (0.28, 5.42] over a 20-step Wan 2.2 grid (flow, shift 5, simple), sampled in ComfyUI
    through the pack's patch on a flow model of negligible cost: which steps of the two experts are guided."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base
    import nodes
    from benchmarks.overhead import negligible_model
    from guidance_schedules.nodes.guidance import history_of
    from guidance_schedules.nodes.interval import GuidanceIntervalPatch
    from guidance_schedules.nodes.plot import render
    eps, pos, neg = negligible_model(channels=16)
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.LatentFormat()
    config.latent_format.latent_channels = 16
    config.sampling_settings = {"shift": 5.0, "multiplier": 1000}
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.FLOW, device=torch.device("cpu"))
    base.diffusion_model = eps.model.diffusion_model
    flow = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    patched = GuidanceIntervalPatch().patch(flow, sigma_hi=5.42, sigma_lo=0.28)[0]
    nodes.KSampler().sample(patched, 0, 20, 3.5, "euler", "simple", pos, neg,
                            {"samples": torch.zeros(1, 16, 2, 8, 8)}, 1.0)
    record = history_of(patched).last
    RECORDS["wan22"] = record
    image = render(record, "Wan 2.2, 20 steps: the interval (0.28, 5.42] guides steps 10-18; the high-noise "
                           "expert (0-9) none")
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


RECORDS = {}  # method -> the RunRecord of its real run above, for the cards

# The template browser shows a card's picture at about 270 px wide: a card says, in letters that stay readable
# there, which method and which path the example is, over one bar per step of the method's real run (full
# height where the run guided, a stub where it skipped the unconditional pass; annealing's bars are its scales).
METHODS = {"interval": ("Guidance interval", (31, 102, 170)), "adaptive": ("Adaptive Guidance", (36, 130, 80)),
           "linear_ag": ("Adaptive Guidance", (36, 130, 80)), "annealing": ("Annealing guidance", (200, 96, 20)),
           "wan22": ("Guidance interval", (31, 102, 170))}
CARDS = {  # API name -> (method, the example's path)
    "guidance_interval_patch_sdxl": ("interval", "KSampler"),
    "guidance_interval_guider_sdxl": ("interval", "as in the paper"),
    "guidance_interval_perpneg_sdxl": ("interval", "with Perp-Neg"),
    "guidance_interval_wan22_t2v": ("wan22", "Wan 2.2 video"),
    "adaptive_guidance_patch_sdxl": ("adaptive", "KSampler"),
    "adaptive_guidance_guider_sdxl": ("adaptive", "Custom sampler"),
    "linear_ag_calibration_sdxl": ("linear_ag", "LinearAG: calibrate"),
    "annealing_guidance_patch_sdxl": ("annealing", "KSampler"),
    "annealing_guidance_guider_sdxl": ("annealing", "Custom sampler"),
    "annealing_guidance_lambda_sweep_sdxl": ("annealing", "three lambdas"),
    "annealing_guidance_training_sdxl": ("annealing", "train a network"),
}


def card(method: str, path: str, width: int = 480, height: int = 270):
    from PIL import Image, ImageDraw, ImageFont
    title, colour = METHODS[method]
    record = RECORDS[method]
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width, 72], fill=colour)
    draw.text((20, 14), title, fill="white", font=ImageFont.load_default(size=40))
    draw.text((20, height - 62), path, fill=(30, 30, 30), font=ImageFont.load_default(size=40))
    steps = sorted(record.weight)
    top, bottom, left, right = 92, height - 78, 20, width - 20
    peak = max(max(w) for w in record.weight.values())
    slot = (right - left) / len(steps)
    for i, step in enumerate(steps):
        guided, weight = record.guided[step][0], record.weight[step][0]
        share = (weight - 1) / (peak - 1) if method == "annealing" and peak > 1 else 1.0
        y = bottom - max(0.15, share) * (bottom - top) if guided else bottom - 10
        x0, x1 = left + i * slot + 1, left + (i + 1) * slot - 2
        fill = colour if guided else (200, 200, 200)
        if step in record.estimated:  # LinearAG's estimated unconditional prediction: a paler, lower bar
            y, fill = bottom - 0.5 * (bottom - top), tuple(c + (255 - c) // 2 for c in colour)
        draw.rectangle([x0, y, max(x0 + 1, x1), bottom], fill=fill)
    return img


def save_thumbnails(only: str = ""):
    """workflows/TITLE.jpg for each example (by its API twin's name)."""
    import json
    for path in sorted((ROOT / "workflows").glob("*.json")):
        api = json.loads(path.read_text())["extra"]["guidance_schedules"]["api"]
        if only and only not in api:
            continue
        name = Path(api).stem
        card(*CARDS[name]).save(path.with_suffix(".jpg"), quality=90)
        print("wrote", path.with_suffix(".jpg"))


def main():
    standalone.import_comfyui(cpu=True, progress_bars=False)
    if "--only-wan22" in sys.argv:  # the Wan 2.2 example's picture alone
        wan22_plot()
        save_thumbnails(only="wan22")
        return
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    from benchmarks.beds import digits
    from benchmarks.beds.comfy_models import class_conditioning, digits_model
    from benchmarks.quality import LINEAR_AG_FILE, calibrate_linear_ag
    import folder_paths
    from guidance_schedules.nodes.adaptive import AdaptiveGuidanceGuider
    from guidance_schedules.nodes.annealing import FOLDER, AnnealingGuidanceGuider
    from guidance_schedules.nodes.interval import GuidanceIntervalGuider
    from guidance_schedules.nodes.guidance import history_of
    from guidance_schedules.nodes.plot import GuidanceSchedulePlot
    model, sigmas, euler = digits_model("labelnoise30"), digits.karras_sigmas(), comfy.samplers.sampler_object("euler")

    def run(guider, labels, sampler=euler, method=None):
        latent = {"samples": torch.zeros(len(labels), 1, 8, 8)}
        samples = SamplerCustomAdvanced().sample(Noise_RandomNoise(7), guider, sampler, sigmas, latent)[0]
        RECORDS[method] = history_of(guider).last
        return GuidanceSchedulePlot().plot(samples, guider=guider)[0]

    none = class_conditioning(None, digits.NULL_CLASS + 1)
    interval = GuidanceIntervalGuider().get_guider(model, class_conditioning([3], 11), none, 3.0,
                                                   sigma_hi=5.42, sigma_lo=0.28)[0]
    plots = {"interval": run(interval, [3], method="interval")}
    save(plots["interval"], "plot_interval.png")
    adaptive = AdaptiveGuidanceGuider().get_guider(model, class_conditioning([3, 8, 1], 11), none, 3.0, 0.995)[0]
    plots["adaptive"] = run(adaptive, [3, 8, 1], method="adaptive")
    calibrate_linear_ag(model, sigmas)
    linear = AdaptiveGuidanceGuider().get_guider(model, class_conditioning([3, 8, 1], 11), none, 3.0, 0.995,
                                                 linear_ag=LINEAR_AG_FILE)[0]
    plots["linear_ag"] = run(linear, [3, 8, 1], method="linear_ag")
    save(plots["linear_ag"], "plot_adaptive.png")
    folder_paths.add_model_folder_path(FOLDER, str(digits.WEIGHTS))  # the bed's trained network
    annealing = AnnealingGuidanceGuider().get_guider(model, class_conditioning([3, 8, 1], 11), none,
                                                     "annealing_digits.safetensors", **{"lambda": 0.4})[0]
    plots["annealing"] = run(annealing, [3, 8, 1], comfy.samplers.sampler_object("euler_cfg_pp"), method="annealing")
    save(plots["annealing"], "plot_annealing.png")
    wan22_plot()
    save_thumbnails()


if __name__ == "__main__":
    main()
