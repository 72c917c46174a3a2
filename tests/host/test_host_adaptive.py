"""Adaptive Guidance inside a real ComfyUI, on the shared skip mechanism."""
import logging

import pytest
import torch

import comfy.samplers
import tiny_models
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
from guidance_schedules.nodes.adaptive import AdaptiveGuidanceGuider, AdaptiveGuidancePatch
from guidance_schedules.nodes.guidance import history_of
from benchmarks.beds import digits
from benchmarks.beds.comfy_models import class_conditioning, digits_model, network_of
from host_sampling import DETERMINISTIC, SAMPLERS, ksampler


def patched(model, threshold):
    return AdaptiveGuidancePatch().patch(model, threshold)[0]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_threshold_above_one_is_stock_cfg(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    stock, stock_counts = ksampler(model, pos, neg, sampler, model_type, batch=2)
    ours, counts = ksampler(patched(model, 1.5), pos, neg, sampler, model_type, batch=2)
    assert counts == stock_counts
    assert (ours - stock).abs().max().item() <= 1e-6


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_threshold_minus_one_is_cond_only_after_the_first_step(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    cond_only, _ = ksampler(model, pos, pos, sampler, model_type, batch=2)
    ours, (cond_evals, uncond_evals) = ksampler(patched(model, -1.0), pos, neg, sampler, model_type, batch=2)
    assert uncond_evals == 2  # the first evaluation measures the similarity, then never again
    assert (ours - cond_only).abs().max().item() <= 1e-6


# The digits bed: a trained model whose similarity rises during sampling, as in the paper.
LABELS = [3, 8, 1]
SIGMAS = digits.karras_sigmas(32, 0.005, 20.0)


@pytest.fixture(scope="module")
def digits_bed():
    return digits_model("labelnoise30")


def sample_digits(model, guider_of, labels, batch_index, sampler="euler"):
    pos, neg = class_conditioning(labels, digits.NULL_CLASS + 1), class_conditioning(None, digits.NULL_CLASS + 1)
    guider = guider_of(model, pos, neg)
    net = network_of(model)
    net.rows.update(cond=0, uncond=0)
    latent = {"samples": torch.zeros(len(labels), 1, 8, 8), "batch_index": batch_index}
    out = SamplerCustomAdvanced().sample(Noise_RandomNoise(5), guider, comfy.samplers.sampler_object(sampler),
                                         SIGMAS, latent)[0]["samples"]
    return out, dict(net.rows), guider


def ag_guider(threshold, cfg=3.0):
    return lambda model, pos, neg: AdaptiveGuidanceGuider().get_guider(model, pos, neg, cfg, threshold)[0]


def stop_steps(guider):
    record = history_of(guider).last
    return [next((s for s in sorted(record.guided) if not record.guided[s][b]), record.steps) for b in range(record.batch_size)]


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_each_sample_stops_on_its_own_and_matches_its_solo_run(digits_bed, sampler):
    batch, rows, guider = sample_digits(digits_bed, ag_guider(0.995), LABELS, [0, 1, 2], sampler)
    stops = stop_steps(guider)
    assert len(set(stops)) > 1, stops  # the samples cross at different steps
    for b, label in enumerate(LABELS):
        solo, solo_rows, solo_guider = sample_digits(digits_bed, ag_guider(0.995), [label], [b], sampler)
        assert stop_steps(solo_guider) == [stops[b]]
        assert (solo[0] - batch[b]).abs().max().item() <= 1e-5


def test_evaluation_counts_follow_the_stop_steps(digits_bed):
    _, rows, guider = sample_digits(digits_bed, ag_guider(0.995), LABELS, [0, 1, 2])
    stops = stop_steps(guider)
    # euler: one evaluation per step; the batch runs the unconditional pass until its last sample stops,
    # the crossing step included (it measures the similarity there).
    assert rows == {"cond": 3 * 32, "uncond": 3 * (max(stops) + 1)}
    for b, label in enumerate(LABELS):
        _, solo_rows, _ = sample_digits(digits_bed, ag_guider(0.995), [label], [b])
        assert solo_rows == {"cond": 32, "uncond": stops[b] + 1}


def test_guider_and_patch_agree_and_a_second_run_is_the_same(digits_bed):
    via_guider, guider_rows, guider = sample_digits(digits_bed, ag_guider(0.99), LABELS, [0, 1, 2])

    def patch_guider(model, pos, neg):
        g = comfy.samplers.CFGGuider(patched(model, 0.99))
        g.set_conds(pos, neg)
        g.set_cfg(3.0)
        return g
    via_patch, patch_rows, _ = sample_digits(digits_bed, patch_guider, LABELS, [0, 1, 2])
    assert torch.equal(via_guider, via_patch) and guider_rows == patch_rows
    again = SamplerCustomAdvanced().sample(Noise_RandomNoise(5), guider, comfy.samplers.sampler_object("euler"), SIGMAS,
                                           {"samples": torch.zeros(3, 1, 8, 8), "batch_index": [0, 1, 2]})[0]["samples"]
    assert torch.equal(again, via_guider)


def test_the_run_summary_says_what_happened(digits_bed, caplog):
    with caplog.at_level(logging.INFO, logger="guidance_schedules"):
        _, _, guider = sample_digits(digits_bed, ag_guider(0.995), LABELS, [0, 1, 2])
    stops = stop_steps(guider)
    assert "Adaptive guidance (threshold 0.995)" in caplog.text
    assert f"sample 0: guided {stops[0]} of 32 steps" in caplog.text


@pytest.mark.parametrize("bad", [1.5 + 1, -1.5, float("nan")])
def test_bad_threshold_is_refused_by_name(bad):
    model = tiny_models.build_model("eps")
    with pytest.raises(ValueError, match=r"threshold must be a number in \[-1, 2\]"):
        AdaptiveGuidancePatch().patch(model, bad)


# LinearAG: coefficients fitted on the digits bed by the calibration node, then used by the AG nodes.
from guidance_schedules.nodes.adaptive import LINEAR_AG_FOLDER, LinearAGCalibrate


@pytest.fixture(scope="module")
def linear_ag_file(digits_bed, tmp_path_factory):
    import folder_paths
    folder = str(tmp_path_factory.mktemp("models") / LINEAR_AG_FOLDER)
    # the node writes into the folder ComfyUI lists first for linear_ag (never into the host's tree)
    folder_paths.add_model_folder_path(LINEAR_AG_FOLDER, folder, is_default=True)
    try:
        labels = list(range(10)) * 2
        latent = {"samples": torch.zeros(len(labels), 1, 8, 8)}
        out = LinearAGCalibrate().calibrate(
            digits_bed, class_conditioning(labels, 11), class_conditioning(None, 11), 3.0,
            comfy.samplers.sampler_object("euler"), SIGMAS, latent, runs=2, seed=100, name="digits_euler_32")
        with pytest.raises(ValueError, match="exists; choose another name"):
            LinearAGCalibrate().calibrate(
                digits_bed, class_conditioning(labels, 11), class_conditioning(None, 11), 3.0,
                comfy.samplers.sampler_object("euler"), SIGMAS, latent, runs=1, seed=100, name="digits_euler_32")
    finally:
        paths = folder_paths.folder_names_and_paths[LINEAR_AG_FOLDER][0]
        paths.append(paths.pop(paths.index(folder)))  # still listed, for the tests that sample with it
    return "digits_euler_32.safetensors", out["ui"]["text"][0]


def psnr(a, b):
    return 10 * torch.log10(4 / ((a - b) ** 2).mean()).item()


def test_linear_ag_estimates_every_other_guided_step_and_stays_close_to_cfg(digits_bed, linear_ag_file):
    name, report = linear_ag_file
    assert "40 trajectories (2 runs of 20 latents), 32 steps" in report
    cfg, cfg_rows, _ = sample_digits(digits_bed, ag_guider(2.0), LABELS, [0, 1, 2])  # never stops: CFG
    linear = lambda m, p, n: AdaptiveGuidanceGuider().get_guider(m, p, n, 3.0, 2.0, linear_ag=name)[0]  # noqa: E731
    ours, rows, _ = sample_digits(digits_bed, linear, LABELS, [0, 1, 2])
    assert cfg_rows == {"cond": 96, "uncond": 96}
    assert rows == {"cond": 96, "uncond": 3 * 16}  # the real pass on even steps only
    assert psnr(ours, cfg) > 30, psnr(ours, cfg)  # measured: 44.8 dB


def test_linear_ag_file_for_another_sampler_or_step_count_is_refused(digits_bed, linear_ag_file):
    name, _ = linear_ag_file
    linear = lambda m, p, n: AdaptiveGuidanceGuider().get_guider(m, p, n, 3.0, 0.99, linear_ag=name)[0]  # noqa: E731
    with pytest.raises(ValueError, match="fitted for the sampler euler; this run uses dpmpp_2m"):
        sample_digits(digits_bed, linear, LABELS, [0, 1, 2], sampler="dpmpp_2m")
    with pytest.raises(ValueError, match="linear_ag: no file named 'missing.safetensors'"):
        AdaptiveGuidancePatch().patch(digits_bed, 0.99, linear_ag="missing.safetensors")


def test_a_linear_ag_file_for_another_grid_or_model_is_refused_and_another_cfg_noted(digits_bed, linear_ag_file,
                                                                                      caplog):
    name, _ = linear_ag_file
    linear = lambda m, p, n: AdaptiveGuidanceGuider().get_guider(m, p, n, 3.0, 2.0, linear_ag=name)[0]  # noqa: E731
    pos, neg = class_conditioning(LABELS, 11), class_conditioning(None, 11)
    latent = {"samples": torch.zeros(len(LABELS), 1, 8, 8)}
    euler = comfy.samplers.sampler_object("euler")
    other_grid = digits.karras_sigmas(32, 0.005, 10.0)  # same sampler and step count, another sigma_max
    with pytest.raises(ValueError, match=r"fitted for the sigmas 20, .*this run samples 10, "):
        SamplerCustomAdvanced().sample(Noise_RandomNoise(5), linear(digits_bed, pos, neg), euler, other_grid, latent)
    half = SIGMAS[16:]  # denoise 0.5 samples the second half of the grid: another step count, refused too
    with pytest.raises(ValueError, match="fitted for 32 steps; this run has 16"):
        SamplerCustomAdvanced().sample(Noise_RandomNoise(5), linear(digits_bed, pos, neg), euler, half, latent)
    v_model = tiny_models.build_model("v_prediction")
    tiny_pos, tiny_neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    with pytest.raises(ValueError, match="fitted for a model with edm prediction; this model has v prediction"):
        SamplerCustomAdvanced().sample(Noise_RandomNoise(5), linear(v_model, tiny_pos, tiny_neg), euler, SIGMAS,
                                       {"samples": torch.zeros(1, tiny_models.CHANNELS, 8, 8)})
    other_cfg = lambda m, p, n: AdaptiveGuidanceGuider().get_guider(m, p, n, 5.0, 2.0, linear_ag=name)[0]  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
        sample_digits(digits_bed, other_cfg, LABELS, [0, 1, 2])
    assert "fitted at cfg 3; this run guides with cfg 5" in caplog.text
