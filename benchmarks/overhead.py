"""The pack's own cost per step, where a step costs host work rather than arithmetic.

A model whose forward is two tensor operations, inside the real ComfyUI, sampled with the stock
KSampler node (euler, karras, 300 steps by default): every microsecond of a step is host work
(ComfyUI's and the pack's), which is what a user pays on a large GPU at batch 1, with a small or
distilled model, or with a video step split into many small calls. Stock CFG against every method,
runs interleaved, median and spread of microseconds per step and the ratio to the stock row each is
compared with:

- stock CFG, and cond only (cfg 1: what a skipped unconditional pass saves at most);
- ComfyUI's own interval where the host has `CFGOverride` (0.33): cfg 1 outside (0.28, 5.42], the anchor;
- the interval guiding every step, and the paper's interval (0.28, 5.42];
- AG that never stops (threshold 2), and AG stopping half way (the threshold the model's own
  similarity reaches at the middle step, measured once before the table);
- LinearAG (AG never stopping, every other unconditional pass estimated);
- annealing against stock CFG++ (euler_cfg_pp), with a random network of the released network's
  configuration (its cost does not depend on its weights).

With --floors, diagnostic rows that say what no implementation of a method can go below here: a
PREDICT_NOISE wrapper that does nothing but call on (the least any pack that patches sampling adds),
and AG and annealing with their per-step measurements taken out (AG's similarity, annealing's norm
and network replaced by constants: images are not theirs; only the time counts).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/overhead.py                 # batch 1 and 4
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/overhead.py --batch 1 --steps 100 --repeats 3
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/overhead.py --batch 1 --floors

Not a test: it asserts nothing about time. The targets (issue 26) are read off its table.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402  (at the pack's root)

CFG = 5.0
PAPER = dict(sigma_lo=0.28, sigma_hi=5.42)


def negligible_model(channels: int = 4):
    """(ModelPatcher, positive, negative): an EPS model of ComfyUI whose network is two tensor operations."""
    import torch
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base

    class TwoOps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dtype = torch.float32

        def forward(self, x, timesteps, context=None, **kwargs):
            # the context enters, so the two passes differ and guidance does something (any latent rank)
            return torch.tanh(x * 0.5 + context[:, :1, :1].reshape(-1, *([1] * (x.ndim - 1))))

    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.LatentFormat()
    config.latent_format.latent_channels = channels
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu"))
    base.diffusion_model = TwoOps()
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    return patcher, [[torch.full((1, 1, 8), 0.3), {}]], [[torch.full((1, 1, 8), -0.2), {}]]


def similarity_at_middle(model, pos, neg, latent, steps):
    """The cosine similarity of the conditional and unconditional denoised predictions at the middle step of a
    stock CFG run, read by a post-CFG function of ComfyUI's (the first sample): AG with this threshold stops there."""
    import torch
    import nodes
    seen = []

    def observe(args):
        c, u = args["cond_denoised"][:1].flatten().double(), args["uncond_denoised"][:1].flatten().double()
        seen.append(float(torch.nn.functional.cosine_similarity(c, u, dim=0)))
        return args["denoised"]
    m = model.clone()
    m.set_model_sampler_post_cfg_function(observe)
    nodes.KSampler().sample(m, 0, steps, CFG, "euler", "karras", pos, neg, latent, 1.0)
    return seen[steps // 2]


def linear_ag_file(model, steps, folder):
    """A LinearAG file for this grid (a = 1: the estimate's cost does not depend on the coefficients)."""
    import torch
    import comfy.samplers
    from guidance_schedules.samplers import linear_ag
    sigmas = comfy.samplers.KSampler(model, steps, "cpu", "euler", "karras", 1.0).sigmas
    coefficients = torch.zeros(steps, linear_ag.N_TERMS, dtype=torch.float64)
    coefficients[:, 0] = 1.0
    fitted_for = linear_ag.FittedFor(sampler="sample_euler", steps=steps, sigmas=tuple(sigmas.tolist()),
                                     model="BASE EPS", cfg=CFG, runs=1, prediction="eps")
    name = f"overhead_{steps}.safetensors"
    if not os.path.exists(os.path.join(folder, name)):
        linear_ag.save(linear_ag.Fit(coefficients, torch.zeros(steps, dtype=torch.float64)), fitted_for,
                       os.path.join(folder, name))
    return name


def annealing_file(folder):
    import torch
    from guidance_schedules.samplers import annealing
    if not os.path.exists(os.path.join(folder, "overhead.safetensors")):
        torch.manual_seed(0)
        network = annealing.AnnealingNetwork(annealing.NetworkConfig())
        annealing.save_scheduler(annealing.AnnealingScheduler(network, annealing.TrainedFor()),
                                 os.path.join(folder, "overhead.safetensors"))
    return "overhead.safetensors"


def rows_for(model, pos, neg, latent, steps, folder):
    """(name, model, cfg, sampler, the stock row it is compared with)."""
    import folder_paths
    from guidance_schedules.nodes.adaptive import LINEAR_AG_FOLDER, AdaptiveGuidancePatch
    from guidance_schedules.nodes.annealing import FOLDER as ANNEALING_FOLDER, AnnealingGuidancePatch
    from guidance_schedules.nodes.interval import GuidanceIntervalPatch
    for kind in (LINEAR_AG_FOLDER, ANNEALING_FOLDER):
        if not os.path.isdir(os.path.join(folder, kind)):
            os.makedirs(os.path.join(folder, kind))
            folder_paths.add_model_folder_path(kind, os.path.join(folder, kind), is_default=True)
    half = similarity_at_middle(model, pos, neg, latent, steps)
    rows = [("stock CFG", model, CFG, "euler", "stock CFG"),
            ("stock cond only (cfg 1)", model, 1.0, "euler", "stock CFG")]
    try:
        from comfy_extras.nodes_custom_sampler import CFGOverride
    except ImportError:
        CFGOverride = None
    if CFGOverride is not None:  # ComfyUI's own interval: cfg 1 outside (0.28, 5.42], by two overrides
        ms = model.get_model_object("model_sampling")

        def percent(sigma):  # the percent whose sigma is `sigma` (bisection on the model's own map)
            lo, hi = 0.0, 1.0
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if float(ms.percent_to_sigma(mid)) > sigma else (lo, mid)
            return hi
        above = CFGOverride.execute(model, 1.0, 0.0, percent(PAPER["sigma_hi"]) - 1e-6).args[0]
        anchor = CFGOverride.execute(above, 1.0, percent(PAPER["sigma_lo"]), 1.0).args[0]
        rows.append(("ComfyUI CFGOverride (0.28, 5.42]", anchor, CFG, "euler", "stock CFG"))
    interval = GuidanceIntervalPatch()
    adaptive = AdaptiveGuidancePatch()
    rows += [
        ("interval, every step", interval.patch(model, sigma_hi=1000.0, sigma_lo=0.0)[0], CFG, "euler", "stock CFG"),
        ("interval (0.28, 5.42]", interval.patch(model, **PAPER)[0], CFG, "euler", "stock CFG"),
        ("AG never stopping", adaptive.patch(model, 2.0)[0], CFG, "euler", "stock CFG"),
        (f"AG stopping half way ({half:.6g})", adaptive.patch(model, half)[0], CFG, "euler", "stock CFG"),
        ("LinearAG", adaptive.patch(model, 2.0, linear_ag=linear_ag_file(model, steps, os.path.join(folder, LINEAR_AG_FOLDER)))[0],
         CFG, "euler", "stock CFG"),
        ("stock CFG++ (euler_cfg_pp)", model, 1.0, "euler_cfg_pp", "stock CFG++ (euler_cfg_pp)"),
        ("annealing 0.4 (euler_cfg_pp)",
         AnnealingGuidancePatch().patch(model, annealing_file(os.path.join(folder, ANNEALING_FOLDER)), **{"lambda": 0.4})[0],
         1.0, "euler_cfg_pp", "stock CFG++ (euler_cfg_pp)"),
    ]
    return rows


@contextlib.contextmanager
def replaced(owner, name, value):
    """owner.name is value for the duration (a diagnostic row's measurement taken out)."""
    kept = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, kept)


