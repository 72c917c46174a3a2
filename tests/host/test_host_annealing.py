"""Annealing guidance inside a real ComfyUI: the official trajectory replayed, batches, refusals."""
import reference

PARITY = reference.require_reference()

import pytest
import torch

import comfy.samplers
import folder_paths
import nodes as comfy_nodes
import tiny_models
from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, SamplerCustomAdvanced
from guidance_schedules.nodes import annealing as annealing_nodes
from guidance_schedules.nodes.annealing import AnnealingGuidanceGuider, AnnealingGuidancePatch
from guidance_schedules.nodes.guidance import history_of
from guidance_schedules.nodes.plot import GuidanceSchedulePlot
from guidance_schedules.samplers.annealing import convert_official_checkpoint

SCHEDULER = "annealing_sdxl_test.safetensors"


@pytest.fixture(scope="module", autouse=True)
def scheduler_folder(tmp_path_factory):
    """The converted official network in a guidance_schedulers folder, as a user would place it."""
    folder = tmp_path_factory.mktemp("guidance_schedulers")
    convert_official_checkpoint(str(reference.CHECKPOINT), str(folder / SCHEDULER))
    folder_paths.add_model_folder_path(annealing_nodes.FOLDER, str(folder))
    return folder


def replay_sigmas():
    alphas = PARITY["alphas_cumprod"]
    t = PARITY["traj.timesteps"].long()
    return torch.cat([((1 - alphas[t]) / alphas[t]).sqrt(), torch.zeros(1)]).float()


def replay(samples, lam, via):
    """The reference run in ComfyUI: x = z * sqrt(1 + sigma^2), sigmas of the DDIM timesteps, euler_cfg_pp."""
    model = tiny_models.build_pattern_model(PARITY["traj.pattern_cond"][samples], PARITY["traj.pattern_uncond"][samples])
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    sigmas = replay_sigmas()
    x_start = PARITY["traj.z_start"][samples] * (1 + sigmas[0].double() ** 2).sqrt()
    if via == "guider":
        guider = AnnealingGuidanceGuider().get_guider(model, pos, neg, SCHEDULER, **{"lambda": lam})[0]
    else:
        patched = AnnealingGuidancePatch().patch(model, SCHEDULER, **{"lambda": lam})[0]
        guider = comfy.samplers.CFGGuider(patched)
        guider.set_conds(pos, neg)
        guider.set_cfg(7.0)  # KSampler's cfg: not used by the annealing schedule
    out = SamplerCustomAdvanced().sample(Noise_EmptyNoise(), guider, comfy.samplers.sampler_object("euler_cfg_pp"),
                                         sigmas, {"samples": x_start.float()})[0]["samples"]
    record = history_of(guider).last
    w = torch.tensor([[record.weight[s][b] for s in range(len(sigmas) - 1)] for b in range(len(samples))])
    return out.double(), w.double(), tiny_models.counter(model).evaluations()


@pytest.mark.parametrize("via", ["guider", "patch"])
@pytest.mark.parametrize("sample", [0, 1, 2])
def test_replay_reproduces_the_official_trajectory(via, sample):
    lam = float(PARITY["traj.lambda"][sample])
    z_final, w, _ = replay([sample], lam, via)
    assert (w[0] - PARITY["traj.w"][sample]).abs().max().item() <= 1e-5
    assert (z_final[0] - PARITY["traj.z_final"][sample]).abs().max().item() <= 1e-3


def test_a_batch_gives_each_sample_its_own_scale_and_its_solo_result():
    batch, w_batch, (cond_evals, uncond_evals) = replay([0, 1, 2], 0.4, "guider")
    assert cond_evals == uncond_evals == 3 * 50  # the extra cost is the network alone: CFG's evaluations
    for b in range(3):
        solo, w_solo, _ = replay([b], 0.4, "guider")
        assert (w_batch[b] - w_solo[0]).abs().max().item() <= 1e-6
        assert (batch[b] - solo[0]).abs().max().item() <= 1e-5


