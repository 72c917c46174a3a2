"""The one mechanism that runs any guidance schedule inside ComfyUI's sampling.

`patch_model` adds two wrappers to a clone of the MODEL:
- SAMPLER_SAMPLE (once per sampling run): builds a fresh schedule and step tracker for the run
  and hands them to the run's evaluations through its model_options, so a cached MODEL or
  GUIDER reused by later queue runs starts clean every time; logs what guidance did at the end.
- PREDICT_NOISE (every model evaluation): attributes the evaluation to its solver step, lets
  samplers.schedule.guided_evaluation ask the schedule which samples need the unconditional pass,
  runs the conditional pass and, only when needed, the unconditional one, and combines them with
  ComfyUI's own cfg_function so that
  pre-CFG / post-CFG patches and the CFG++ samplers keep working. Other PREDICT_NOISE wrappers
  inside ours still run: only the final stock computation is replaced.

The guider nodes are a plain CFGGuider over a patched model, so the KSampler path (patch) and
the SamplerCustomAdvanced path (guider) run the very same code.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import warnings

import torch

import comfy.model_sampling
import comfy.samplers
from comfy.patcher_extension import WrapperExecutor, WrappersMP

from ..samplers.schedule import EDM_SIGMA, FLOW, Evaluation, GuidanceSchedule, RunInfo, RunRecord, guided_evaluation
from ..samplers.steps import Called, Evaluated, StepTracker, plan_from_events

log = logging.getLogger("guidance_schedules")

def _host_sampling_category() -> str:
    """The KSampler's own menu category ('sampling' up to ComfyUI 0.8, 'model/sampling' in newer ones)."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py (this pack's own nodes/ is only imported relatively)
    category = getattr(getattr(comfy_nodes, "KSampler", None), "CATEGORY", None)
    return category if isinstance(category, str) and category else "sampling"


CATEGORY = f"{_host_sampling_category()}/guidance schedules"  # every node of the pack, beside the KSampler
WRAPPER_KEY = "guidance_schedules"
RUN_KEY = "guidance_schedules_run"  # model_options entry holding the current run's state
HISTORY_KEY = "guidance_schedules_history"  # ModelPatcher attachment: what the last run did


class RunHistory:
    """Where a patched model leaves the record of its latest finished run, for the plot node.

    It holds a result, never state that a run reads: every run starts from a fresh schedule."""

    def __init__(self, describe: str):
        self.describe = describe
        self.last: RunRecord | None = None


class GuidanceRun:
    """Per-run state: the schedule, the step tracker and the record of what happened."""

    def __init__(self, schedule: GuidanceSchedule, tracker: StepTracker):
        self.schedule = schedule
        self.tracker = tracker
        self.record = RunRecord(steps=tracker.steps)
        self.warned = False


def sigma_space_of(model_sampling) -> str:
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return FLOW
    return EDM_SIGMA


def prediction_of(model_sampling) -> str:
    # Subclasses first: EDM < V_PREDICTION < EPS, IMG_TO_IMG < X0 < EPS.
    for cls, name in ((comfy.model_sampling.CONST, "flow"), (comfy.model_sampling.EDM, "edm"),
                      (comfy.model_sampling.V_PREDICTION, "v"), (comfy.model_sampling.X0, "x0"),
                      (comfy.model_sampling.EPS, "eps")):
        if isinstance(model_sampling, cls):
            return name
    return type(model_sampling).__name__


def timesteps_of(model_sampling) -> str:
    if isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete) and len(model_sampling.sigmas) == 1000:
        return "discrete_1000"
    return "continuous"


def sampler_function_name(sampler) -> str:
    fn = getattr(sampler, "sampler_function", None)
    fn = getattr(fn, "func", fn)  # functools.partial
    return getattr(fn, "__name__", type(sampler).__name__)


def patch_model(model, make_schedule, describe: str):
    """A clone of `model` that samples with the schedule `make_schedule(run_info)`.

    One guidance schedule per model: patching an already patched model replaces its schedule (and
    says so, since chaining two of the pack's nodes may look like combining them).
    """
    replaced = history_of(model)
    if replaced is not None:
        log.warning("%s replaces %s on this model: one guidance schedule applies per model.",
                    describe, replaced.describe)
    m = model.clone()
    for kind in (WrappersMP.SAMPLER_SAMPLE, WrappersMP.PREDICT_NOISE):
        m.remove_wrappers_with_key(kind, WRAPPER_KEY)
    history = RunHistory(describe)
    m.set_attachments(HISTORY_KEY, history)
    m.add_wrapper_with_key(WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY,
                           functools.partial(_run_with_schedule, make_schedule, history))
    m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, WRAPPER_KEY, _predict_noise_with_schedule)
    return m


