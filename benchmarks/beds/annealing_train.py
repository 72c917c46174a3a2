"""Train annealing guidance networks for the test beds with the node's own code
(nodes/annealing_train.py: the paper's objective, the reference trainer's loop), inside ComfyUI:

    COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.beds.annealing_train [--bed digits|gmm_flow] [--images N]

- digits: the digits bed (an EDM model, EPS space; 1 x 8 x 8 latents, one class label per image), for its
  32-step Karras grid sigma 20 -> 0.005 (the quality tables' grid);
- gmm_flow: the GMM bed's exact denoiser as a flow model (benchmarks/beds/comfy_models.gmm_flow_model),
  for 32 steps of its own (simple) schedule.

Prints the held-out loss as training goes (fixed examples, the balance r training ended with) and writes
benchmarks/beds/weights/annealing_{digits,gmm_flow}.safetensors (replacing them: this script owns them),
docs/training_loss_{digits,gmm_flow}.png and the training example's picture in workflows/.
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

from . import digits, gmm  # noqa: E402

OUTPUT = {"digits": digits.WEIGHTS / "annealing_digits.safetensors",
          "gmm_flow": digits.WEIGHTS / "annealing_gmm_flow.safetensors"}
ROOT = Path(__file__).resolve().parents[2]
STEPS = 32
GMM_CLASS = 0  # the quality table's class A


def bed(name: str):
    """(model, training latents, one conditioning per latent, the null conditioning, grid, grid settings,
    held-out latents with their conditionings)."""
    from guidance_schedules.samplers.annealing_training import Grid
    from .comfy_models import class_conditioning, digits_model, gmm_flow_model
    if name == "digits":
        model = digits_model("labelnoise30")
        x_train, y_train, x_test, y_test = digits.load_split()
        n_labels = digits.NULL_CLASS + 1
        sigmas = digits.karras_sigmas(STEPS).double()[:-1]
        grid_settings = {"steps": STEPS, "scheduler": "karras sigma 20 -> 0.005, rho 7"}
        train = (x_train.view(-1, 1, 8, 8), y_train.tolist())
        held = (x_test[:64].view(-1, 1, 8, 8), y_test[:64].tolist())
    else:
        import comfy.samplers
        model, mixture = gmm_flow_model(), gmm.default_mixture()
        g = torch.Generator().manual_seed(0)
        n_labels = mixture.n_classes + 1
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS).double()
        sigmas = sigmas[sigmas > 0]
        grid_settings = {"steps": STEPS, "scheduler": "simple"}
        train = (mixture.sample(4000, GMM_CLASS, g).float().view(-1, 2, 1, 1), [GMM_CLASS] * 4000)
        held = (mixture.sample(64, GMM_CLASS, g).float().view(-1, 2, 1, 1), [GMM_CLASS] * 64)
    timesteps = model.get_model_object("model_sampling").timestep(sigmas.float()).double()
    grid = Grid(tuple(sigmas.tolist()), tuple(timesteps.tolist()))
    return (model, train[0], [class_conditioning([y], n_labels) for y in train[1]], class_conditioning(None, n_labels),
            grid, grid_settings, (held[0], [class_conditioning([y], n_labels) for y in held[1]]))


def held_out_terms(network, model, held, negative, grid, space) -> tuple[float, float]:
    """The mean weighted terms, mean((1 - lambda) eps) and mean(lambda delta), of fixed held-out examples
    (grid steps and lambdas spread evenly, noise seeded): comparable between networks."""
    from guidance_schedules.nodes.annealing_train import run_example
    from guidance_schedules.samplers.annealing_training import Example, example_terms, weighted_terms
    x0s, positives = held
    eps, delta = [], []
    for i in range(len(x0s)):
        position = i % (len(grid.sigmas) - 1)
        noise = torch.randn(x0s[i:i + 1].shape, generator=torch.Generator().manual_seed(i))

        def one(v):
            return torch.tensor([v], dtype=torch.float64)

        def work(denoise, x0):
            example = Example(x0, noise, one(grid.sigmas[position]), one(grid.sigmas[position + 1]),
                              one(grid.timesteps[position]), one((i % 11) / 10))
            with torch.no_grad():
                e, d = weighted_terms(example_terms(network, denoise, example, space), example.lam)
            eps.append(e.item())
            delta.append(d.item())
        run_example(model, positives[i], negative, x0s[i:i + 1], torch.tensor((*grid.sigmas, 0.0)), work)
    return sum(eps) / len(eps), sum(delta) / len(delta)


def train(name: str, images: int, seed: int = 0, out: Path | None = None):
    from guidance_schedules.nodes.annealing_train import timestep_scale, train_network, training_space
    from guidance_schedules.nodes.host_facts import model_facts
    from guidance_schedules.samplers.annealing import AnnealingNetwork, NetworkConfig, load_scheduler
    from guidance_schedules.samplers.annealing_training import TrainingSettings
    model, x0, positives, negative, grid, grid_settings, held = bed(name)
    space = training_space(model_facts(model))
    settings = TrainingSettings(training_images=images, seed=seed)
    with torch.random.fork_rng(devices=[]):  # the network the trainer starts from (train_network's initialisation)
        torch.manual_seed(settings.seed)
        initial = AnnealingNetwork(NetworkConfig(delta_embed_normalization=settings.delta_normalization,
                                                 t_embed_normalization=timestep_scale(model)))
    curve = [(0, held_out_terms(initial, model, held, negative, grid, space))]  # (images, terms)

    def measure(trainer):
        if trainer.progress.updates % max(settings.updates // 10, 1) == 0 or trainer.done:
            curve.append((trainer.progress.images, held_out_terms(trainer.network, model, held, negative, grid, space)))
    out = out or OUTPUT[name]
    out.unlink(missing_ok=True)  # this script owns its output file
    start = time.time()
    trainer = train_network(model, x0, positives, negative, grid, grid_settings, settings, str(out),
                            after_update=measure).trainer
    seconds = time.time() - start
    after = held_out_terms(load_scheduler(str(out)).network.float(), model, held, negative, grid, space)
    assert abs(after[0] - curve[-1][1][0]) < 1e-4 * max(after[0], 1e-9)  # the file holds the trained network
    r = trainer.balance.eps_ema / trainer.balance.delta_ema  # the balance training ended with, for every point
    curve = [(images, e + r * d) for images, (e, d) in curve]
    before, after = curve[0][1], curve[-1][1]
    print(f"{name}: {images} images in {seconds:.0f} s ({1000 * seconds / images:.1f} ms an image, held-out checks "
          f"included); held-out loss (r = {r:.3g}, the balance training ended with) {before:.4f} -> {after:.4f}: "
          + ", ".join(f"{v:.4f}" for _, v in curve) + f"; wrote {out}")
    trainer.held_out = curve
    return trainer, before, after


TRAINING_EXAMPLE = "Annealing guidance, train a network for your model (SDXL)"


def loss_picture(curve: list[tuple[int, float]], title: str, width: int = 800, height: int = 450):
    """The held-out loss against the training images seen."""
    from PIL import Image, ImageDraw, ImageFont
    from guidance_schedules.nodes.plot import nice_ticks
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    left, right, top, bottom = 70, width - 30, 62, height - 56
    values = [v for _, v in curve]
    y_ticks = nice_ticks(min(values), max(values))
    x_ticks = nice_ticks(0, curve[-1][0], count=6)

    def xy(images, v):
        return (left + (right - left) * images / curve[-1][0],
                bottom - (bottom - top) * (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]))
    draw.text((left, 12), title, fill="black", font=font)
    for t in y_ticks:
        _, y = xy(0, t)
        draw.line([(left, y), (right, y)], fill=(235, 235, 235))
        draw.text((left - 8 - draw.textlength(f"{t:g}", font=font), y - 6), f"{t:g}", fill="black", font=font)
    for t in x_ticks:
        x, _ = xy(t, y_ticks[0])
        draw.line([(x, top), (x, bottom)], fill=(235, 235, 235))
        draw.text((x - draw.textlength(f"{t:g}", font=font) / 2, bottom + 6), f"{t:g}", fill="black", font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    points = [xy(i, v) for i, v in curve]
    draw.line(points, fill=(31, 119, 180), width=3)
    for px, py in points:
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=(31, 119, 180))
    draw.text(((left + right) // 2 - 50, height - 30), "training images", fill="black", font=font)
    draw.text((8, top - 22), "held-out loss (64 fixed examples, the final loss balance)", fill="black", font=font)
    return img


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bed", choices=["digits", "gmm_flow", "both"], default="both")
    parser.add_argument("--images", type=int, default=20000, help="training images (the reference's 20000)")
    args = parser.parse_args()
    standalone.import_comfyui(cpu=True, progress_bars=False)
    torch.set_num_threads(2)
    with torch.inference_mode(False):
        for name in (["digits", "gmm_flow"] if args.bed == "both" else [args.bed]):
            trainer, before, after = train(name, args.images)
            picture = loss_picture(trainer.held_out, f"Annealing network for the {name} bed, trained inside ComfyUI "
                                   f"by the training node's code ({args.images} images)")
            out = ROOT / "docs" / f"training_loss_{name}.png"
            picture.save(out)
            print("wrote", out)
            if name == "digits":  # the training example's picture in the template browser
                picture.resize((480, 270)).save(ROOT / "workflows" / f"{TRAINING_EXAMPLE}.jpg", quality=88)


if __name__ == "__main__":
    main()
