"""Training annealing guidance networks inside a real ComfyUI (nodes/annealing_train.py), and guiding flow
models with them.

- Parity: the reference's 4 training steps (../shared/reference/annealing_training/), its toy denoiser
  wrapped as a ComfyUI model of the right type, through the node's own path (CFGGuider preparation,
  calc_cond_batch, the training loss): the same losses and gradients.
- The node: writes a usable file, never overwrites, resumes an interrupted training to the same result.
- Flow sampling: ComfyUI's euler_cfg_pp step on a flow model is the reference's re-noising step, checked
  from the recorded predictions and states of a real run.
"""
import json

from comfy_server import cached_nodes

import pytest
import reference
import torch
from safetensors.torch import load_file

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import comfy.supported_models_base
import nodes as comfy_nodes
import tiny_models
from guidance_schedules.nodes.annealing import AnnealingGuidancePatch
from guidance_schedules.nodes.annealing_train import AnnealingGuidanceTrain, run_example
from guidance_schedules.nodes.guidance import history_of
from guidance_schedules.samplers.annealing import AnnealingNetwork, NetworkConfig, load_scheduler
from guidance_schedules.samplers.annealing_training import Example, Grid, Trainer, TrainingSettings
from guidance_schedules.samplers.spaces import EDM_SIGMA, FLOW

EPS = "eps"  # the reference's EPS model (its vectors' prefix); trained in EDM sigmas
SPACE = {EPS: EDM_SIGMA, FLOW: FLOW}


def one_example_trainer(network, space):
    """A Trainer for one given example per batch (`add`) and the batch's loss and gradient (`batch_gradient`): the
    path the node trains through. Its grid only bounds draws, which these tests do not make."""
    return Trainer(network, Grid((2.0, 1.0), (2.0, 1.0)), space, TrainingSettings(batch_size=1, gradient_accumulation=1),
                   dataset_size=1)

TOLERANCE = {EPS: 1e-6, FLOW: 1e-4}  # relative, the reference README's
# ComfyUI's BaseModel._apply_model hands on model_output.float(): through a ComfyUI model the EPS toy's float64
# outputs are rounded to float32, and the delta term (a difference of two close predictions) carries that
# rounding into the gradients. The pure path meets 1e-6 (tests/test_annealing_training.py, which also shows that
# rounding the toy's outputs to float32 alone gives gradient errors of this size); here the EPS gradients are
# held to 3e-5 and the losses to the README's 1e-6.
GRADIENT_TOLERANCE = {EPS: 3e-5, FLOW: 1e-4}


@pytest.fixture(scope="module")
def parity():
    return reference.require_training_reference()


pytestmark = pytest.mark.usefixtures("scheduler_folder")  # every test writes into a fresh folder (conftest.py)


# --- parity through a ComfyUI model ----------------------------------------------------------------