def guider_inputs(cfg_tooltip: str | None = None) -> dict:
    """The inputs every guider node of the pack starts with, in CFGGuider's order."""
    inputs = {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",)}
    if cfg_tooltip:
        inputs["cfg"] = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                   "tooltip": cfg_tooltip})
    return inputs


class ScheduleGuider(comfy.samplers.CFGGuider):
    """The GUIDER the pack's guider nodes output: stock CFGGuider behaviour over a patched model."""

    def __init__(self, model, positive, negative, cfg):
        super().__init__(model)
        self.set_conds(positive, negative)
        self.set_cfg(check_cfg(cfg))


def file_state(path: str | None):
    """What ComfyUI's cache key of a node that reads a file must follow: a file replaced under the same
    name (another size or modification time) is read again by the next prompt."""
    if path is None:
        return "none"
    try:
        stat = os.stat(path)
    except OSError:
        return "absent"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def history_of(model) -> RunHistory | None:
    """The RunHistory of a patched MODEL (or of a GUIDER's model), None if it carries no schedule."""
    patcher = getattr(model, "model_patcher", model)
    return getattr(patcher, "attachments", {}).get(HISTORY_KEY)


# k-diffusion functions with their own time grid: their callbacks count their own steps, so their
# evaluations are placed by sigma on the run's grid (samplers/steps.py) without a rehearsal.
OWN_TIME_GRID = frozenset({"dpm_fast_function", "dpm_adaptive_function"})
_announced_by_sigma: set[str] = set()  # samplers already named in the log as attributed by sigma


class _StandInModel:
    """What a sampler function calls as its model during a rehearsal: it records the call and predicts
    zeros. `inner_model` is the run's guider, as for KSAMPLER's model, because samplers read the
    model sampling through it (model.inner_model.inner_model.model_sampling and
    model.inner_model.model_patcher)."""

    def __init__(self, guider, events: list, hooks_of_the_run: list):
        self.inner_model = guider
        self.events = events
        self.hooks_of_the_run = hooks_of_the_run

    def __call__(self, x, sigma, **extra_args):
        self.events.append(Evaluated(float(sigma.max())))
        denoised = torch.zeros_like(x)
        # A sampler may add post-CFG hooks for its own use (the CFG++ samplers capture the
        # unconditional prediction so) and fails without them; the run's other hooks (PAG, SLG, ...)
        # may call the real model and are not the rehearsal's business.
        options = extra_args.get("model_options", {})
        for hook in options.get("sampler_post_cfg_function", []):
            if not any(hook is h for h in self.hooks_of_the_run):
                hook({"denoised": denoised, "cond": None, "uncond": None, "cond_scale": 1.0,
                      "model": self.inner_model.inner_model, "uncond_denoised": denoised, "cond_denoised": denoised,
                      "sigma": sigma, "model_options": options, "input": x})
        return denoised


def rehearse_steps(sampler, guider, sigmas: torch.Tensor, extra_args: dict, noise) -> list | None:
    """Which step each evaluation of this run belongs to, from a rehearsal of the sampler's own function
    on a one-pixel latent with a stand-in model (samplers/steps.py explains why). None where the
    sampler cannot be rehearsed; its evaluations are then placed by sigma."""
    name = sampler_function_name(sampler)
    function = getattr(sampler, "sampler_function", None)
    reason = None
    if function is None:
        reason = "it is not a k-diffusion sampler function"
    elif name in OWN_TIME_GRID:
        return None
    else:
        events: list = []
        channels = noise.shape[1] if noise is not None and noise.ndim > 1 else 4
        x = torch.zeros((1, channels) + (1,) * (noise.ndim - 2 if noise is not None else 2))
        options = dict(extra_args.get("model_options", {}))
        stand_in = _StandInModel(guider, events, list(options.get("sampler_post_cfg_function", [])))

        def record(info):
            events.append(Called(int(info["i"]), float(info["sigma"]) if "sigma" in info else None))
        try:
            # The run's own random numbers stay untouched, and warnings (torchsde's about float rounding at
            # the ends of its interval) are the real run's to give.
            with torch.random.fork_rng(devices=[]), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                function(stand_in, x, sigmas.detach().to("cpu", torch.float32).clone(),
                         extra_args={**extra_args, "model_options": options}, callback=record, disable=True,
                         **getattr(sampler, "extra_options", {}))
        except Exception as e:  # a third-party sampler may do anything with its model; the rule below still holds
            reason = f"its rehearsal failed ({type(e).__name__}: {e})"
        else:
            plan = plan_from_events(events, [float(s) for s in sigmas.flatten().tolist()])
            if plan is not None:
                return plan
            reason = "its callbacks do not follow the run's steps"
    if name not in _announced_by_sigma:
        _announced_by_sigma.add(name)
        log.warning("Guidance schedules: the steps of sampler %s are recognised by sigma, since %s: an evaluation "
                    "at the next grid sigma starts the next step (README, decision log 2).", name, reason)
    return None


