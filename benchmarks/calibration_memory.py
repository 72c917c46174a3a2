"""What LinearAG calibration costs in memory and time, by runs and latent size.

LinearAGCalibrate inside the real ComfyUI on a model whose forward is two tensor operations (so the time is the
calibration's own and ComfyUI's), euler, 30 steps, at an SDXL 1024 px latent (4x128x128) and a Wan 480p video latent
(16x21x60x104), for 8 and 32 runs. Each configuration runs in a fresh process; the peak memory is the growth of
the process's peak resident size during the calibration (what it holds beyond the model and the latent), beside
one stock CFG sampling of the same latent (runs 0), the sampling's own peak.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/calibration_memory.py
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/calibration_memory.py --runs 8 --latent sdxl

Not a test: it asserts nothing. The calibration accumulates the least squares' normal equations per step
(samplers/linear_ag.py, NormalEquations): its memory should not grow with the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402

LATENTS = {"sdxl": (1, 4, 128, 128), "wan480p": (1, 16, 21, 60, 104)}
STEPS = 30


def measure(latent: str, runs: int) -> dict:
    """In this process: one calibration; its peak memory growth (MiB) and seconds."""
    import resource
    standalone.import_comfyui(cpu=True, progress_bars=False)
    import logging
    import torch
    import comfy.samplers
    import folder_paths
    from benchmarks.overhead import negligible_model
    from guidance_schedules.nodes.adaptive import LINEAR_AG_FOLDER, LinearAGCalibrate
    logging.getLogger("guidance_schedules").setLevel(logging.WARNING)
    shape = LATENTS[latent]
    model, pos, neg = negligible_model(channels=shape[1])
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", STEPS).cpu()
    with tempfile.TemporaryDirectory(prefix="gs-calibration-") as folder:
        folder_paths.add_model_folder_path(LINEAR_AG_FOLDER, folder, is_default=True)
        latent_image = {"samples": torch.zeros(shape)}
        sampler = comfy.samplers.sampler_object("euler")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if runs == 0:  # the baseline: one stock CFG sampling of the same latent
            from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(pos, neg)
            guider.set_cfg(5.0)
            SamplerCustomAdvanced().sample(Noise_RandomNoise(0), guider, sampler, sigmas, latent_image)
        else:
            LinearAGCalibrate().calibrate(model, pos, neg, 5.0, sampler, sigmas, latent_image, runs, 0, "memory")
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"latent": latent, "runs": runs, "peak_mib": (after - before) / 1024, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent", choices=sorted(LATENTS), action="append")
    parser.add_argument("--runs", type=int, action="append")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.latent[0], args.runs[0])))
        return
    rows = []
    for latent in args.latent or ["sdxl", "wan480p"]:
        for runs in args.runs or [0, 8, 32]:
            child = subprocess.run([sys.executable, __file__, "--one", "--latent", latent, "--runs", str(runs)],
                                   capture_output=True, text=True, env=os.environ)
            if child.returncode != 0:
                sys.exit(child.stderr)
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    import torch
    print(f"LinearAGCalibrate, euler, {STEPS} steps, a negligible-cost model, CPU ({os.cpu_count()} cores), "
          f"torch {torch.__version__}\n")
    print("| latent | runs | peak memory growth | seconds |")
    print("|---|---|---|---|")
    for r in rows:
        runs = r["runs"] or "stock CFG, one sampling"
        print(f"| {r['latent']} {'x'.join(map(str, LATENTS[r['latent']][1:]))} | {runs} | "
              f"{r['peak_mib']:,.0f} MiB | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
