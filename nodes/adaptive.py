"""Adaptive Guidance nodes: a MODEL patch for KSampler, a GUIDER for SamplerCustomAdvanced, and the
LinearAG calibration node with its folder."""
from __future__ import annotations

import logging
import os

import folder_paths

# imported under another name: `linear_ag` is the nodes' input
from ..samplers import linear_ag as linear_ag_files
from ..samplers.adaptive import AdaptiveSchedule, check_threshold
from .files import (new_output_path, output_file_key, register_model_folder, write_under_a_free_name,
                    written_file_key, wrote_file)
from .guidance import Schedule, patch_model
from .method_nodes import (CATEGORY, GuidanceMethod, ScheduleGuider, ScheduleGuiderNode, SchedulePatchNode,
                           search_aliases)
from .host_facts import model_facts
from .rehearsal import sampler_function_name

log = logging.getLogger("guidance_schedules")

DEFAULT_THRESHOLD = 0.995
LINEAR_AG_FOLDER = "linear_ag"  # models/linear_ag: the files LinearAGCalibrate writes and the AG nodes read
NONE = "none"

register_model_folder(LINEAR_AG_FOLDER, {".safetensors"})


def linear_ag_input():
    return {"linear_ag": ([NONE] + folder_paths.get_filename_list(LINEAR_AG_FOLDER), {
        "tooltip": "Optional: a file made by LinearAG Calibrate for this model, sampler, steps and cfg "
                   "(models/linear_ag). With it, every other guided step estimates the negative prompt's "
                   "prediction from earlier steps instead of running the model for it."})}


def linear_ag_path(name) -> str | None:
    if name in (None, NONE):
        return None
    path = folder_paths.get_full_path(LINEAR_AG_FOLDER, name)
    if path is None:
        raise ValueError(f"linear_ag: no file named {name!r} in {LINEAR_AG_FOLDER}")
    return path


def threshold_input():
    return {"threshold": ("FLOAT", {
        "default": DEFAULT_THRESHOLD, "min": -1.0, "max": 2.0, "step": 0.001, "round": False,
        "tooltip": "Stop guiding an image once its positive- and negative-prompt predictions point the same way: "
                   "when their cosine similarity (1 = same direction) reaches this value. The rest of the run "
                   "uses the positive prompt alone. Lower stops sooner (faster, further from plain CFG); above 1 "
                   "never stops (plain CFG). 0.995 is a good start."})}


def adaptive_schedule(threshold, linear_ag=NONE):
    threshold = check_threshold(threshold)
    path = linear_ag_path(linear_ag)
    linear = linear_ag_files.load(path) if path is not None else None
    extra = f", LinearAG {linear_ag}" if linear is not None else ""
    return Schedule(lambda run: AdaptiveSchedule(run, threshold, linear), f"Adaptive guidance (threshold {threshold:g}{extra})")


ADAPTIVE = GuidanceMethod(
    key="adaptive",
    title="Adaptive Guidance (Castillo et al. 2023)",
    summary="each image is guided until its positive- and negative-prompt predictions point the same way (cosine "
            "similarity >= threshold), then continues with the positive prompt alone, skipping the negative "
            "prompt's model pass.",
    inputs=threshold_input, optional_inputs=linear_ag_input, schedule=adaptive_schedule,
    file_input=("linear_ag", LINEAR_AG_FOLDER), cfg_tooltip="The guidance weight (cfg) while an image is guided.",
    patch_note="The KSampler's cfg is the weight while an image is guided.")


class AdaptiveGuidancePatch(SchedulePatchNode):
    METHOD = ADAPTIVE


class AdaptiveGuidanceGuider(ScheduleGuiderNode):
    METHOD = ADAPTIVE


class LinearAGCalibrate:
    SEARCH_ALIASES = search_aliases("adaptive guidance", "linearag", "linear ag", "calibrate")
    DESCRIPTION = ("Fits LinearAG coefficients for Adaptive Guidance: runs full-CFG samplings of your model with "
                   "your sampler and sigmas, fits per-step least-squares coefficients that predict the "
                   "unconditional prediction from earlier ones, and writes them to models/linear_ag/NAME.safetensors "
                   "(never overwriting). Use the same sampler and step count when sampling with the file.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "calibrate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Guidance weight of the full-CFG runs: the one you will sample with."}),
            "sampler": ("SAMPLER",), "sigmas": ("SIGMAS",), "latent_image": ("LATENT",),
            "runs": ("INT", {"default": 8, "min": 1, "max": 1000,
                             "tooltip": "Full-CFG samplings to fit on (the paper used about 200 trajectories; "
                                        "each latent in the batch counts as one)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
            "name": ("STRING", {"default": "my_model_euler_30",
                                "tooltip": "File name (without .safetensors) in models/linear_ag."}),
        }}

    @classmethod
    def IS_CHANGED(cls, name, **kwargs):
        # the result is a file: the same inputs run again once it was removed (to calibrate again) or replaced
        return output_file_key(LINEAR_AG_FOLDER, name)

    def calibrate(self, model, positive, negative, cfg, sampler, sigmas, latent_image, runs, seed, name):
        from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
        steps = max(len(sigmas.flatten()) - 1, 0)
        if steps < 2:  # refused before any work: nothing is sampled, nothing written
            raise ValueError(f"sigmas: LinearAG calibration needs a run of at least 2 steps (it fits each odd step's "
                             f"unconditional prediction from the step before); these sigmas make {steps} "
                             "(a denoise of 0 makes none)")
        path = new_output_path(LINEAR_AG_FOLDER, name)
        cache_key = written_file_key(path)
        equations = linear_ag_files.NormalEquations(steps)

        def recording(run):
            return linear_ag_files.CalibrationSchedule(run, equations)
        guider = ScheduleGuider(patch_model(model, Schedule(recording, "LinearAG calibration", "linear_ag_calibration",
                                                            {"name": name, "runs": runs, "seed": seed}, log_runs=False)),
                                positive, negative, cfg)
        for r in range(runs):
            SamplerCustomAdvanced().sample(Noise_RandomNoise(seed + r), guider, sampler, sigmas, latent_image)
        result = equations.fit()  # every latent of the batch is one trajectory
        fitted_for = linear_ag_files.FittedFor(
            sampler=sampler_function_name(sampler), steps=len(sigmas) - 1,
            sigmas=tuple(float(s) for s in sigmas.flatten().tolist()),
            model=type(model.model.model_config).__name__ + " " + model.model.model_type.name, cfg=float(cfg),
            runs=equations.trajectories, prediction=model_facts(model).prediction)
        written = write_under_a_free_name(path, lambda p: linear_ag_files.save(result, fitted_for, p))
        if written == path:
            wrote_file(path, cache_key)
        odd = result.relative_error[1::2]
        count = equations.trajectories
        kept = "" if written == path else f" ({os.path.basename(path)} appeared meanwhile and was kept)"
        text = (f"wrote {written}{kept}: {count} {'trajectory' if count == 1 else 'trajectories'} ({runs} "
                f"{'run' if runs == 1 else 'runs'} of {count // runs} latents), {fitted_for.steps} steps; relative error "
                f"of the estimate {float(odd.min()):.3f} .. {float(odd.max()):.3f} (0 = exact, 1 = as far as the "
                "cond prediction)")
        log.info("LinearAG calibration: %s", text)
        # "text" is shown on the node by web/guidance_schedules.js
        return {"ui": {"text": [text]}, "result": ()}
