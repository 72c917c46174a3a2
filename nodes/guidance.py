"""The one mechanism that runs any guidance schedule inside ComfyUI's sampling.

`patch_model` adds two wrappers to a clone of the MODEL:
- SAMPLER_SAMPLE (once per sampling run): rehearses the run to attribute its evaluations to steps
  (nodes/rehearsal.py), builds a fresh schedule, step tracker and driver for the run and hands them
  to the run's evaluations through its model_options, so a cached MODEL or GUIDER reused by later
  queue runs starts clean every time; logs what guidance did at the end.
- PREDICT_NOISE (every model evaluation): attributes the evaluation to its solver step, lets the
  driver (samplers.schedule.ScheduleDriver) ask the schedule which samples need the unconditional
  pass, runs the conditional pass and, only when needed, the unconditional one, and combines them
  with ComfyUI's own cfg_function so that pre-CFG / post-CFG patches and the CFG++ samplers keep
  working. Other PREDICT_NOISE wrappers inside ours still run: only the final stock computation is
  replaced. Under ComfyUI's guiders that combine their passes their own way (PerpNeg, DualCFG,
  DualModel), a guided evaluation is the guider's own and an unguided one the positive pass alone.

The nodes that use it (a method's node pair) are nodes/method_nodes.py.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from dataclasses import dataclass, field
from typing import Callable

import torch

import comfy.patcher_extension
import comfy.samplers
from comfy.patcher_extension import WrapperExecutor, WrappersMP

from ..samplers.checks import number
from ..samplers.schedule import Evaluation, GuidanceSchedule, RunInfo, RunRecord, ScheduleDriver
from ..samplers.steps import StepTracker
from .host_facts import OwnGuidance, model_facts, own_guidance_of, renoises_with_uncond, takes_flow_step
from .rehearsal import rehearse_steps, sampler_function_name
from .reports import report

log = logging.getLogger("guidance_schedules")

WRAPPER_KEY = "guidance_schedules"
RUN_KEY = "guidance_schedules_run"  # model_options entry holding the current run's state
HISTORY_KEY = "guidance_schedules_history"  # ModelPatcher attachment: what the last run did

ScheduleFactory = Callable[[RunInfo], GuidanceSchedule]


@dataclass(frozen=True)
class Schedule:
    """A method's schedule as a patched model carries it: how each run's GuidanceSchedule is made (a fresh one per
    run) and what names it in the log and the API's run records."""

    make: ScheduleFactory  # RunInfo -> the run's GuidanceSchedule
    describe: str  # its name in the log ("Guidance interval (0.28, 5.42]")
    method: str = ""  # GuidanceMethod.key, for the run records ("interval")
    settings: dict = field(default_factory=dict)  # the method node's inputs, for the run records
    log_runs: bool = True  # a line in the log per sampling run (not for the calibration's many runs)


