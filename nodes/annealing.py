"""Annealing guidance scheduler nodes: a GUIDER and a MODEL patch, and the scheduler file folder."""
from __future__ import annotations

import functools
import os

import folder_paths

from ..samplers.annealing import DEFAULT_LAMBDA, AnnealingSchedule, check_lambda, load_scheduler
from .guidance import CATEGORY, ScheduleGuider, file_state, guider_inputs, patch_model

FOLDER = "guidance_schedulers"
PACK_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def register_scheduler_folder():
    """models/guidance_schedulers and the pack's weights/ folder, listed in the scheduler combo."""
    paths = [os.path.join(folder_paths.models_dir, FOLDER), PACK_WEIGHTS]
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([], {".safetensors", ".pt"})
    for path in paths:
        if path not in folder_paths.folder_names_and_paths[FOLDER][0]:
            folder_paths.folder_names_and_paths[FOLDER][0].append(path)


register_scheduler_folder()


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, state: str):
    return load_scheduler(path)


def load_scheduler_file(name: str):
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise ValueError(f"scheduler: no file named {name!r} in {FOLDER} "
                         f"({', '.join(folder_paths.get_folder_paths(FOLDER))})")
    return _load_cached(path, file_state(path))


def scheduler_file_state(scheduler, **_):
    """IS_CHANGED of the annealing nodes: the chosen file's size and modification time."""
    return file_state(folder_paths.get_full_path(FOLDER, scheduler))


def annealing_schedule(scheduler_name, lam):
    lam = check_lambda(lam)
    scheduler = load_scheduler_file(scheduler_name)

    def make(run):
        channels = run.latent_shape[1] if len(run.latent_shape) > 1 else scheduler.trained_for.latent_channels
        scheduler.check_compatible(run.prediction, channels, run.timesteps)
        return AnnealingSchedule(run, scheduler, lam)
    return make


def describe(scheduler_name, lam):
    return f"Annealing guidance ({scheduler_name}, lambda {lam:g})"


def annealing_inputs():
    return {
        "scheduler": (folder_paths.get_filename_list(FOLDER), {
            "tooltip": "The scheduler network, from models/guidance_schedulers or the pack's weights/ folder. The "
                       "released network is for SDXL (see the README for where to get it)."}),
        "lambda": ("FLOAT", {
            "default": DEFAULT_LAMBDA, "min": 0.0, "max": 1.0, "step": 0.01,
            "tooltip": "Trade-off: low = image quality, high = prompt alignment. The paper's 0.05 / 0.4 / 0.8 "
                       "correspond roughly to CFG 7.5 / 10 / 15."}),
    }


class AnnealingGuidancePatch:
    DESCRIPTION = ("Annealing guidance (Yehezkel et al. 2025) for the stock KSampler: a small network picks the "
                   "guidance scale of every step from the timestep, the size of the guidance direction and lambda. "
                   "Needs a CFG++ sampler (euler_cfg_pp, the paper's DDIM); the KSampler's cfg is not used.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    IS_CHANGED = staticmethod(scheduler_file_state)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), **annealing_inputs()}}

    def patch(self, model, scheduler, **kwargs):
        lam = kwargs["lambda"]
        return (patch_model(model, annealing_schedule(scheduler, lam), describe(scheduler, lam)),)


class AnnealingGuidanceGuider:
    DESCRIPTION = ("Annealing guidance (Yehezkel et al. 2025) as a GUIDER for SamplerCustomAdvanced: the guidance "
                   "scale of every step comes from the scheduler network. Use a CFG++ sampler (euler_cfg_pp).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    IS_CHANGED = staticmethod(scheduler_file_state)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**guider_inputs(), **annealing_inputs()}}

    def get_guider(self, model, positive, negative, scheduler, **kwargs):
        lam = kwargs["lambda"]
        patched = patch_model(model, annealing_schedule(scheduler, lam), describe(scheduler, lam))
        # cfg only matters for ComfyUI's cfg == 1 shortcut, which this schedule never takes.
        return (ScheduleGuider(patched, positive, negative, 1.0),)