def test_state_is_per_run():
    model = tiny_models.build_pattern_model(PARITY["traj.pattern_cond"][:1], PARITY["traj.pattern_uncond"][:1])
    guider = AnnealingGuidanceGuider().get_guider(model, tiny_models.build_conditioning(1),
                                                  tiny_models.build_conditioning(2), SCHEDULER, **{"lambda": 0.4})[0]
    sigmas = replay_sigmas()
    latent = {"samples": PARITY["traj.z_start"][:1].float()}
    sample = comfy.samplers.sampler_object("euler_cfg_pp")
    first = SamplerCustomAdvanced().sample(Noise_EmptyNoise(), guider, sample, sigmas, latent)[0]["samples"]
    w_first = dict(history_of(guider).last.weight)
    second = SamplerCustomAdvanced().sample(Noise_EmptyNoise(), guider, sample, sigmas, latent)[0]["samples"]
    assert torch.equal(first, second) and history_of(guider).last.weight == w_first


def ksample(model, sampler, batch=1, channels=4):
    latent = {"samples": torch.zeros(batch, channels, 8, 8)}
    return comfy_nodes.KSampler().sample(model, 1, 6, 7.0, sampler, "karras", tiny_models.build_conditioning(1),
                                         tiny_models.build_conditioning(2), latent, 1.0)[0]["samples"]


def test_a_sampler_without_cfgpp_renoising_is_refused():
    model = AnnealingGuidancePatch().patch(tiny_models.build_model("eps"), SCHEDULER, **{"lambda": 0.4})[0]
    with pytest.raises(ValueError, match=r"CFG\+\+.*Use euler_cfg_pp.*got euler"):
        ksample(model, "euler")
    ksample(model, "euler_cfg_pp")
    ksample(model, "dpmpp_2m_cfg_pp")


@pytest.mark.parametrize("sampler", [s for s in comfy.samplers.KSampler.SAMPLERS if s.endswith("_cfg_pp")])
def test_every_cfgpp_sampler_runs_with_cfgs_evaluations_and_per_step_scales(sampler):
    base = tiny_models.build_model("eps")
    ksample(base, sampler, batch=2)
    stock_counts = tiny_models.counter(base).evaluations()
    model = AnnealingGuidancePatch().patch(base, SCHEDULER, **{"lambda": 0.4})[0]
    tiny_models.counter(base).reset()
    out = ksample(model, sampler, batch=2)
    assert torch.isfinite(out).all() and tiny_models.counter(base).evaluations() == stock_counts
    record = history_of(model).last
    assert sorted(record.weight) == list(range(6)) and all(record.guided[s] == [True, True] for s in range(6))
    assert len({round(record.weight[s][0], 6) for s in range(6)}) > 1  # the network picks a scale per step


@pytest.mark.parametrize("model_type,message", [
    ("flow", "trained for sdxl \\(eps prediction\\).*this model is a flow model"),
    ("v_prediction", "this model is a v model"),
])
def test_a_model_the_network_was_not_trained_for_is_refused(model_type, message):
    model = AnnealingGuidancePatch().patch(tiny_models.build_model(model_type), SCHEDULER, **{"lambda": 0.4})[0]
    with pytest.raises(ValueError, match=message):
        ksample(model, "euler_cfg_pp")


def test_bad_lambda_and_missing_file_are_refused_by_name():
    model = tiny_models.build_model("eps")
    with pytest.raises(ValueError, match=r"lambda must be a number in \[0, 1\]"):
        AnnealingGuidancePatch().patch(model, SCHEDULER, **{"lambda": 1.5})
    with pytest.raises(ValueError, match="scheduler: no file named 'nope.safetensors'"):
        AnnealingGuidancePatch().patch(model, "nope.safetensors", **{"lambda": 0.4})


def test_the_combo_lists_new_files_without_a_restart(scheduler_folder):
    assert SCHEDULER in AnnealingGuidanceGuider.INPUT_TYPES()["required"]["scheduler"][0]
    convert_official_checkpoint(str(reference.CHECKPOINT), str(scheduler_folder / "added_later.safetensors"))
    assert "added_later.safetensors" in AnnealingGuidancePatch.INPUT_TYPES()["required"]["scheduler"][0]