def fingerprint(latent: torch.Tensor) -> torch.Tensor:
    """A small sample of a latent, enough to tell which sampler made a LATENT, kept on the latent's device (a
    finished run copies nothing to the host for it: the plot node, which may never come, compares there)."""
    flat = latent.detach().flatten()
    return torch.cat([torch.tensor(latent.shape, dtype=torch.float32).to(latent.device),
                      flat[:: max(1, flat.numel() // 1024)][:1024].to(torch.float32)])


class RunHistory:
    """Where a patched model leaves the records of its latest finished runs, for the plot node, each
    with a fingerprint of the latent its sampler returned, so the plot can find the run that made the
    LATENT it is given. It holds results, never state that a run reads: every run starts from a fresh
    schedule."""

    KEPT = 8

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.runs: list[tuple[torch.Tensor, RunRecord]] = []

    @property
    def describe(self) -> str:
        return self.schedule.describe

    @property
    def last(self) -> RunRecord | None:
        return self.runs[-1][1] if self.runs else None

    def add(self, output: torch.Tensor, record: RunRecord) -> None:
        self.runs = (self.runs + [(fingerprint(output), record)])[-self.KEPT:]

    def run_that_made(self, latent: torch.Tensor) -> RunRecord | None:
        """The kept run whose sampler returned `latent` (the newest, where several did)."""
        seen = fingerprint(latent)
        for mark, record in reversed(self.runs):
            if mark.shape == seen.shape and torch.allclose(mark, seen.to(mark.device), rtol=1e-4, atol=1e-6):
                return record
        return None


class GuidanceRun:
    """Per-run state: the step tracker, the driver of the run's schedule (which keeps its record), and what is
    made once per run so that an evaluation costs no more than it must: the model's own timestep of each
    planned evaluation, and the sigmas the sampler really evaluated at, kept on their device and checked
    against the plan once the run is over."""

    def __init__(self, schedule: GuidanceSchedule, tracker: StepTracker, model_sampling):
        self.tracker = tracker
        self.driver = ScheduleDriver(schedule, RunRecord(steps=tracker.steps))
        self.model_sampling = model_sampling
        self.warned = False
        self.evaluated_sigmas: list[torch.Tensor] = []  # the sampler's sigmas of the planned evaluations, on the device
        self.evaluated_plan: list[int] = []  # and the plan's index each was attributed to
        self._model_timesteps: list[float] | None = None

    @property
    def model_timesteps(self) -> list[float]:
        """The model's timestep of every planned evaluation (the annealing network reads it): one conversion for
        the run, made when first asked."""
        if self._model_timesteps is None:
            sigmas = torch.tensor([p.sigma for p in self.tracker.plan or []], dtype=torch.float32)
            self._model_timesteps = self.model_sampling.timestep(sigmas).flatten().tolist() if len(sigmas) else []
        return self._model_timesteps

    def locate(self, timestep: torch.Tensor) -> tuple[int, bool, float, float]:
        """(step, first of its step, sigma, model timestep) of the next evaluation, at `timestep` (the sampler's
        sigma per sample). While the run follows its rehearsal nothing is read from the device."""
        planned = self.tracker.next_planned()
        if planned is not None:
            k = self.tracker.evaluations - 1
            self.evaluated_sigmas.append(timestep)
            self.evaluated_plan.append(k)
            return (planned.step, planned.first_of_step, planned.sigma,
                    self.model_timesteps[k] if self.driver.schedule.reads_model_timestep else 0.0)
        sigma = float(timestep.max())
        step, first = self.tracker.locate(sigma)
        model_timestep = float(self.model_sampling.timestep(torch.tensor([sigma], dtype=torch.float32)).flatten()[0]) \
            if self.driver.schedule.reads_model_timestep else 0.0
        return step, first, sigma, model_timestep

    def departure(self) -> int | None:
        """The first evaluation where the run left its rehearsal: the sigmas are compared with the plan on their
        device, and one bool is read, once, at the run's end."""
        if not self.evaluated_sigmas:
            return self.tracker.departed_at
        shapes = {t.shape for t in self.evaluated_sigmas}
        if len(shapes) == 1:  # one batch size for the run: one operation
            seen = torch.stack(self.evaluated_sigmas).reshape(len(self.evaluated_sigmas), -1).amax(dim=1)
        else:
            seen = torch.stack([t.reshape(-1).max() for t in self.evaluated_sigmas])
        plan = self.tracker.plan
        planned = torch.tensor([plan[k].sigma for k in self.evaluated_plan], dtype=torch.float32).to(seen.device)
        # the tracker's tolerance (steps._close), in float32 since some devices have no float64
        if bool(torch.isclose(seen.float(), planned, rtol=1e-5, atol=1e-9).all()):
            return self.tracker.departed_at
        return self.tracker.departure(list(zip(self.evaluated_plan, seen.to("cpu", torch.float64).tolist())))


def patch_model(model, schedule: Schedule):
    """A clone of `model` that samples with `schedule` (each run with a fresh `schedule.make(run_info)`).

    One guidance schedule per model: patching an already patched model replaces its schedule (and
    says so, since chaining two of the pack's nodes may look like combining them).
    """
    replaced = history_of(model)
    if replaced is not None:
        log.warning("%s replaces %s on this model: one guidance schedule applies per model.",
                    schedule.describe, replaced.describe)
    m = model.clone()
    for kind in (WrappersMP.SAMPLER_SAMPLE, WrappersMP.PREDICT_NOISE):
        m.remove_wrappers_with_key(kind, WRAPPER_KEY)
    history = RunHistory(schedule)
    m.set_attachments(HISTORY_KEY, history)
    m.add_wrapper_with_key(WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY, functools.partial(_run_with_schedule, history))
    m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, WRAPPER_KEY, _predict_noise_with_schedule)
    # first, i.e. outermost: a PREDICT_NOISE wrapper of a node applied before this one (LazyCache) may answer an
    # evaluation itself, and the run's step tracker has to see it (wrappers run in the order of their keys)
    wrappers = m.wrappers[WrappersMP.PREDICT_NOISE]
    m.wrappers[WrappersMP.PREDICT_NOISE] = {WRAPPER_KEY: wrappers[WRAPPER_KEY],
                                            **{k: v for k, v in wrappers.items() if k != WRAPPER_KEY}}
    return m


def history_of(model) -> RunHistory | None:
    """The RunHistory of a patched MODEL (or of a GUIDER's model), None if it carries no schedule."""
    patcher = getattr(model, "model_patcher", model)
    return getattr(patcher, "attachments", {}).get(HISTORY_KEY)


def check_cfg(cfg) -> float:
    """The guidance weight, refused with its name when it is no number >= 0 (NaN or a negative value
    reaches a sampler through a link or the API, where the widget's range is not enforced)."""
    return number("cfg", cfg, 0.0, meaning="1 = no guidance")


@contextlib.contextmanager
def plain_value_errors():
    """The pack's own ValueError subclass (samplers.files.FileRefused) as a plain ValueError:
    ComfyUI shows an error's type by its module path, which for a custom node is a file path; the user
    should read the message."""
    try:
        yield
    except ValueError as e:
        if type(e) is ValueError:
            raise
        raise ValueError(str(e)) from None


# --- the wrappers ----------------------------------------------------------------------------------

def _run_with_schedule(history: RunHistory, executor, guider, sigmas, extra_args, *args, **kwargs):
    sampler = executor.class_obj
    name = sampler_function_name(sampler)
    model_sampling = guider.model_patcher.get_model_object("model_sampling")
    noise = args[1] if len(args) > 1 else kwargs.get("noise")
    own = own_guidance_of(guider)
    facts = model_facts(guider.model_patcher)
    info = RunInfo(sigmas=tuple(float(s) for s in sigmas.flatten().tolist()),
                   sigma_space=facts.sigma_space, sampler=name,
                   renoises_with_uncond=renoises_with_uncond(name), takes_flow_step=takes_flow_step(name),
                   guider=own.node if own is not None else "",
                   prediction=facts.prediction, timesteps=facts.timesteps,
                   latent_shape=tuple(noise.shape) if noise is not None else (),
                   model_family=facts.family, noise_scale=facts.noise_scale)
    if info.steps == 0:
        return executor(guider, sigmas, extra_args, *args, **kwargs)
    with plain_value_errors():  # a core guider's scales refused before any step, naming the input
        scales = own.scale_values(guider) if own is not None else {}
    plan = rehearse_steps(sampler, guider, sigmas, extra_args, noise)
    with plain_value_errors():
        schedule = history.schedule.make(info)
    run = GuidanceRun(schedule, StepTracker(info.sigmas, plan), model_sampling)
    extra_args = dict(extra_args)
    extra_args["model_options"] = {**extra_args.get("model_options", {}), RUN_KEY: run}
    out = executor(guider, sigmas, extra_args, *args, **kwargs)
    departed = run.departure()
    if departed is not None:
        log.warning("Guidance schedules: sampler %s evaluated the model elsewhere than its rehearsal from evaluation "
                    "%d on; guidance decisions from there may belong to other steps than the ones the run took.",
                    name, departed)
    # what the sampler node will return: ComfyUI's inner_sample hands the latent on through process_latent_out
    finished(history, run.driver, guider.inner_model.process_latent_out(out.detach()), name, info.sigma_space,
             float(guider.cfg) if own is None else own.weight(guider), scales)
    return out


def finished(history: RunHistory, driver: ScheduleDriver, output: torch.Tensor, sampler: str, sigma_space: str,
             cfg: float, guider_scales: dict | None = None) -> None:
    """Where a finished run's record goes, in one place: the model's history (the plot node), the API's run
    records and event (nodes/reports.py) and the log. Under a core guider with scales of its own, `cfg` is its
    first and `guider_scales` all of them, by input name."""
    record, named = driver.record, history.schedule
    history.add(output, record)
    report({"method": named.method, "settings": dict(named.settings), "describe": named.describe, "sampler": sampler,
            "sigma_space": sigma_space, "cfg": cfg, **({"guider_scales": guider_scales} if guider_scales else {}),
            **record.as_dict()})
    if named.log_runs:
        details = driver.schedule.summary()
        log.info("%s (%s, %s): %s%s", named.describe, sampler, sigma_space, record.describe(),
                 f"; {details}" if details else "")


def _is_stock_cfg_guider(guider) -> bool:
    return isinstance(guider, comfy.samplers.CFGGuider) and \
        type(guider).predict_noise is comfy.samplers.CFGGuider.predict_noise


def _predict_noise_with_schedule(executor, x, timestep, model_options={}, seed=None):
    run: GuidanceRun | None = model_options.get(RUN_KEY)
    guider = executor.class_obj
    if run is None:
        return executor(x, timestep, model_options, seed)
    own = own_guidance_of(guider)
    if own is None and not _is_stock_cfg_guider(guider):
        if not run.warned:
            log.warning("Guidance schedule inactive: the guider %s computes its own guidance; "
                        "use the pack's guider node or KSampler instead.", type(guider).__name__)
            run.warned = True
        return executor(x, timestep, model_options, seed)
    # Ours is the outermost PREDICT_NOISE wrapper (patch_model puts it first): every evaluation of the run
    # reaches it, also one that a wrapper inside answers itself (LazyCache), so it is counted here.
    located = run.locate(timestep)
    if own is not None:
        return _own_guidance_prediction(executor, guider, own, run, located, x, timestep, model_options, seed)
    # Run the remaining (inner) PREDICT_NOISE wrappers, then ours instead of the stock computation.
    # Everything else is read there, innermost, so that a wrapper that changes guider.cfg for part of the
    # run (ComfyUI's CFGOverride) acts whether it was added before or after this pack's patch.
    if executor.idx + 1 >= len(executor.wrappers):  # no other wrapper (the common case)
        return _guided_prediction(guider, run, located, x, timestep, model_options, seed)
    final = functools.partial(_guided_prediction, guider, run, located)
    inner = WrapperExecutor.new_class_executor(final, guider, executor.wrappers, executor.idx + 1)
    return inner.execute(x, timestep, model_options, seed)


def _evaluation(guider, located: tuple, x, model_options, cfg1_shortcut: bool, own: OwnGuidance | None = None
                ) -> Evaluation:
    """The evaluation as the schedule sees it: its step, sigma, the guider's cfg, whether ComfyUI's cfg == 1
    shortcut may skip the unconditional pass (not where the guider applies its own shortcuts), and whether a
    patch of the model reads that pass itself: one that asked ComfyUI to run it even at cfg 1
    (disable_model_cfg1_optimization: SelfAttentionGuidance, NAGuidance). The CFG++ samplers ask the same for
    their run only (in the sampler's model_options, not the model's): they re-noise with whatever the slot
    holds, so for them the pass is still skipped (decision 4)."""
    step, first, sigma, model_timestep = located
    return Evaluation(step=step, first_of_step=first, sigma=sigma, batch_size=x.shape[0],
                      cond_scale=check_cfg(guider.cfg) if own is None else own.weight(guider),
                      skip_uncond_at_weight_one=cfg1_shortcut and not model_options.get("disable_cfg1_optimization", False),
                      model_timestep=model_timestep,
                      hooks_read_uncond=cfg1_shortcut and bool(guider.model_options.get("disable_cfg1_optimization")))


def _passes(model, conds: list, x, timestep, model_options, cond_scale: float) -> tuple:
    """sampling_function's passes: calc_cond_batch (or the model's sampler_calc_cond_batch_function) for [positive,
    negative or None], then the pre-CFG functions; a skipped unconditional pass hands them the conditional
    prediction in its slot, never None."""
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        out = model_options["sampler_calc_cond_batch_function"](args)
    else:
        out = comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options)
    if conds[1] is None:
        out = [out[0], out[0]]
    for fn in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        out = fn(args)
    return out[0], out[1]


def _as_new_branch(conds: list) -> list:
    """The conditioning under new uuids. ComfyUI gives each conditioning a uuid, by which caches that keep a
    difference per branch (EasyCache) tell the branches apart; where the unconditional pass runs again after
    evaluations without it, the difference such a cache kept for it is from before the gap, and applying it
    would stand in for the pass with a stale prediction. Under new uuids the cache has none to apply: the model
    runs (and the cache keeps a difference under the new uuid from then on, until its run ends)."""
    return [dict(c, uuid=uuid.uuid4()) for c in conds]


def _check_branch_cache(model_options: dict) -> None:
    """EasyCache before ComfyUI 0.33 applies its kept difference to every branch of a step it skips, and stops
    with a KeyError for a branch it has none for: a negative pass that starts or returns mid-run. Said plainly
    instead, before the model is called."""
    holder = model_options.get("transformer_options", {}).get("easycache")
    if hasattr(holder, "uuid_cache_diffs") and not hasattr(holder, "can_apply_cache_diff"):
        raise ValueError("EasyCache: this ComfyUI's EasyCache cannot take a negative-prompt pass that starts or comes "
                         "back in the middle of a run (here: an interval that begins after the first step, or "
                         "LinearAG); it would stop with a KeyError. Update ComfyUI (0.33 handles it), or remove "
                         "EasyCache (LazyCache works)")


def _guided_prediction(guider, run: GuidanceRun, located: tuple, x, timestep, model_options={}, seed=None):
    """comfy.samplers.sampling_function with a per-sample choice of the unconditional pass and weight.

    It mirrors the host's sampling_function, identical in ComfyUI 0.3.64, 0.8.0 and 0.33.0: the cfg == 1
    shortcut (here the driver's, per sample), `sampler_calc_cond_batch_function` or calc_cond_batch for
    [positive, negative or None], the `sampler_pre_cfg_function`s, then cfg_function (sampler_cfg_function and
    the post-CFG functions). A host that changes sampling_function must change this too; what holds it equal
    to stock on every host in CI is tests/host/test_host_every_sampler.py (every sampler of the host, every
    step guided: the stock results and pass counts) with tests/host/test_host_composition.py (pre-CFG,
    post-CFG and cfg patches of the host composed in both orders)."""
    model = guider.inner_model
    positive, negative = guider.conds.get("positive"), guider.conds.get("negative")
    ev = _evaluation(guider, located, x, model_options, cfg1_shortcut=True)
    whole_batch = run.driver.plain_step(ev) if negative is not None and _stock_step_is_ours(guider, model_options) \
        else None
    if whole_batch is not None:
        # the whole batch guided with the sampler's cfg, or none of it: then this evaluation is stock
        # sampling_function's at that cfg or at 1 (whose shortcut skips the pass), exactly, and costs what it does
        out = comfy.samplers.sampling_function(model, x, timestep, negative, positive,
                                               ev.cond_scale if whole_batch else 1.0, model_options, seed)
        run.driver.record_plain(ev, whole_batch)
        return out

    def predict(run_uncond: bool):
        uncond = negative
        if run.driver.pass_returns(run_uncond):
            _check_branch_cache(model_options)
            uncond = _as_new_branch(negative)
        return _passes(model, [positive, uncond if run_uncond else None], x, timestep, model_options, ev.cond_scale)

    guided = run.driver.evaluate(ev, predict, uncond_available=negative is not None)
    # Without the pass, the post-CFG functions get the positive conditioning as `uncond`: the one whose prediction
    # the unconditional slot holds (SelfAttentionGuidance evaluates the model on it again; None would be a zero
    # prediction there).
    return comfy.samplers.cfg_function(model, guided.cond, guided.uncond_slot, guided.cond_scale, x, timestep,
                                       model_options=model_options, cond=positive,
                                       uncond=negative if guided.ran_uncond else positive)


# What makes the general path differ from stock sampling_function's at cfg or at 1: a sampler that asks for the
# pass at cfg 1 (the CFG++ samplers: the pack still skips it, decision 4), and functions that would see the zero
# prediction stock puts in a skipped pass's slot (the pack puts the conditional one there, decision 4).
_NOT_STOCK_STEP = ("disable_cfg1_optimization", "sampler_pre_cfg_function", "sampler_post_cfg_function",
                   "sampler_cfg_function")


def _stock_step_is_ours(guider, model_options: dict) -> bool:
    """Does stock sampling_function, at the guider's cfg or at 1, do what the pack's general path does here?"""
    return not any(model_options.get(key) for key in _NOT_STOCK_STEP) and \
        not guider.model_options.get("disable_cfg1_optimization")


def _own_guidance_prediction(executor, guider, own: OwnGuidance, run: GuidanceRun, located: tuple, x, timestep,
                             model_options, seed):
    """One evaluation under a core guider that combines its passes its own way (PerpNeg, DualCFG, DualModel): where
    a sample is guided, the guider's own prediction, exactly (the rest of the PREDICT_NOISE chain and its
    predict_noise run, every pass of theirs included); where none is, the positive pass alone, as a CFG step
    without guidance (cfg_function with the conditional prediction in both slots). Adaptive Guidance compares the
    positive prediction with the one `own` names, read from the guider's calc_cond_batch calls."""
    model, positive = guider.inner_model, guider.conds.get("positive")
    ev = _evaluation(guider, located, x, model_options, cfg1_shortcut=False, own=own)  # the guider's own shortcuts
    guiders_own = {}

    def predict(run_uncond: bool):
        if not run_uncond:
            return _passes(model, [positive, None], x, timestep, model_options, ev.cond_scale)
        calls = []
        guiders_own["prediction"] = executor(x, timestep, _capturing_passes(model_options, calls), seed)
        return own.prediction(calls, (own.cond,)), own.prediction(calls, own.uncond)

    guided = run.driver.evaluate(ev, predict)
    if guided.ran_uncond and all(guided.guided):
        return guiders_own["prediction"]
    alone = comfy.samplers.cfg_function(model, guided.cond, guided.cond, 1.0, x, timestep, model_options=model_options,
                                        cond=positive, uncond=positive)
    if not guided.ran_uncond or not any(guided.guided):
        return alone
    return torch.where(run.driver.mask(guided.guided, x), guiders_own["prediction"], alone)


def _capturing_passes(model_options: dict, calls: list) -> dict:
    """A copy of model_options whose calc_cond_batch calls (through ComfyUI's CALC_COND_BATCH wrappers) append
    (their conditionings, their results) to `calls`."""
    def capture(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        conds = args[1] if len(args) > 1 else kwargs.get("conds")
        calls.append((list(conds), out))
        return out
    options = comfy.patcher_extension.copy_nested_dicts(model_options)
    comfy.patcher_extension.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, capture, options,
                                                 is_model_options=True)
    return options
