"""The skip of the unconditional pass on ComfyUI 0.33's multi-GPU path: where a batch is split over several
devices, model_options["multigpu_clones"] maps each device to its ModelPatcher and calc_cond_batch schedules
the conds over them (comfy.samplers._calc_cond_batch_multigpu). Collected on hosts that have it.

CPU tests reach that code with one device and no thread pool (ComfyUI's own fallback runs each device's work
on the main thread); several real GPUs are verified only by reading (README, "ComfyUI 0.33 on a GPU").
"""
import pytest
import torch

import comfy.samplers
import tiny_models
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from host_sampling import STEPS, ksampler, patched


@pytest.fixture
def multigpu_calls(monkeypatch):
    """How often ComfyUI's multi-GPU calc_cond_batch ran, and the conds it was given (observed, not replaced)."""
    calls = []
    original = comfy.samplers._calc_cond_batch_multigpu

    def observed(model, conds, *args, **kwargs):
        calls.append([c is not None for c in conds])
        return original(model, conds, *args, **kwargs)
    monkeypatch.setattr(comfy.samplers, "_calc_cond_batch_multigpu", observed)
    return calls


def on_the_multigpu_path(model):
    m = model.clone()
    m.model_options["multigpu_clones"] = {m.load_device: m}
    return m


@pytest.mark.parametrize("model_type", ["eps", "flow"])
def test_the_interval_skips_the_unconditional_pass_on_the_multigpu_path(model_type, multigpu_calls):
    model, pos, neg = tiny_models.build_model(model_type), tiny_models.build_conditioning(1), \
        tiny_models.build_conditioning(2)
    bounds = dict(sigma_lo=0.2, sigma_hi=0.7) if model_type == "flow" else dict(sigma_lo=0.3, sigma_hi=3.0)
    single, single_counts = ksampler(patched(model, **bounds), pos, neg, "euler", model_type, batch=2)
    multi, multi_counts = ksampler(on_the_multigpu_path(patched(model, **bounds)), pos, neg, "euler", model_type,
                                   batch=2)
    assert len(multigpu_calls) == STEPS  # every evaluation went through the multi-GPU path
    # unguided steps hand ComfyUI no negative conds at all: nothing of that pass is scheduled on any device
    skipped = sum(1 for present in multigpu_calls if present == [True, False])
    assert 0 < skipped < STEPS and multi_counts == single_counts
    assert multi_counts[1] == 2 * (STEPS - skipped)  # batch of 2: uncond rows only in guided steps
    assert (multi - single).abs().max().item() <= 1e-6


def test_adaptive_guidance_on_the_multigpu_path_is_as_on_one_device(multigpu_calls):
    model, pos, neg = tiny_models.build_model("eps"), tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    single, single_counts = ksampler(AdaptiveGuidancePatch().patch(model, -1.0)[0], pos, neg, "euler", "eps")
    multi, multi_counts = ksampler(on_the_multigpu_path(AdaptiveGuidancePatch().patch(model, -1.0)[0]), pos, neg,
                                   "euler", "eps")
    assert multigpu_calls and multi_counts == single_counts == (STEPS, 1)
    assert (multi - single).abs().max().item() <= 1e-6


def test_a_clone_keeps_the_patch_and_shares_its_run_records():
    """ComfyUI 0.33 clones a patched model for each extra device (deepclone_multigpu clones it, copying
    model_options and attachments) and for training (clone(force_deepcopy=True)): the clone samples with the
    same schedule, and its runs are found where the node that patched it looks (the plot, the run records)."""
    from guidance_schedules.nodes.guidance import history_of
    model, pos, neg = tiny_models.build_model("eps"), tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    original = patched(model, sigma_lo=0.3, sigma_hi=3.0)
    clone = original.clone()
    out_original, counts_original = ksampler(original, pos, neg, "euler", "eps")
    out_clone, counts_clone = ksampler(clone, pos, neg, "euler", "eps")
    assert counts_clone == counts_original and torch.equal(out_clone, out_original)
    assert history_of(clone) is history_of(original) and len(history_of(original).runs) == 2