def floor_rows(model, rows):
    """Diagnostic rows (name, model, cfg, sampler, stock row, context): what is left of a method's cost without
    its per-step measurement, and a wrapper that does nothing. The contexts replace the measurement for their
    row's runs only."""
    from comfy.patcher_extension import WrappersMP
    from guidance_schedules.samplers.adaptive import AdaptiveSchedule
    from guidance_schedules.samplers.annealing import AnnealingSchedule
    from guidance_schedules.samplers.schedule import Guidance
    nothing = model.clone()
    nothing.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, "overhead_floor", lambda executor, *a, **k: executor(*a, **k))
    by_name = {row[0]: row for row in rows}
    ag, annealing = by_name["AG never stopping"], by_name["annealing 0.4 (euler_cfg_pp)"]
    return [
        ("floor: a PREDICT_NOISE wrapper doing nothing", nothing, CFG, "euler", "stock CFG", contextlib.nullcontext),
        ("floor: AG never stopping, no similarity", *ag[1:5], lambda: replaced(
            AdaptiveSchedule, "similarity_of", lambda self, ev, cond, uncond: [0.0] * ev.batch_size)),
        ("floor: annealing, no norm or network", *annealing[1:5], lambda: replaced(
            AnnealingSchedule, "guide", lambda self, ev, cond, uncond, candidates: Guidance(1.0, candidates))),
    ]