class ToyNetwork(torch.nn.Module):
    """The reference's toy denoiser as a diffusion model: out = tanh(0.9 z + 0.6 pattern t / 1000), the
    pattern carried in the conditioning (one token of 256 values: 4 x 8 x 8)."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x, timesteps, context=None, **kwargs):
        pattern = context[:, 0, :].reshape(x.shape).to(x.dtype)
        return torch.tanh(0.9 * x + 0.6 * pattern * timesteps.to(x.dtype).view(-1, 1, 1, 1) / 1000)


def toy_comfy_model(kind, dtype):
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.LatentFormat()  # scale 1: the latents are the model's
    config.latent_format.latent_channels = 4
    if kind == FLOW:
        config.sampling_settings = {"shift": 3.0, "multiplier": 1000}  # SD3's, as the reference's grid
    model_type = comfy.model_base.ModelType.FLOW if kind == FLOW else comfy.model_base.ModelType.EPS
    base = comfy.model_base.BaseModel(config, model_type=model_type, device=torch.device("cpu"))
    base.diffusion_model = ToyNetwork(dtype)
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def conditioning(pattern):
    return [[pattern.reshape(1, 1, 256).double(), {}]]


@pytest.mark.parametrize("init", ["official", "random"])
@pytest.mark.parametrize("kind", [EPS, FLOW])
def test_the_nodes_path_gives_the_references_losses_and_gradients(parity, kind, init):
    dtype = torch.float64 if kind == EPS else torch.float32
    prefix = f"{kind}.{init}."
    network = AnnealingNetwork(NetworkConfig())
    network.load_state_dict({k[len(prefix + "param."):]: v for k, v in parity.items() if k.startswith(prefix + "param.")})
    network = network.to(dtype)
    model = toy_comfy_model(kind, dtype)
    model_sampling = model.get_model_object("model_sampling")
    grid = [float(t) for t in parity[prefix + "grid"]]
    trainer = one_example_trainer(network, SPACE[kind])  # its loss balance carried from step to step
    worst = {"loss": 0.0, "gradient": 0.0}
    for step in range(4):
        def tensor(name):
            return parity[prefix + name][step].to(dtype).reshape(1, 4, 8, 8)
        t = float(parity[prefix + "timestep"][step])
        t_next = grid[grid.index(t) + 1]
        # the model's own sigma of each timestep: EPS from its DDPM schedule, flow t / 1000
        sigma = (lambda u: float(model_sampling.sigma(torch.tensor(u)))) if kind == EPS else (lambda u: u / 1000)
        found = {}

        def work(denoise, x0):
            example = Example(x0.to(dtype), tensor("noise"), torch.tensor([sigma(t)], dtype=torch.float64),
                              torch.tensor([sigma(t_next)], dtype=torch.float64), torch.tensor([t], dtype=torch.float64),
                              torch.tensor([float(parity[prefix + "lambda"][step])], dtype=torch.float64))
            trainer.add(denoise, example)
            found["loss"], found["gradient"] = trainer.batch_gradient()
        with torch.inference_mode(False):
            run_example(model, conditioning(tensor("pattern_cond")), conditioning(tensor("pattern_uncond")),
                        tensor("x0"), torch.tensor([sigma(t), sigma(t_next), 0.0]), work)
        reference = float(parity[prefix + "loss"][step])
        worst["loss"] = max(worst["loss"], abs(found["loss"] - reference) / abs(reference))
        for (name, _), g in zip(network.named_parameters(), found["gradient"]):
            expected = parity[f"{prefix}grad.{name}"][step].double()
            worst["gradient"] = max(worst["gradient"], float((g.double() - expected).norm() / expected.norm()))
    print(kind, init, worst)
    assert worst["loss"] <= TOLERANCE[kind], worst
    assert worst["gradient"] <= GRADIENT_TOLERANCE[kind], worst


# --- the node --------------------------------------------------------------------------------------

def latents(count=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(count, tiny_models.CHANNELS, 8, 8, generator=g)}


def train_inputs(model_type="eps", name="tiny", **overrides):
    inputs = dict(model=tiny_models.build_model(model_type), latents=latents(), positive=tiny_models.build_conditioning(1),
                  negative=tiny_models.build_conditioning(2), steps=10, scheduler="auto", training_images=12,
                  batch_size=2, gradient_accumulation=2, learning_rate=1e-3, weight_decay=0.01, seed=7,
                  delta_normalization=5.0, prompt_noise=True, name=name)
    inputs.update(overrides)
    return {k: [v] for k, v in inputs.items()}  # INPUT_IS_LIST: every input arrives as a list


def run_node(**inputs):
    with torch.inference_mode():  # as ComfyUI runs every node
        return AnnealingGuidanceTrain().train(**inputs)


@pytest.mark.parametrize("model_type", ["eps", "flow"])
def test_the_node_writes_a_network_for_its_model_that_the_annealing_nodes_use(model_type, scheduler_folder):
    out = run_node(**train_inputs(model_type, name=f"tiny_{model_type}"))
    name, loss_map = out["result"]
    assert name == f"tiny_{model_type}.safetensors" and len(loss_map["loss"]) == 6  # 12 images in batches of 2
    assert all(torch.isfinite(torch.tensor(loss_map["loss"])))
    scheduler = load_scheduler(str(scheduler_folder / name))
    expected_prediction = "flow" if model_type == "flow" else "eps"
    assert scheduler.trained_for.prediction == expected_prediction and scheduler.trained_for.latent_channels == 4
    assert not list(scheduler_folder.glob("*.resume"))  # the checkpoint goes once the network is written
    # the file guides its own kind of model, with the schedule's per-step scales
    model = AnnealingGuidancePatch().patch(tiny_models.build_model(model_type), name, **{"lambda": 0.5})[0]
    comfy_nodes.KSampler().sample(model, 1, 6, 7.0, "euler_cfg_pp", "simple" if model_type == "flow" else "karras",
                                  tiny_models.build_conditioning(1), tiny_models.build_conditioning(2),
                                  {"samples": torch.zeros(1, 4, 8, 8)}, 1.0)
    assert sorted(history_of(model).last.weight) == list(range(6))
    # and is refused, with the reason, on the other kind
    other = "eps" if model_type == "flow" else "flow"
    model = AnnealingGuidancePatch().patch(tiny_models.build_model(other), name, **{"lambda": 0.5})[0]
    with pytest.raises(ValueError, match=f"trained for .*{expected_prediction} prediction.*this model is a"):
        comfy_nodes.KSampler().sample(model, 1, 6, 7.0, "euler_cfg_pp", "karras", tiny_models.build_conditioning(1),
                                      tiny_models.build_conditioning(2), {"samples": torch.zeros(1, 4, 8, 8)}, 1.0)


def test_the_model_gets_no_gradient_and_stays_unchanged():
    inputs = train_inputs(name="frozen")
    model = inputs["model"][0]
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    run_node(**inputs)
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.model.parameters())


def test_a_model_loaded_under_inference_mode_trains_and_keeps_its_values(scheduler_folder):
    """ComfyUI runs loader nodes under inference mode: a loaded model's weights are inference tensors, which
    autograd cannot save for the backward pass through the model (a real UNet saves its weights; the tiny
    counting model does not)."""
    with torch.inference_mode():  # as a loader node runs
        model = small_unet()
    assert next(model.model.parameters()).is_inference()
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    run_node(**train_inputs(model=model, latents={"samples": torch.randn(1, 4, 16, 16)}, training_images=2,
                            batch_size=1, gradient_accumulation=1, name="loaded"))
    assert (scheduler_folder / "loaded.safetensors").exists()
    assert all(torch.equal(v, before[k]) for k, v in model.model.state_dict().items())


def test_a_model_with_its_loaders_factory_trains_on_a_fresh_load():
    """ComfyUI 0.33's loaders leave a factory on the model (cached_patcher_init); core training trains on
    clone(force_deepcopy=True), a fresh load made outside inference mode, and so does the pack. Hosts whose
    clone() has no force_deepcopy train on the model itself."""
    import inspect
    loads = []

    def load(seed, disable_dynamic=False):
        loads.append(disable_dynamic)
        return small_unet()
    with torch.inference_mode():
        model = small_unet()
    model.cached_patcher_init = (load, (0,))
    run_node(**train_inputs(model=model, latents={"samples": torch.randn(1, 4, 16, 16)}, training_images=2,
                            batch_size=1, gradient_accumulation=1, name="factory"))
    fresh_load = "force_deepcopy" in inspect.signature(model.clone).parameters
    assert loads == ([True] if fresh_load else [])
    # the user's model is left as the loader made it
    assert next(model.model.parameters()).is_inference() == fresh_load


def test_an_existing_file_is_never_overwritten(scheduler_folder):
    (scheduler_folder / "taken.safetensors").write_bytes(b"a user's file")
    with pytest.raises(ValueError, match="name: .*taken.safetensors exists; choose another name"):
        run_node(**train_inputs(name="taken"))
    assert (scheduler_folder / "taken.safetensors").read_bytes() == b"a user's file"


def test_one_conditioning_per_latent_or_one_for_all():
    inputs = train_inputs(name="captions")
    inputs["positive"] = [tiny_models.build_conditioning(s) for s in (1, 3, 4)]  # one per latent
    run_node(**inputs)
    inputs = train_inputs(name="entries")  # one CONDITIONING, one entry per latent (ComfyUI 0.3's folder loader)
    inputs["positive"] = [[tiny_models.build_conditioning(s)[0] for s in (1, 3, 4)]]
    run_node(**inputs)
    inputs = train_inputs(name="two_captions")
    inputs["positive"] = [tiny_models.build_conditioning(s) for s in (1, 3)]
    with pytest.raises(ValueError, match="positive: give one conditioning for all 3 latents or one per latent; got 2"):
        run_node(**inputs)


def test_an_interrupted_training_resumes_to_the_same_network(scheduler_folder, monkeypatch):
    run_node(**train_inputs(name="straight", training_images=16))
    straight = load_file(str(scheduler_folder / "straight.safetensors"))

    calls = {"n": 0}
    check = comfy.model_management.throw_exception_if_processing_interrupted

    def interrupt_at_the_eleventh_example():
        calls["n"] += 1
        if calls["n"] == 11:  # after 2 optimizer steps (4 images each) and 2 examples of the third
            raise comfy.model_management.InterruptProcessingException()
        check()
    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted",
                        interrupt_at_the_eleventh_example)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node(**train_inputs(name="interrupted", training_images=16))
    assert (scheduler_folder / "interrupted.resume").is_file()
    assert not (scheduler_folder / "interrupted.safetensors").exists()
    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted", check)
    # other settings under the same name are refused, naming them
    with pytest.raises(ValueError, match="checkpoint of a training with other learning_rate"):
        run_node(**train_inputs(name="interrupted", training_images=16, learning_rate=2e-3))
    # queued again as the graph editor would after its seed widget randomized: the training continues with its own
    _, loss_map = run_node(**train_inputs(name="interrupted", training_images=16, seed=12345))["result"]
    resumed = load_file(str(scheduler_folder / "interrupted.safetensors"))
    assert load_scheduler(str(scheduler_folder / "interrupted.safetensors")).network is not None
    from safetensors import safe_open
    with safe_open(str(scheduler_folder / "interrupted.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["training"])["seed"] == 7
    assert not (scheduler_folder / "interrupted.resume").exists()
    assert len(loss_map["loss"]) == 8
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="name: give a file name"):
        run_node(**train_inputs(name="../escape"))
    inputs = train_inputs(name="sizes")
    inputs["latents"] = [latents(), {"samples": torch.zeros(1, 4, 16, 16)}]
    with pytest.raises(ValueError, match="latents: all training latents need one size"):
        run_node(**inputs)
    from guidance_schedules.nodes.interval import GuidanceIntervalPatch
    inputs = train_inputs(name="patched")
    inputs["model"] = [GuidanceIntervalPatch().patch(inputs["model"][0], sigma_lo=0.0, sigma_hi=10.0)[0]]
    with pytest.raises(ValueError, match="model: this model carries a guidance schedule"):
        run_node(**inputs)


# --- flow sampling: the reference's step -----------------------------------------------------------

def test_euler_cfg_pp_on_a_flow_model_is_the_references_renoising_step(scheduler_folder):
    """From a real run's recorded states and predictions: x' = (1 - s') D_guided + s' noise_u with
    noise_u = (x - (1 - s) D_uncond) / s (x0 from the guided prediction, the noise from the unconditional)."""
    run_node(**train_inputs("flow", name="flow_step", training_images=4))
    model = AnnealingGuidancePatch().patch(tiny_models.build_model("flow"), "flow_step.safetensors", **{"lambda": 0.6})[0]
    seen = []

    def record(args):  # the prediction after guidance, as every post-CFG hook sees it
        seen.append((args["input"].clone(), args["sigma"].clone(), args["denoised"].clone(),
                     args["uncond_denoised"].clone()))
        return args["denoised"]
    model.set_model_sampler_post_cfg_function(record)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 6)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(tiny_models.build_conditioning(1), tiny_models.build_conditioning(2))
    guider.set_cfg(7.0)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    out = guider.sample(noise, torch.zeros(1, 4, 8, 8), comfy.samplers.sampler_object("euler_cfg_pp"), sigmas, seed=3)
    # the sampler hands the hooks their own copy of the chain; ours is the one whose record is complete
    states = [s for s in seen if s is not None][-6:]
    assert len(states) == 6
    for i, (x, s, d_g, d_u) in enumerate(states):
        s, s_next = float(s.flatten()[0]), float(sigmas[i + 1])
        assert s == pytest.approx(float(sigmas[i]))
        expected = d_g if s_next == 0 else (1 - s_next) * d_g + s_next * (x - (1 - s) * d_u) / s
        following = states[i + 1][0] if i + 1 < len(states) else model.model.process_latent_in(out)
        assert torch.allclose(following, expected, atol=1e-5, rtol=1e-5), i
    # and that is not what the plain (sigma-space) Euler CFG++ step would give
    x, s, d_g, d_u = states[1]
    s, s_next = float(s.flatten()[0]), float(sigmas[2])
    assert not torch.allclose(states[2][0], d_g + s_next * (x - d_u) / s, atol=1e-4)


def test_a_flow_model_with_another_cfgpp_sampler_is_refused(scheduler_folder):
    run_node(**train_inputs("flow", name="flow_other", training_images=4))
    model = AnnealingGuidancePatch().patch(tiny_models.build_model("flow"), "flow_other.safetensors", **{"lambda": 0.6})[0]
    with pytest.raises(ValueError, match="flow model annealing guidance takes the reference's step.*got dpmpp_2m_cfg_pp"):
        comfy_nodes.KSampler().sample(model, 1, 6, 7.0, "dpmpp_2m_cfg_pp", "simple", tiny_models.build_conditioning(1),
                                      tiny_models.build_conditioning(2), {"samples": torch.zeros(1, 4, 8, 8)}, 1.0)



# --- through the API, as a user queues it -----------------------------------------------------------

def test_train_then_sample_with_the_network_through_the_api(comfy_server):
    train = {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "3": {"class_type": "AnnealingGuidanceTrain", "inputs": {
            "model": ["1", 0], "latents": ["2", 0], "positive": ["1", 1], "negative": ["1", 2], "steps": 10,
            "scheduler": "auto", "training_images": 8, "batch_size": 2, "gradient_accumulation": 2,
            "learning_rate": 1e-3, "weight_decay": 0.01, "seed": 1, "delta_normalization": 5.0, "prompt_noise": True,
            "name": "api_trained"}},
        "4": {"class_type": "LossGraphNode", "inputs": {"loss": ["3", 1], "filename_prefix": "gs_training_loss"}},
    }
    history = comfy_server.run_prompt(train)
    assert history["status"]["status_str"] == "success", history["status"]
    assert history["outputs"]["3"]["text"] == ["wrote api_trained.safetensors"]
    assert history["outputs"]["4"]["images"]  # ComfyUI's loss graph of the 4 batches
    # The result is a file. Queued again right away while the file it wrote is there, the node is answered
    # from ComfyUI's cache (after prompts that reuse its node id, a host's cache may have let it go: then it
    # runs and refuses, as below). Removed right after the run that wrote it, the same prompt trains again
    # (same seed: the same network), whatever the host's cache remembers. Replaced by another file under the
    # name, training refuses to overwrite it, saying so.
    path = comfy_server.base / "models" / "guidance_schedulers" / "api_trained.safetensors"
    written, first_weights = path.read_bytes(), load_file(str(path))
    history = comfy_server.run_prompt(train)
    assert history["status"]["status_str"] == "success", history["status"]
    assert path.read_bytes() == written and "3" in cached_nodes(history)
    path.unlink()
    history = comfy_server.run_prompt(train)
    assert history["status"]["status_str"] == "success", history["status"]
    assert "3" not in cached_nodes(history)
    retrained = load_file(str(path))
    assert all(torch.equal(v, first_weights[k]) for k, v in retrained.items()) and retrained.keys() == first_weights.keys()
    sample = {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "AnnealingGuidancePatch", "inputs": {"model": ["1", 0], "scheduler": "api_trained.safetensors",
                                                                 "lambda": 0.4}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "seed": 1, "steps": 6, "cfg": 7.0, "sampler_name": "euler_cfg_pp", "scheduler": "karras",
            "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["2", 0], "denoise": 1.0}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "gs_trained_sample"}},
    }
    history = comfy_server.run_prompt(sample)
    assert history["status"]["status_str"] == "success", history["status"]
    path.write_bytes(b"a user's own file")
    history = comfy_server.run_prompt(train)
    errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "api_trained.safetensors exists; choose another name" in errors[0]["exception_message"]
    assert path.read_bytes() == b"a user's own file"


# --- gradient checkpointing --------------------------------------------------------------------------

def small_unet():
    """A real ComfyUI UNet (SD1.5's architecture, scaled down), random weights: blocks to checkpoint."""
    import comfy.supported_models
    config = comfy.supported_models.SD15({
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
        "transformer_depth": [1, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1,
        "use_linear_in_transformer": False, "context_dim": tiny_models.CONTEXT_DIM, "num_heads": 4,
        "transformer_depth_output": [1, 1, 1, 1], "use_temporal_attention": False, "use_temporal_resblock": False,
        "dtype": torch.float32})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def test_gradient_checkpointing_gives_the_same_gradients_and_is_undone():
    from guidance_schedules.nodes.annealing_train import checkpointed_blocks
    from guidance_schedules.samplers.annealing_training import Example
    model = small_unet()
    unet = model.model.diffusion_model
    network = AnnealingNetwork(NetworkConfig())
    sigmas = torch.tensor([14.6, 3.0, 0.0])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    ms = model.get_model_object("model_sampling")

    weights = {t.untyped_storage().data_ptr() for t in unet.parameters()}

    def gradients():
        found, saved = {}, {}

        def pack(t):  # what autograd keeps for the backward pass, the weights left out
            if t.untyped_storage().data_ptr() not in weights:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        def work(denoise, latent):
            example = Example(latent, noise, sigmas[:1].double(), sigmas[1:2].double(),
                              ms.timestep(sigmas[:1]).double(), torch.tensor([0.5], dtype=torch.float64))
            trainer = one_example_trainer(network, EDM_SIGMA)
            trainer.add(denoise, example)
            found.update({n: g for (n, _), g in zip(network.named_parameters(), trainer.batch_gradient()[1])})
        with torch.inference_mode(False), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run_example(model, tiny_models.build_conditioning(1), tiny_models.build_conditioning(2), x0, sigmas, work)
        found["kept bytes"] = sum(saved.values())
        return found
    plain = gradients()
    with checkpointed_blocks(unet) as count:
        # the layers the UNet calls one by one in its input and output blocks (and the middle block's transformer
        # blocks): every one of them recomputes in the backward pass
        layers = [layer for block in (*unet.input_blocks, *unet.output_blocks) for layer in block]
        assert count >= len(layers) and all("forward" in vars(layer) for layer in layers)
        checkpointed = gradients()
    assert not any("forward" in vars(b) for b in unet.modules())  # the class's forward again
    # the checkpointed layers' activations are not kept for the backward pass (their inputs are, by the checkpoint)
    assert checkpointed.pop("kept bytes") < 0.5 * plain.pop("kept bytes")
    for name, g in plain.items():
        assert torch.allclose(checkpointed[name], g, rtol=1e-5, atol=1e-8), name
    assert any(g.abs().max() > 0 for g in plain.values())
