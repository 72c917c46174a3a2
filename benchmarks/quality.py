"""Quality of the guidance methods on the test beds, sampled through ComfyUI with this pack's nodes.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/quality.py            # both beds, 3 seeds
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/quality.py --bed digits --variant labelnoise30

Bed 1 (gmm): exact denoisers of a 2-D class-conditional Gaussian mixture; per setting: modes of
class A covered (of 4), the smallest mode's share relative to the truth, sliced Wasserstein
distance to the true conditional, share of samples more than 4 stds off the data.
Bed 1 as a flow model (gmm_flow): CFG, CFG++ and annealing guidance with the network trained for it; in_class
is the share of samples nearest to a component of the requested class (adherence).
Bed 2 (digits): the shipped digits models; per setting: model evaluations per image, class
adherence (evaluator accuracy, mean probability of the requested class), per-class Frechet
distance of evaluator features, precision / recall, within-class diversity relative to real data.
Numbers are means over seeds with the spread (max - min) in brackets. A PNG of adherence against
FD, one curve per method, is written for the README. Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402  (at the pack's root)

ROOT = Path(__file__).resolve().parents[1]
LINEAR_AG_FILE = "digits_bed_euler_32.safetensors"


@dataclass(frozen=True)
class Method:
    """One setting of the tables: its row, the plot curve it belongs to and its point's number there,
    the sampler it runs with, and the guider it samples through."""

    label: str
    curve: str
    point: float  # what moves along the curve: w, AG's threshold or lambda
    guider: Callable  # (model, positive, negative) -> GUIDER
    sampler: str = "euler"
    cfg_w: float | None = None  # plain CFG's w: its samples are the PSNR reference of the settings below
    compare_with_cfg_w: float | None = None  # the CFG w whose samples this setting is compared with (PSNR)


def _cfg_guider(w):
    def guider(model, pos, neg):
        import comfy.samplers
        g = comfy.samplers.CFGGuider(model)
        g.set_conds(pos, neg)
        g.set_cfg(w)
        return g
    return guider


def cfg(w) -> Method:
    return Method(f"CFG w={w:g}", "CFG", w, _cfg_guider(w), cfg_w=w)


def cfgpp(w) -> Method:
    return Method(f"CFG++ (euler_cfg_pp) w={w:g}", "CFG++", w, _cfg_guider(w), sampler="euler_cfg_pp")


def interval(w, lo, hi) -> Method:
    def guider(model, pos, neg):
        from guidance_schedules.nodes.interval import GuidanceIntervalGuider
        return GuidanceIntervalGuider().get_guider(model, pos, neg, w, sigma_hi=hi, sigma_lo=lo)[0]
    return Method(f"interval ({lo:g}, {hi:g}] w={w:g}", f"interval ({lo:g}, {hi:g}]", w, guider, compare_with_cfg_w=w)


def adaptive(w, threshold, linear_ag=None) -> Method:
    def guider(model, pos, neg):
        from guidance_schedules.nodes.adaptive import AdaptiveGuidanceGuider
        return AdaptiveGuidanceGuider().get_guider(model, pos, neg, w, threshold, linear_ag=linear_ag or "none")[0]
    if linear_ag:
        return Method(f"AG threshold {threshold:g} + LinearAG w={w:g}", f"AG + LinearAG w={w:g}", threshold, guider,
                      compare_with_cfg_w=w)
    return Method(f"AG threshold {threshold:g} w={w:g}", f"AG w={w:g}", threshold, guider, compare_with_cfg_w=w)


def annealing(lam, network="annealing_digits.safetensors") -> Method:
    """The annealing guidance network trained for the bed (benchmarks/beds/annealing_train.py, through the
    training node's code); it re-noises with the unconditional prediction."""
    def guider(model, pos, neg):
        import folder_paths
        from benchmarks.beds import digits
        from guidance_schedules.nodes.annealing import FOLDER, AnnealingGuidanceGuider
        folder_paths.add_model_folder_path(FOLDER, str(digits.WEIGHTS))
        return AnnealingGuidanceGuider().get_guider(model, pos, neg, network, **{"lambda": lam})[0]
    return Method(f"annealing lambda={lam:g} (euler_cfg_pp)", "annealing", lam, guider, sampler="euler_cfg_pp")


def gmm_methods():
    ws = [1.0, 2.0, 4.0, 8.0]
    return [cfg(w) for w in ws] + [interval(w, 0.1, 1.0) for w in ws[1:]] + [interval(w, 0.3, 3.0) for w in ws[1:]]


def gmm_flow_methods():
    return [cfg(w) for w in (1.0, 2.0, 4.0, 8.0)] + [cfgpp(w) for w in (1.0, 1.5, 2.0, 3.0)] + \
           [annealing(lam, "annealing_gmm_flow.safetensors") for lam in (0.05, 0.4, 0.8, 1.0)]


def digits_methods():
    ws = [1.5, 2.0, 3.0, 4.0, 6.0]
    return [cfg(1.0)] + [cfg(w) for w in ws] + [interval(w, 0.28, 5.42) for w in ws] + \
           [interval(w, 0.5, 20.0) for w in ws] + [interval(w, 0.1, 2.0) for w in ws] + \
           [adaptive(w, t) for w in (2.0, 3.0) for t in (0.99, 0.995, 0.999)] + \
           [adaptive(3.0, t, LINEAR_AG_FILE) for t in (0.995, 0.999, 2.0)] + \
           [cfgpp(w) for w in (1.0, 1.1, 1.25)] + [annealing(lam) for lam in (0.05, 0.4, 0.8, 1.0)]


def psnr(a, b):
    """PSNR of two sample sets in [-1, 1] pixel units (peak-to-peak 2)."""
    mse = ((a - b) ** 2).mean().item()
    return 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()


def sample(model, method: Method, labels, n_labels, sigmas, seed, shape):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    from benchmarks.beds.comfy_models import class_conditioning, network_of
    from guidance_schedules.nodes.guidance import history_of
    pos, neg = class_conditioning(labels, n_labels), class_conditioning(None, n_labels)
    guider = method.guider(model, pos, neg)
    net = network_of(model)
    net.rows.update(cond=0, uncond=0)
    latent = {"samples": torch.zeros(len(labels), *shape)}
    out = SamplerCustomAdvanced().sample(Noise_RandomNoise(seed), guider, comfy.samplers.sampler_object(method.sampler),
                                         sigmas, latent)[0]["samples"]
    evals = (net.rows["cond"] + net.rows["uncond"]) / len(labels)
    history = history_of(guider)
    if history is not None:
        # what each image costs alone: in a batch the unconditional pass runs while any sample needs it
        record = history.last
        evals = net.rows["cond"] / len(labels) + sum(record.uncond_needed) / len(labels)
    return out.reshape(len(labels), -1), evals


def summarise(runs):
    keys = runs[0].keys()
    return {k: (statistics.mean(r[k] for r in runs), max(r[k] for r in runs) - min(r[k] for r in runs)) for k in keys}


def print_table(title, columns, rows):
    print(f"\n{title}\n")
    head = "| setting | " + " | ".join(columns) + " |"
    print(head)
    print("|" + "---|" * (len(columns) + 1))
    for name, stats in rows:
        cells = []
        for c in columns:
            mean, spread = stats[c]
            cells.append(f"{mean:.3g} ({spread:.2g})" if spread else f"{mean:.3g}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def calibrate_linear_ag(model, sigmas):
    """Fit LinearAG for the digits bed with the pack's calibration node (cfg 3, 8 x 100 trajectories,
    seeds apart from the measured ones), into a temporary models/linear_ag."""
    import tempfile
    import comfy.samplers
    import folder_paths
    from benchmarks.beds.comfy_models import class_conditioning
    from guidance_schedules.nodes.adaptive import LINEAR_AG_FOLDER, LinearAGCalibrate
    folder = os.path.join(tempfile.mkdtemp(prefix="gs-quality-"), LINEAR_AG_FOLDER)
    # first in the list: the node writes there (never into the ComfyUI tree)
    folder_paths.add_model_folder_path(LINEAR_AG_FOLDER, folder, is_default=True)
    try:
        labels = list(range(10)) * 10
        out = LinearAGCalibrate().calibrate(model, class_conditioning(labels, 11), class_conditioning(None, 11), 3.0,
                                            comfy.samplers.sampler_object("euler"), sigmas,
                                            {"samples": torch.zeros(len(labels), 1, 8, 8)}, runs=8, seed=1000,
                                            name=LINEAR_AG_FILE.removesuffix(".safetensors"))
    finally:
        paths = folder_paths.folder_names_and_paths[LINEAR_AG_FOLDER][0]
        paths.append(paths.pop(paths.index(folder)))  # still listed, for the runs that use the file
    print("\nLinearAG calibration:", out["ui"]["text"][0].split(": ", 1)[1])


def gmm_rows(model, sigmas, methods, seeds, n, only=""):
    """(label, stats) per method: n samples of class A per seed, measured against the true mixture."""
    from benchmarks.beds import gmm
    mixture, rows = gmm.default_mixture(), []
    for method in [m for m in methods if only in m.label]:
        runs = []
        for seed in seeds:
            x, evals = sample(model, method, [0] * n, 3, sigmas, seed, (2, 1, 1))
            m = gmm.measure(mixture, x.double(), 0, torch.Generator().manual_seed(seed))
            runs.append({"evals/image": evals, **m})
        rows.append((method.label, summarise(runs)))
        print(".", end="", flush=True)
    return rows


def run_gmm(seeds, n, only=""):
    from benchmarks.beds.comfy_models import gmm_model
    from benchmarks.beds.digits import karras_sigmas
    rows = gmm_rows(gmm_model(), karras_sigmas(), gmm_methods(), seeds, n, only)
    print_table(f"GMM bed, class A (4 modes, one beside class B), {n} samples, 32 Euler steps, {len(seeds)} seeds",
                ["evals/image", "modes_covered", "min_mode_share", "sliced_w", "off_data", "mode_spread"], rows)
    return rows


def run_gmm_flow(seeds, n, only=""):
    """The GMM bed's exact denoiser as a flow model (32 steps of its simple schedule): CFG, CFG++ and annealing
    guidance with the network trained for it (benchmarks/beds/annealing_train.py --bed gmm_flow)."""
    import comfy.samplers
    from benchmarks.beds.comfy_models import gmm_flow_model
    model = gmm_flow_model()
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 32)
    rows = gmm_rows(model, sigmas, gmm_flow_methods(), seeds, n, only)
    print_table(f"GMM bed as a flow model, class A, {n} samples, 32 steps (simple schedule), {len(seeds)} seeds",
                ["evals/image", "in_class", "modes_covered", "min_mode_share", "sliced_w", "off_data"], rows)
    return rows


def run_digits(seeds, per_class, variant, only=""):
    from benchmarks.beds import digits, evaluator, metrics
    from benchmarks.beds.comfy_models import digits_model
    model, judge = digits_model(variant), evaluator.load()
    x_train, y_train, x_test, y_test = digits.load_split()
    real_x, real_y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
    labels = [c for c in range(10) for _ in range(per_class)]
    sigmas = digits.karras_sigmas()
    if any("LinearAG" in m.label for m in digits_methods() if only in m.label):
        calibrate_linear_ag(model, sigmas)
    rows, points, cfg_samples = [], [], {}
    # CFG at w = 2 and 3 always run: the PSNR references of the AG rows
    for method in [m for m in digits_methods() if only in m.label or m.cfg_w in (2.0, 3.0)]:
        runs = []
        for seed in seeds:
            x, evals = sample(model, method, labels, digits.NULL_CLASS + 1, sigmas, seed, (1, 8, 8))
            m = metrics.evaluate(x, torch.tensor(labels), judge, real_x, real_y, x_train)
            if method.cfg_w is not None:
                cfg_samples[(method.cfg_w, seed)] = x
            reference = cfg_samples.get((method.compare_with_cfg_w, seed))
            m["psnr_vs_cfg"] = psnr(x, reference) if reference is not None else 0.0
            runs.append({"evals/image": evals, **m})
        stats = summarise(runs)
        rows.append((method.label, stats))
        points.append((method.curve, stats["fd"][0], stats["p_class"][0], method.point))
        print(".", end="", flush=True)
    print_table(f"Digits bed ({variant}), {per_class} samples per class, 32 Euler steps sigma 20 -> 0.005, "
                f"{len(seeds)} seeds", ["evals/image", "accuracy", "p_class", "fd", "precision", "recall", "diversity",
                                        "near_copies", "psnr_vs_cfg"], rows)
    return rows, points


def plot(points, path, title):
    """Adherence (y) against per-class FD (x, log scale), one polyline and marker shape per method; each
    point labelled with its w / threshold / lambda where the label does not cover another one."""
    import math
    from PIL import Image, ImageDraw, ImageFont
    from guidance_schedules.nodes.plot import nice_ticks
    width, height, left, right, top, bottom = 1000, 640, 80, 720, 70, 580
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    xs, ys = [math.log10(p[1]) for p in points], [p[2] for p in points]
    decades = range(math.floor(min(xs)), math.ceil(max(xs)) + 1)
    x_ticks = [m * 10 ** d for d in decades for m in (1, 2, 5) if min(xs) - 0.05 <= math.log10(m * 10 ** d) <= max(xs) + 0.05]
    y_ticks = nice_ticks(min(ys), max(ys))
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y0, y1 = y_ticks[0], y_ticks[-1]

    def at(fd, y):
        return (left + (right - left) * (math.log10(fd) - x0) / (x1 - x0), bottom - (bottom - top) * (y - y0) / (y1 - y0))

    draw.text((left, 14), title, fill="black", font=font)
    for t in y_ticks:
        _, py = at(10 ** x0, t)
        draw.line([(left, py), (right, py)], fill=(235, 235, 235))
        draw.text((left - 8 - draw.textlength(f"{t:g}", font=font), py - 6), f"{t:g}", fill="black", font=font)
    for t in x_ticks:
        px, _ = at(t, y0)
        draw.line([(px, top), (px, bottom)], fill=(235, 235, 235))
        draw.text((px - draw.textlength(f"{t:g}", font=font) / 2, bottom + 6), f"{t:g}", fill="black", font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    draw.text(((left + right) // 2 - 110, height - 34), "per-class FD, log scale (lower is better)", fill="black", font=font)
    draw.text((8, top - 22), "mean p(requested class) (higher is better)", fill="black", font=font)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (90, 90, 90), (188, 189, 34), (23, 190, 207)]
    shapes = ["circle", "square", "triangle", "diamond"]

    def mark(px, py, colour, shape, r=4):
        if shape == "circle":
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
        elif shape == "square":
            draw.rectangle([px - r, py - r, px + r, py + r], fill=colour)
        elif shape == "triangle":
            draw.polygon([(px, py - r - 1), (px + r + 1, py + r), (px - r - 1, py + r)], fill=colour)
        else:
            draw.polygon([(px, py - r - 1), (px + r + 1, py), (px, py + r + 1), (px - r - 1, py)], fill=colour)

    taken = []  # label boxes already drawn
    for i, curve in enumerate(dict.fromkeys(p[0] for p in points)):
        colour, shape = colours[i % len(colours)], shapes[i % len(shapes)]
        pts = [p for p in points if p[0] == curve]
        xy = [at(p[1], p[2]) for p in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for (px, py), p in zip(xy, pts):
            mark(px, py, colour, shape)
            label = f"{p[3]:g}"
            box = (px + 6, py - 14, px + 6 + draw.textlength(label, font=font), py - 3)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                draw.text(box[:2], label, fill=colour, font=font)
                taken.append(box)
        ly = top + 20 * i
        draw.line([(right + 20, ly + 6), (right + 44, ly + 6)], fill=colour, width=2)
        mark(right + 32, ly + 6, colour, shape)
        draw.text((right + 52, ly), curve, fill="black", font=font)
    img.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bed", choices=["gmm", "gmm_flow", "digits", "both"], default="both",
                        help="both: all three tables")
    parser.add_argument("--variant", choices=["early", "labelnoise30"], default="labelnoise30")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--png", default=None,
                        help="where to write the trade-off plot (default: docs/tradeoff_digits.png, for full runs only)")
    parser.add_argument("--only", default="", help="run only the settings whose label contains this text")
    args = parser.parse_args()
    standalone.import_comfyui(cpu=True, progress_bars=False)
    torch.set_num_threads(2)
    seeds = list(range(args.seeds))
    if args.bed in ("gmm", "both"):
        run_gmm(seeds, 2000, args.only)
    if args.bed in ("gmm_flow", "both"):
        run_gmm_flow(seeds, 2000, args.only)
    if args.bed in ("digits", "both"):
        _, points = run_digits(seeds, args.per_class, args.variant, args.only)
        # A partial run (--only) must not replace the README's plot of the full run.
        png = args.png or (None if args.only else str(ROOT / "docs" / "tradeoff_digits.png"))
        if png is None:
            print("\nno plot written for a run with --only (give --png to write one)")
            return
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        plot(points, png, f"Digits bed ({args.variant}): adherence against FD; numbers: w (CFG, interval), "
                          "threshold (AG), lambda (annealing)")
        print(f"\nwrote {png}")


if __name__ == "__main__":
    main()
