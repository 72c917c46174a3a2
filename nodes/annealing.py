"""Annealing guidance scheduler nodes: a MODEL patch and a GUIDER, and the scheduler networks' folder."""
from __future__ import annotations

import functools
import os

import folder_paths

from ..samplers.annealing import DEFAULT_LAMBDA, AnnealingSchedule, check_lambda, load_scheduler
from .files import file_state, register_model_folder
from .guidance import Schedule
from .method_nodes import GuidanceMethod, ScheduleGuiderNode, SchedulePatchNode

FOLDER = "guidance_schedulers"
# what the scheduler combo shows when no network is installed (an empty combo reads "undefined")
NO_NETWORK = "no network installed: see the README, 'Get the network'"
PACK_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")

register_model_folder(FOLDER, {".safetensors", ".pt"}, PACK_WEIGHTS)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, state: str):
    return load_scheduler(path)


def load_scheduler_file(name: str):
    if name == NO_NETWORK:
        raise ValueError("scheduler: no guidance network is installed. Convert the released SDXL network into "
                         "models/guidance_schedulers (README, 'Get the network'), or train one for your model.")
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise ValueError(f"scheduler: no file named {name!r} in {FOLDER} "
                         f"({', '.join(folder_paths.get_folder_paths(FOLDER))})")
    return _load_cached(path, file_state(path))


def annealing_schedule(scheduler, **settings):
    lam = check_lambda(settings["lambda"])
    network = load_scheduler_file(scheduler)
    return Schedule(lambda run: AnnealingSchedule(run, network, lam), f"Annealing guidance ({scheduler}, lambda {lam:g})")


def annealing_inputs():
    return {
        "scheduler": (folder_paths.get_filename_list(FOLDER) or [NO_NETWORK], {
            "tooltip": "The network that picks the guidance scale, from models/guidance_schedulers. The authors' "
                       "network is for SDXL (the README's 'Get the network' says where to download it); for other "
                       "models, train one with Train Annealing Network."}),
        "lambda": ("FLOAT", {
            "default": DEFAULT_LAMBDA, "min": 0.0, "max": 1.0, "step": 0.01,
            "tooltip": "Trade-off: low favours image quality, high favours following the prompt. The paper's 0.05 / "
                       "0.4 / 0.8 behave roughly like cfg 7.5 / 10 / 15."}),
    }


ANNEALING = GuidanceMethod(
    key="annealing",
    title="Annealing guidance (Yehezkel et al. 2025)",
    summary="a small network picks the guidance scale of every step and image from the step, the size of the "
            "guidance direction (how far the positive prediction is from the negative one) and lambda. Needs a "
            "CFG++ sampler, which re-noises with the unguided prediction: euler_cfg_pp, the paper's DDIM.",
    inputs=annealing_inputs, schedule=annealing_schedule, file_input=("scheduler", FOLDER),
    patch_note="The KSampler's cfg is not used.")


class AnnealingGuidancePatch(SchedulePatchNode):
    METHOD = ANNEALING


class AnnealingGuidanceGuider(ScheduleGuiderNode):
    METHOD = ANNEALING
