"""What the step rehearsal (nodes/rehearsal.py) costs before each sampling run: milliseconds per
rehearsal for some samplers and step counts, on the CPU, with a 128 x 128 latent (SDXL 1024 px).
The rehearsal works on a one-pixel latent with a stand-in model, so the latent's size does not matter.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/rehearsal_cost.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny test model
sys.path.append(str(ROOT))
import host_support  # noqa: E402

SAMPLERS = ["euler", "heun", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde", "uni_pc", "euler_cfg_pp"]


def main():
    host_support.require_comfyui()
    import torch
    import comfy.samplers
    import tiny_models
    from guidance_schedules.nodes.rehearsal import rehearse_steps
    model = tiny_models.build_model("eps")
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_model = model.model  # where samplers read the model sampling from
    noise = torch.zeros(1, 4, 128, 128)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads\n")
    print("| sampler | steps | ms per rehearsal (median of 5) | evaluations rehearsed |\n|---|---|---|---|")
    for name in SAMPLERS:
        for steps in (30, 200):
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", steps)
            sampler = comfy.samplers.sampler_object(name)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                plan = rehearse_steps(sampler, guider, sigmas, {"model_options": {}, "seed": 0}, noise)
                times.append((time.perf_counter() - start) * 1000)
            print(f"| {name} | {steps} | {sorted(times)[2]:.1f} | {len(plan)} |")


if __name__ == "__main__":
    main()
