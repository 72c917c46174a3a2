"""The schedules on a model compiled by ComfyUI's TorchCompileModel (inductor, on the CPU): skipping the
unconditional pass changes the batch the model is called with (positive and negative, or the positive alone), and
nothing else. So a 30-step run compiles one graph per batch shape the model meets, and never again per step:
no recompilation as sigma or the guided samples change, no warning that the recompile limit was hit.

The batch shapes a run meets are the model's own calls, observed by an APPLY_MODEL wrapper of the test's; the
graphs compiled are torch's own counters. The stand-in model is a small convolutional network with no Python side
effects (the counting stand-ins of the other tests would break the graph)."""
import logging

import pytest
import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_patcher
import comfy.supported_models_base
import nodes as comfy_nodes
import tiny_models
from comfy.patcher_extension import WrappersMP
from comfy_extras.nodes_torch_compile import TorchCompileModel
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

STEPS = 30


class SmallNetwork(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        g = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(tiny_models.CHANNELS, tiny_models.CHANNELS, 3, padding=1)
        self.mix = torch.nn.Parameter(torch.randn(tiny_models.CONTEXT_DIM, tiny_models.CHANNELS, generator=g) / 3,
                                      requires_grad=False)

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        t = (timesteps.float() / 1000.0).view(-1, 1, 1, 1)
        text = (context.mean(dim=1) @ self.mix).view(x.shape[0], tiny_models.CHANNELS, 1, 1)
        return torch.tanh(0.5 * self.conv(x) + 0.9 * x + (0.6 + t) * text)


@pytest.fixture(scope="module")
def compiled():
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.SD15()
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu"))
    base.diffusion_model = SmallNetwork()
    model = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    return TorchCompileModel.execute(model, "inductor").args[0]


def compile_run(model, batch, caplog):
    """(graphs compiled, frames compiled, the batch shapes the model met) for one run from a fresh compile."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    shapes = set()

    def observe(executor, x, *args, **kwargs):  # outside the compiled module: no part of its graph
        shapes.add(x.shape[0])
        return executor(x, *args, **kwargs)
    observed = model.clone()
    observed.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "test_shapes", observe)
    with caplog.at_level(logging.WARNING):
        comfy_nodes.KSampler().sample(observed, 3, STEPS, 5.0, "euler", "karras", tiny_models.build_conditioning(1),
                                      tiny_models.build_conditioning(2),
                                      {"samples": torch.zeros(batch, tiny_models.CHANNELS, 8, 8)}, 1.0)
    return counters["stats"]["unique_graphs"], counters["frames"]["total"], shapes


def no_recompile_warning(caplog):
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "recompile" in m.lower() or "cache_size_limit" in m], said


@pytest.mark.parametrize("method, batch", [("interval", 1), ("adaptive per sample", 4)])
def test_a_compiled_model_compiles_once_per_batch_shape_and_never_per_step(compiled, method, batch, caplog):
    if method == "interval":
        patched = GuidanceIntervalPatch().patch(compiled, sigma_hi=4.0, sigma_lo=0.5)[0]
    else:  # threshold 0.9: the samples stop at different steps, some within the run
        patched = AdaptiveGuidancePatch().patch(compiled, 0.9, "none")[0]
    graphs, frames, shapes = compile_run(patched, batch, caplog)
    assert shapes == {batch, 2 * batch}  # the positive alone on some steps, with the negative on others
    assert 1 <= graphs <= len(shapes) and frames == graphs, (graphs, frames, shapes)
    no_recompile_warning(caplog)