def measure(batch, steps, repeats, size, folder, floors=False):
    import torch
    import nodes
    model, pos, neg = negligible_model()
    latent = {"samples": torch.zeros(batch, 4, size, size)}
    rows = [(*row, contextlib.nullcontext) for row in rows_for(model, pos, neg, latent, steps, folder)]
    if floors:
        rows += floor_rows(model, rows)

    def run(m, cfg, sampler, context):
        with context():
            start = time.perf_counter()
            nodes.KSampler().sample(m, 0, steps, cfg, sampler, "karras", pos, neg, latent, 1.0)
            return (time.perf_counter() - start) / steps * 1e6

    for name, m, cfg, sampler, _, context in rows:  # warm-up
        run(m, cfg, sampler, context)
    times = {name: [] for name, *_ in rows}
    for _ in range(repeats):  # interleaved: drift of the machine hits every row alike
        for name, m, cfg, sampler, _, context in rows:
            times[name].append(run(m, cfg, sampler, context))
    return rows, times


def print_table(rows, times, batch):
    print(f"\n| batch {batch}: method | us per step, median (min-max) | vs its stock row |")
    print("|---|---|---|")
    for name, _, _, _, base, _ in rows:
        t = times[name]
        med = statistics.median(t)
        ratio = "-" if name == base else f"{med / statistics.median(times[base]):.2f}x"
        print(f"| {name} | {med:,.0f} ({min(t):,.0f}-{max(t):,.0f}) | {ratio} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 1 and 4)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=16, help="latent side (4 x size x size)")
    parser.add_argument("--floors", action="store_true",
                        help="add diagnostic rows: a wrapper doing nothing, AG and annealing without their measurements")
    args = parser.parse_args()
    standalone.import_comfyui(cpu=True, progress_bars=False)
    import logging
    import torch
    logging.getLogger("guidance_schedules").setLevel(logging.WARNING)  # no log line per run
    try:
        from comfyui_version import __version__ as host
    except ImportError:
        host = "?"
    print(f"ComfyUI {host}, torch {torch.__version__}, CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads); "
          f"a negligible-cost EPS model, latent 4x{args.size}x{args.size}, stock KSampler, euler, karras, "
          f"{args.steps} steps, cfg {CFG}, {args.repeats} interleaved runs")
    with tempfile.TemporaryDirectory(prefix="gs-overhead-") as folder:  # the files the rows read
        for batch in args.batch or [1, 4]:
            rows, times = measure(batch, args.steps, args.repeats, args.size, folder, args.floors)
            print_table(rows, times, batch)


if __name__ == "__main__":
    main()
