"""The annealing scheduler network, its files and its schedule, without ComfyUI."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import reference
from guidance_schedules.samplers.annealing import (FORMAT, AnnealingSchedule, NetworkConfig, check_lambda,
                                                   convert_official_checkpoint, load_scheduler)
from guidance_schedules.samplers.files import FileRefused
from guidance_schedules.samplers.schedule import Evaluation, RunInfo

PARITY = reference.require_reference()


def network_w(scheduler, t, eps_cond, eps_uncond, lam):
    net = scheduler.cpu_float64_network()
    return net(t, (eps_uncond - eps_cond).flatten(1).norm(dim=1), lam)


def test_official_network_reproduces_the_reference_scales():
    scheduler = load_scheduler(str(reference.CHECKPOINT))
    w = network_w(scheduler, PARITY["mlp.t"], PARITY["mlp.eps_cond"], PARITY["mlp.eps_uncond"], PARITY["mlp.lambda"])
    assert (w - PARITY["mlp.w"]).abs().max().item() <= 1e-6


def test_the_schedule_computes_delta_from_denoised_predictions(tmp_path):
    # In ComfyUI's sampler space D = x - sigma * eps, so (D_c - D_u) / sigma = eps_u - eps_c.
    scheduler = load_scheduler(str(reference.CHECKPOINT))
    schedule = AnnealingSchedule(RunInfo(sigmas=(14.6, 0.0), sampler="sample_euler_cfg_pp", renoises_with_uncond=True,
                                       takes_flow_step=True), scheduler, 0.4)
    sigma, x = 3.0, torch.randn(64, 4, 16, 16, dtype=torch.float64)
    cond, uncond = x - sigma * PARITY["mlp.eps_cond"], x - sigma * PARITY["mlp.eps_uncond"]
    for i in range(0, 64, 16):
        ev = Evaluation(step=0, first_of_step=True, sigma=sigma, batch_size=1, cond_scale=1.0,
                        model_timestep=float(PARITY["mlp.t"][i]))
        schedule.lam = float(PARITY["mlp.lambda"][i])
        w = schedule.guide(ev, cond[i:i + 1], uncond[i:i + 1], (True,)).weight
        assert abs(float(w[0]) - float(PARITY["mlp.w"][i])) <= 1e-6


def test_converter_writes_the_packs_format_with_metadata(tmp_path):
    out = tmp_path / "annealing_sdxl.safetensors"
    convert_official_checkpoint(str(reference.CHECKPOINT), str(out))
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT
    assert json.loads(meta["network"])["hidden_size"] == 128
    trained = json.loads(meta["trained_for"])
    assert (trained["model_family"], trained["prediction"], trained["latent_channels"], trained["timesteps"]) == \
        ("sdxl", "eps", 4, "discrete_1000")
    converted = load_scheduler(str(out))
    w = network_w(converted, PARITY["mlp.t"], PARITY["mlp.eps_cond"], PARITY["mlp.eps_uncond"], PARITY["mlp.lambda"])
    assert (w - PARITY["mlp.w"]).abs().max().item() <= 1e-6


def test_converter_never_overwrites(tmp_path):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"a user's file")
    with pytest.raises(FileExistsError, match="exists"):
        convert_official_checkpoint(str(reference.CHECKPOINT), str(out))
    assert out.read_bytes() == b"a user's file"


@pytest.fixture
def converted(tmp_path):
    out = tmp_path / "ok.safetensors"
    convert_official_checkpoint(str(reference.CHECKPOINT), str(out))
    return out


def test_truncated_file_gets_a_clear_error(tmp_path, converted):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(converted.read_bytes()[:5000])
    with pytest.raises(FileRefused, match="truncated.safetensors is not a readable safetensors file"):
        load_scheduler(str(bad))


def test_wrong_shapes_get_a_clear_error(tmp_path, converted):
    with safe_open(str(converted), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state["combined_head.2.weight"] = torch.zeros(64, 128)
    bad = tmp_path / "shapes.safetensors"
    save_file(state, str(bad), metadata=meta)
    with pytest.raises(FileRefused, match=r"combined_head.2.weight has shape \(64, 128\).*needs \(128, 128\)"):
        load_scheduler(str(bad))


def test_other_safetensors_files_are_refused(tmp_path):
    other = tmp_path / "lora.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(FileRefused, match="not an annealing scheduler file"):
        load_scheduler(str(other))


def test_corrupt_or_unsafe_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(FileRefused, match="not a plain weights checkpoint.*refused") as refused:
        load_scheduler(str(junk))
    assert "weights_only" not in str(refused.value)  # never torch's advice to load it unsafely

    class Evil:
        def __reduce__(self):
            return (print, ("arbitrary code",))
    evil = tmp_path / "evil.pt"
    torch.save({"guidance_scale_model": Evil()}, str(evil))
    with pytest.raises(FileRefused, match="not a plain weights checkpoint.*refused") as refused:
        load_scheduler(str(evil))
    assert "weights_only" not in str(refused.value)
    with pytest.raises(FileRefused, match="not found"):
        load_scheduler(str(tmp_path / "missing.safetensors"))


def test_models_it_was_not_trained_for_are_refused():
    scheduler = load_scheduler(str(reference.CHECKPOINT))
    scheduler.check_compatible("eps", 4, "discrete_1000")
    with pytest.raises(ValueError, match="trained for sdxl .*this model is a flow model"):
        scheduler.check_compatible("flow", 16, "continuous")
    with pytest.raises(ValueError, match="latents with 4 channels; this latent has 16"):
        scheduler.check_compatible("eps", 16, "discrete_1000")
    with pytest.raises(ValueError, match="expects discrete_1000 timesteps"):
        scheduler.check_compatible("eps", 4, "continuous")
    # an SD1.5 model has SDXL's prediction, channels and timesteps, but not its scales
    with pytest.raises(ValueError, match="trained for sdxl models; this model is sd15.*Train Annealing Network"):
        scheduler.check_compatible("eps", 4, "discrete_1000", "sd15")
    scheduler.check_compatible("eps", 4, "discrete_1000", "sdxl")  # ComfyUI's SDXL config: SDXL and its fine-tunes
    scheduler.check_compatible("eps", 4, "discrete_1000", "")  # a family ComfyUI did not recognise: not compared


def test_on_flow_models_only_the_references_step_is_taken():
    scheduler = load_scheduler(str(reference.CHECKPOINT))
    run = RunInfo(sigmas=(1.0, 0.5, 0.0), sigma_space="flow", prediction="flow", timesteps="continuous",
                  sampler="sample_dpmpp_2m_cfg_pp", renoises_with_uncond=True)  # a CFG++ sampler with another step
    with pytest.raises(ValueError, match="flow model annealing guidance takes the reference's step.*got dpmpp_2m_cfg_pp"):
        AnnealingSchedule(run, scheduler, 0.4)


def test_samplers_that_do_not_renoise_with_the_uncond_are_refused():
    """Which of ComfyUI's samplers re-noise with the unconditional prediction is the glue's knowledge
    (nodes/host_facts.py, tested in tests/host/test_host_annealing.py); the schedule is told."""
    scheduler = load_scheduler(str(reference.CHECKPOINT))
    with pytest.raises(ValueError, match="CFG\\+\\+.*got euler"):
        AnnealingSchedule(RunInfo(sigmas=(1.0, 0.0), sampler="sample_euler"), scheduler, 0.4)
    AnnealingSchedule(RunInfo(sigmas=(1.0, 0.0), sampler="sample_dpmpp_2m_cfg_pp", renoises_with_uncond=True),
                      scheduler, 0.4)
    with pytest.raises(ValueError, match="CFG\\+\\+.*got my_sampler_cfg_pp"):
        AnnealingSchedule(RunInfo(sigmas=(1.0, 0.0), sampler="sample_my_sampler_cfg_pp"), scheduler, 0.4)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_lambda_out_of_range_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"lambda must be a number in \[0, 1\]"):
        check_lambda(bad)


def test_network_config_shapes():
    shapes = NetworkConfig().expected_shapes()
    assert shapes["combined_head.0.weight"] == (128, 12) and shapes["combined_head.8.weight"] == (1, 128)


def rewritten(converted, tmp_path, name, **changes):
    """The converted official file with metadata fields replaced: {"network.w_scale": value, ...}."""
    with safe_open(str(converted), framework="pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    for dotted, value in changes.items():
        key, field = dotted.split(".", 1) if "." in dotted else (dotted, None)
        if field is None:
            meta[key] = value
        else:
            obj = json.loads(meta[key])
            obj[field] = value
            meta[key] = json.dumps(obj)
    out = tmp_path / name
    save_file(state, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("changes,message", [
    ({"network.w_scale": float("inf")}, r"network.w_scale must be a finite number, got inf"),
    ({"network.w_bias": float("nan")}, r"network.w_bias must be a finite number"),
    ({"network.delta_embed_normalization": 0}, r"network.delta_embed_normalization must be a finite number other than 0"),
    ({"network.n_layers": 1e6}, r"network.n_layers must be a whole number from 1 to 64, got 1000000.0"),
    ({"network.hidden_size": "128"}, r"network.hidden_size must be a whole number"),
    ({"network": "[1, 2]"}, r"the network configuration must be a JSON object, got \[1, 2\]"),
    ({"network": "null"}, r"the network configuration must be a JSON object, got None"),
    ({"network": "{not json"}, r"the metadata is not valid JSON"),
    ({"trained_for": "[]"}, r"trained_for must be a JSON object"),
    ({"trained_for.latent_channels": "4"}, r"trained_for.latent_channels must be a whole number"),
    ({"format_version": "2"}, r"has format_version '2'; this version of the pack reads 1"),
])
def test_bad_metadata_is_refused_by_file_and_field_before_anything_is_allocated(tmp_path, changes, message):
    converted = tmp_path / "ok.safetensors"
    convert_official_checkpoint(str(reference.CHECKPOINT), str(converted))
    bad = rewritten(converted, tmp_path, "bad.safetensors", **changes)
    with pytest.raises(FileRefused, match=message) as refused:
        load_scheduler(str(bad))
    assert str(refused.value).startswith("bad.safetensors") and len(str(refused.value)) < 300


def test_the_sampling_path_of_the_network_is_its_float64_forward():
    """AnnealingScheduler.scales (numpy, what sampling asks every step) against the torch network in float64."""
    torch.manual_seed(3)
    from guidance_schedules.samplers.annealing import AnnealingNetwork, AnnealingScheduler, TrainedFor
    scheduler = AnnealingScheduler(AnnealingNetwork(NetworkConfig(t_embed_dim=3, delta_embed_dim=5, w_scale=0.7,
                                                                  w_bias=0.9)), TrainedFor())
    t, deltas, lam = 613.0, [0.05, 3.7, 41.0], 0.3
    expected = scheduler.cpu_float64_network()(torch.full((3,), t, dtype=torch.float64),
                                               torch.tensor(deltas, dtype=torch.float64),
                                               torch.full((3,), lam, dtype=torch.float64))
    assert torch.allclose(torch.tensor(scheduler.scales(t, deltas, lam), dtype=torch.float64), expected,
                          rtol=0, atol=1e-12)


def test_the_guidance_norm_in_float32_moves_the_scale_by_less_than_the_parity_tolerance():
    """Where a device has no float64 (Apple's MPS) the norm is taken in float32."""
    from guidance_schedules.samplers import annealing
    scheduler = load_scheduler(str(reference.CHECKPOINT))
    cond, uncond = PARITY["mlp.eps_cond"].float(), PARITY["mlp.eps_uncond"].float()
    in64 = annealing.guidance_norm(cond, uncond)
    in32 = annealing.guidance_norm(cond, uncond, dtype=torch.float32)
    for i in range(0, len(in64), 8):
        t, lam = float(PARITY["mlp.t"][i]), float(PARITY["mlp.lambda"][i])
        assert abs(scheduler.scales(t, [in64[i]], lam)[0] - scheduler.scales(t, [in32[i]], lam)[0]) <= 3.1e-5


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.bfloat16, torch.int32])
def test_a_network_saved_in_another_dtype_is_read_or_refused_naming_it(tmp_path, dtype):
    """float8 weights (F8_E4M3) are read as float32 (torch has no isfinite for float8); integers are refused by
    file and dtype."""
    from guidance_schedules.samplers.annealing import AnnealingNetwork, AnnealingScheduler, TrainedFor, save_scheduler
    plain = tmp_path / "plain.safetensors"
    save_scheduler(AnnealingScheduler(AnnealingNetwork(NetworkConfig()), TrainedFor()), str(plain))
    with safe_open(str(plain), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k).to(dtype) for k in f.keys()}
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata=meta)
    if dtype == torch.int32:
        with pytest.raises(FileRefused, match="other.safetensors: combined_head.0.weight is of dtype int32"):
            load_scheduler(str(other))
        return
    loaded = load_scheduler(str(other))
    assert torch.equal(loaded.network.combined_head[0].weight, tensors["combined_head.0.weight"].to(torch.float32))