def test_the_plot_node_draws_the_chosen_scales():
    model = AnnealingGuidancePatch().patch(tiny_models.build_model("eps"), SCHEDULER, **{"lambda": 0.4})[0]
    with pytest.raises(ValueError, match="has not sampled yet"):
        GuidanceSchedulePlot().plot({"samples": None}, model=model)
    samples = ksample(model, "euler_cfg_pp", batch=2)
    image = GuidanceSchedulePlot().plot({"samples": samples}, model=model)[0]
    assert image.shape == (1, 450, 800, 3) and 0 <= image.min() and image.max() <= 1
    assert (image < 0.9).any()  # something was drawn
    with pytest.raises(ValueError, match="connect 'model' or 'guider'"):
        GuidanceSchedulePlot().plot({"samples": samples}, model=tiny_models.build_model("eps"))


def test_the_plot_shows_the_run_that_made_its_samples_or_says_what_is_wired_wrong():
    base = tiny_models.build_model("eps")
    model = AnnealingGuidancePatch().patch(base, SCHEDULER, **{"lambda": 0.4})[0]
    first = ksample(model, "euler_cfg_pp", batch=1)
    GuidanceSchedulePlot().plot({"samples": first}, model=model)
    # the same prompt queued again with the KSampler wired to the unpatched model: its samples are not this model's
    unpatched = ksample(base, "euler_cfg_pp", batch=1)
    with pytest.raises(ValueError, match="'samples' was not made with the model connected here"):
        GuidanceSchedulePlot().plot({"samples": unpatched}, model=model)
    # two runs of the same model: each LATENT gets its own run's plot
    second = ksample(model, "dpmpp_2m_cfg_pp", batch=1)
    one = GuidanceSchedulePlot().plot({"samples": first}, model=model)[0]
    two = GuidanceSchedulePlot().plot({"samples": second}, model=model)[0]
    assert not torch.equal(one, two)
    assert torch.equal(one, GuidanceSchedulePlot().plot({"samples": first}, model=model)[0])


@pytest.mark.parametrize("lo,hi,ticks", [
    (0.49, 0.99, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),  # the trade-off plot's adherence axis
    (1.0, 3.0, [1.0, 1.5, 2.0, 2.5, 3.0]),  # an AG / interval plot at w = 3
    (0.7, 1.3, [0.6, 0.8, 1.0, 1.2, 1.4]),  # annealing's CFG++ scales: span / 5 = 0.12, so steps of 0.2
])
def test_plot_ticks_are_round_and_cover_the_data(lo, hi, ticks):
    from guidance_schedules.nodes.plot import nice_ticks
    assert nice_ticks(lo, hi) == pytest.approx(ticks)


def test_the_cfgpp_samplers_are_named_by_their_functions():
    """CFG++ samplers are a kept list of ComfyUI's k-diffusion functions, not a name pattern: newer ComfyUI's
    cfgpp_ud10_ab has no _cfg_pp suffix, and a suffix alone is not enough. Only Euler CFG++ takes the
    reference's step on flow models."""
    import comfy.k_diffusion.sampling
    from guidance_schedules.nodes.host_facts import CFGPP_SAMPLERS, renoises_with_uncond, takes_flow_step
    assert renoises_with_uncond("sample_dpmpp_2m_cfg_pp") and renoises_with_uncond("sample_cfgpp_ud10_ab")
    assert not renoises_with_uncond("sample_euler") and not renoises_with_uncond("sample_my_sampler_cfg_pp")
    assert takes_flow_step("sample_euler_cfg_pp") and not takes_flow_step("sample_dpmpp_2m_cfg_pp")
    # every k-diffusion function of this host named as CFG++ is on the list
    hosts = {name for name in dir(comfy.k_diffusion.sampling) if name.startswith("sample_") and "cfg_pp" in name}
    assert hosts <= CFGPP_SAMPLERS, sorted(hosts - CFGPP_SAMPLERS)
