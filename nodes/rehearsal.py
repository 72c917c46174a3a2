"""The rehearsal that tells which solver step each model evaluation of a run belongs to.

samplers/steps.py explains why it is needed and what is done with its result; this is the part that
runs ComfyUI's sampler function, with a stand-in for the model.
"""
from __future__ import annotations

import inspect
import logging
import warnings
import weakref
from collections import OrderedDict

import torch

from ..samplers.steps import Called, Evaluated, PlannedEvaluation, plan_from_events

log = logging.getLogger("guidance_schedules")


def sampler_function_name(sampler) -> str:
    """The k-diffusion function's name of a SAMPLER (sample_euler, ...), or its class name."""
    fn = getattr(sampler, "sampler_function", None)
    fn = getattr(fn, "func", fn)  # functools.partial
    return getattr(fn, "__name__", type(sampler).__name__)


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


def _cheap_noise(function, x) -> dict:
    """A noise sampler of zeros for SDE samplers that take one: the noise never moves an evaluation's sigma,
    and their default (torchsde's Brownian tree) costs more than the rest of the rehearsal."""
    try:
        takes_it = "noise_sampler" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    return {"noise_sampler": lambda sigma, sigma_next: torch.zeros_like(x)} if takes_it else {}


# Plans of earlier runs, per model sampling object (a rehearsal of many steps costs about a tenth of a cheap step
# per step: the same sampler on the same grid, queued again, rehearses once). What a rehearsal depends on is the key:
# the sampler function and its options, the sigmas, the latent's layout, and the model sampling (some samplers
# branch on it).
_PLANS_KEPT = 16
_plans: "weakref.WeakKeyDictionary[object, OrderedDict]" = weakref.WeakKeyDictionary()


def _plan_key(sampler, sigmas: torch.Tensor, noise, model_options: dict) -> tuple:
    function = getattr(sampler, "sampler_function", None)
    options = getattr(sampler, "extra_options", {})
    layout = (noise.ndim, noise.shape[1] if noise.ndim > 1 else 0) if noise is not None else None
    hooks = tuple(id(h) for h in model_options.get("sampler_post_cfg_function", []))
    return (function, repr(sorted(options.items(), key=lambda kv: str(kv[0]))), layout, hooks,
            tuple(float(s) for s in sigmas.flatten().tolist()))


def rehearse_steps(sampler, guider, sigmas: torch.Tensor, extra_args: dict, noise) -> list[PlannedEvaluation] | None:
    """Which step each evaluation of this run belongs to, from a rehearsal of the sampler's own function
    on a one-pixel latent with a stand-in model (samplers/steps.py explains why), or from the same rehearsal
    made for an earlier run. None where the sampler cannot be rehearsed; its evaluations are then placed by
    sigma."""
    model_sampling = guider.model_patcher.get_model_object("model_sampling")
    try:
        kept = _plans.setdefault(model_sampling, OrderedDict())
    except TypeError:  # not weakly referable: rehearse every run
        kept = OrderedDict()
    key = _plan_key(sampler, sigmas, noise, extra_args.get("model_options", {}))
    if key in kept:
        kept.move_to_end(key)
        return kept[key]
    plan = _rehearse(sampler, guider, sigmas, extra_args, noise)
    kept[key] = plan
    while len(kept) > _PLANS_KEPT:
        kept.popitem(last=False)
    return plan


def _rehearse(sampler, guider, sigmas: torch.Tensor, extra_args: dict, noise) -> list[PlannedEvaluation] | None:
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
                         **{**_cheap_noise(function, x), **getattr(sampler, "extra_options", {})})
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
