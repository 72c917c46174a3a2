"""Nothing full-size leaves the device while sampling, and the host waits for it no more often than stock CFG.

On a GPU, reading a tensor on the host (float(t), bool(t), .item(), .tolist(), .numpy(), .cpu()) makes the
host wait for the device, and copying a whole prediction costs time that grows with the latent. On the CPU
the same reads are observed: a TorchDispatchMode sees the scalar reads (aten._local_scalar_dense) and the
copies to the CPU (aten._to_copy / copy_ to device cpu); .tolist() and .numpy() are not dispatched, so they
are counted where they are called. Stock ComfyUI's own reads during the same run are the baseline: a method
may add, per step, at most one small read (a few numbers per sample: AG's similarity, annealing's norm), and
a run one bool (the check of its rehearsal), and nothing larger than the batch.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import comfy.patcher_extension
import nodes as comfy_nodes
import tiny_models
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

STEPS, BATCH = 12, 2
PER_RUN = 1  # the one bool a run reads at its end
A_FEW = 4  # numbers per sample that a small read may hold (AG reads 3: the norms its similarity is made of)


class HostReads(TorchDispatchMode):
    """Counts, while active, the reads of tensor values on the host: (small, large) by whether more than a few
    numbers per sample are read."""

    def __init__(self, batch):
        super().__init__()
        self.batch, self.small, self.large = batch, 0, 0
        self.active = True
        self._tolist, self._numpy = torch.Tensor.tolist, torch.Tensor.numpy

    def count(self, numel):
        if not self.active:
            return
        if numel > A_FEW * self.batch:
            self.large += 1
        else:
            self.small += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count(1)
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            target = kwargs.get("device") if func is torch.ops.aten._to_copy.default else args[0].device
            if target is not None and torch.device(target).type == "cpu":
                self.count(args[-1 if func is torch.ops.aten.copy_.default else 0].numel())
        return func(*args, **kwargs)

    def __enter__(self):
        reads = self

        def tolist(t):
            reads.count(t.numel())
            return reads._tolist(t)

        def numpy(t, *a, **k):
            reads.count(t.numel())
            return reads._numpy(t, *a, **k)
        torch.Tensor.tolist, torch.Tensor.numpy = tolist, numpy
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist, torch.Tensor.numpy = self._tolist, self._numpy
        return super().__exit__(*exc)


def reads_while_sampling(model, sampler="euler", cfg=5.0):
    """(small, large) host reads of one KSampler run, counted from its first model evaluation to the end of
    its sampling (the steps, and what a run does once it is over; not the preparation of the run, when the
    device has nothing queued to wait for)."""
    reads = HostReads(BATCH)
    reads.active = False
    counting = {}

    def count_the_run(executor, *args, **kwargs):
        with reads:
            return executor(*args, **kwargs)

    def from_the_first_evaluation(executor, *args, **kwargs):
        reads.active = counting["on"] = True
        return executor(*args, **kwargs)
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "reads", count_the_run)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "reads", from_the_first_evaluation)
    comfy_nodes.KSampler().sample(m, 7, STEPS, cfg, sampler, "karras", tiny_models.build_conditioning(1),
                                  tiny_models.build_conditioning(2),
                                  {"samples": torch.zeros(BATCH, tiny_models.CHANNELS, 8, 8)}, 1.0)
    assert counting.get("on")
    return reads.small, reads.large


@pytest.fixture(scope="module")
def model():
    return tiny_models.build_model("eps")


def test_the_counter_sees_what_a_gpu_would_wait_for():
    reads = HostReads(2)
    t = torch.randn(2, 4, 8, 8)
    with reads:
        float(t[0, 0, 0, 0])
        t.flatten(1).norm(dim=1).tolist()
        t.to("cpu", torch.float64)
        t.tolist()
    assert (reads.small, reads.large) == (2, 2)  # the element and the norms; the copy and the latent


@pytest.mark.parametrize("method, per_step", [("interval", 0), ("adaptive", 1)])
def test_a_method_reads_a_few_numbers_a_step_and_copies_nothing_larger(model, method, per_step):
    stock = reads_while_sampling(model)
    if method == "interval":
        patched = GuidanceIntervalPatch().patch(model, sigma_hi=1000.0, sigma_lo=0.0)[0]
    else:  # never stops: every step reads its similarity
        patched = AdaptiveGuidancePatch().patch(model, 2.0)[0]
    small, large = reads_while_sampling(patched)
    assert large <= stock[1], f"{method} copied {large - stock[1]} tensors larger than the batch to the host"
    assert small <= stock[0] + per_step * STEPS + PER_RUN, (method, small, stock)


def test_annealing_reads_a_few_numbers_a_step(model, scheduler_folder):
    from guidance_schedules.nodes.annealing import AnnealingGuidancePatch
    from guidance_schedules.samplers import annealing
    torch.manual_seed(0)
    network = annealing.AnnealingNetwork(annealing.NetworkConfig())
    annealing.save_scheduler(annealing.AnnealingScheduler(network, annealing.TrainedFor()),
                             str(scheduler_folder / "reads.safetensors"))
    patched = AnnealingGuidancePatch().patch(model, "reads.safetensors", **{"lambda": 0.4})[0]
    stock = reads_while_sampling(model, "euler_cfg_pp", cfg=1.0)
    small, large = reads_while_sampling(patched, "euler_cfg_pp", cfg=1.0)
    assert large <= stock[1]
    assert small <= stock[0] + STEPS + PER_RUN, (small, stock)