def _run_with_schedule(make_schedule, history: RunHistory, executor, guider, sigmas, extra_args, *args, **kwargs):
    sampler = executor.class_obj
    name = sampler_function_name(sampler)
    model_sampling = guider.model_patcher.get_model_object("model_sampling")
    noise = args[1] if len(args) > 1 else kwargs.get("noise")
    info = RunInfo(sigmas=tuple(float(s) for s in sigmas.flatten().tolist()),
                   sigma_space=sigma_space_of(model_sampling), sampler=name,
                   prediction=prediction_of(model_sampling), timesteps=timesteps_of(model_sampling),
                   latent_shape=tuple(noise.shape) if noise is not None else ())
    if info.steps == 0:
        return executor(guider, sigmas, extra_args, *args, **kwargs)
    plan = rehearse_steps(sampler, guider, sigmas, extra_args, noise)
    run = GuidanceRun(make_schedule(info), StepTracker(info.sigmas, plan))
    extra_args = dict(extra_args)
    extra_args["model_options"] = {**extra_args.get("model_options", {}), RUN_KEY: run}
    out = executor(guider, sigmas, extra_args, *args, **kwargs)
    if run.tracker.departed_at is not None:
        log.warning("Guidance schedules: sampler %s evaluated the model elsewhere than its rehearsal from evaluation %d "
                    "on; those evaluations were attributed to steps by sigma.", name, run.tracker.departed_at)
    history.last = run.record
    details = run.schedule.summary()
    log.info("%s (%s, %s): %s%s", history.describe, name, info.sigma_space, run.record.describe(),
             f"; {details}" if details else "")
    return out


def _is_stock_cfg_guider(guider) -> bool:
    return isinstance(guider, comfy.samplers.CFGGuider) and \
        type(guider).predict_noise is comfy.samplers.CFGGuider.predict_noise


def _predict_noise_with_schedule(executor, x, timestep, model_options={}, seed=None):
    run: GuidanceRun | None = model_options.get(RUN_KEY)
    guider = executor.class_obj
    if run is None:
        return executor(x, timestep, model_options, seed)
    if not _is_stock_cfg_guider(guider):
        if not run.warned:
            log.warning("Guidance schedule inactive: the guider %s computes its own guidance; "
                        "use the pack's guider node or KSampler instead.", type(guider).__name__)
            run.warned = True
        return executor(x, timestep, model_options, seed)
    # Run the remaining (inner) PREDICT_NOISE wrappers, then ours instead of the stock computation.
    # Everything is read there, innermost, so that a wrapper that changes guider.cfg for part of the
    # run (ComfyUI's CFGOverride) acts whether it was added before or after this pack's patch.
    final = functools.partial(_guided_prediction, guider, run)
    inner = WrapperExecutor.new_class_executor(final, guider, executor.wrappers, executor.idx + 1)
    return inner.execute(x, timestep, model_options, seed)


def check_cfg(cfg) -> float:
    """The guidance weight, refused with its name when it is no number >= 0 (NaN or a negative value
    reaches a sampler through a link or the API, where the widget's range is not enforced)."""
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0 (1 = no guidance), got {cfg!r}")
    return float(cfg)


def _guided_prediction(guider, run: GuidanceRun, x, timestep, model_options={}, seed=None):
    """comfy.samplers.sampling_function with a per-sample choice of the unconditional pass and weight."""
    model = guider.inner_model
    positive, negative = guider.conds.get("positive"), guider.conds.get("negative")
    sigma = timestep.max()
    step, first = run.tracker.locate(float(sigma))
    ev = Evaluation(step=step, first_of_step=first, sigma=float(sigma), batch_size=x.shape[0],
                    cond_scale=check_cfg(guider.cfg),
                    skip_uncond_at_weight_one=not model_options.get("disable_cfg1_optimization", False),
                    model_timestep=float(model.model_sampling.timestep(sigma.reshape(1)).flatten()[0]))

    def predict(run_uncond: bool):
        conds = [positive, negative if run_uncond else None]
        if "sampler_calc_cond_batch_function" in model_options:
            args = {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
            out = model_options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options)
        if not run_uncond:
            out = [out[0], out[0]]  # pre-CFG hooks see the conditional prediction in both slots, never None
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": ev.cond_scale, "timestep": timestep,
                    "input": x, "sigma": timestep, "model": model, "model_options": model_options}
            out = fn(args)
        return out[0], out[1]

    cond_pred, uncond_pred, scale, ran_uncond = guided_evaluation(run.schedule, run.record, ev, predict,
                                                                  uncond_available=negative is not None)
    return comfy.samplers.cfg_function(model, cond_pred, uncond_pred, scale, x, timestep,
                                       model_options=model_options, cond=positive,
                                       uncond=negative if ran_uncond else None)
