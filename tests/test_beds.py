"""The test beds' code: the exact GMM denoiser against brute force, and the shipped digits models."""
import pytest
import torch

from benchmarks.beds import gmm


def test_exact_denoiser_matches_a_brute_force_posterior_mean():
    mixture = gmm.default_mixture()
    g = torch.Generator().manual_seed(0)
    near = {0: [[-2.5, 0.3], [0.3, 1.7], [0.0, -1.8]], 1: [[-3.0, 0.5], [-3.4, -0.2], [-2.6, 0.0]],
            None: [[-2.6, 0.2], [0.3, 1.7], [-3.2, -0.5]]}  # points with posterior mass nearby
    for label in (0, 1, None):
        prior = torch.cat([mixture.sample(100_000, c, g) for c in ((label,) if label is not None else (0, 1))])
        for sigma in (0.1, 0.7, 3.0):
            x = torch.tensor(near[label], dtype=torch.float64)
            # E[x0 | x] = sum_i x0_i N(x; x0_i, sigma^2) / sum_i N(x; x0_i, sigma^2), x0_i from the prior
            logw = -((x.unsqueeze(1) - prior.unsqueeze(0)) ** 2).sum(-1) / (2 * sigma ** 2)
            brute = (logw.softmax(1).unsqueeze(-1) * prior.unsqueeze(0)).sum(1)
            exact = mixture.denoise(x, torch.full((3,), sigma), label)
            assert (exact - brute).abs().max().item() < 0.03, (label, sigma)


def test_true_samples_measure_as_perfect():
    mixture = gmm.default_mixture()
    g = torch.Generator().manual_seed(1)
    m = gmm.measure(mixture, mixture.sample(4000, 0, g), 0, g)
    assert m["modes_covered"] == 4 and m["min_mode_share"] > 0.8 and m["sliced_w"] < 0.05 and m["off_data"] < 0.01
    collapsed = mixture.means[:1].repeat(4000, 1) + 0.01 * torch.randn(4000, 2, generator=g, dtype=torch.float64)
    m = gmm.measure(mixture, collapsed, 0, g)
    assert m["modes_covered"] == 1 and m["sliced_w"] > 0.5


def test_shipped_digits_model_samples_the_requested_classes_at_w3():
    from benchmarks.beds import digits, evaluator
    model, judge = digits.load("labelnoise30"), evaluator.load()
    labels = torch.arange(10).repeat_interleave(20)
    x = digits.sample_cfg(model, labels, 3.0, digits.karras_sigmas(), seed=0)
    with torch.no_grad():
        accuracy = (judge(x.clamp(-1, 1)).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9
    unguided = digits.sample_cfg(model, labels, 1.0, digits.karras_sigmas(), seed=0)
    with torch.no_grad():
        assert (judge(unguided.clamp(-1, 1)).argmax(1) == labels).float().mean().item() < accuracy - 0.2


def test_the_beds_annealing_schedulers_load_for_their_bed_models_only():
    """The networks benchmarks/beds/annealing_train.py trained through the training node's code: the digits
    bed's (an EDM model: EPS space, 1 channel, continuous timesteps) and the flow GMM bed's."""
    from benchmarks.beds import annealing_train
    from guidance_schedules.samplers.annealing import load_scheduler
    digits_net = load_scheduler(str(annealing_train.OUTPUT["digits"]))
    digits_net.check_compatible("edm", 1, "continuous")
    with pytest.raises(ValueError, match="trained for .*edm prediction"):
        digits_net.check_compatible("eps", 4, "discrete_1000")
    assert digits_net.trained_for.source.startswith("AnnealingGuidanceTrain")
    flow_net = load_scheduler(str(annealing_train.OUTPUT["gmm_flow"]))
    flow_net.check_compatible("flow", 2, "continuous")
    with pytest.raises(ValueError, match="trained for .*flow prediction.*this model is a edm model"):
        flow_net.check_compatible("edm", 2, "continuous")
    net = digits_net.cpu_float64_network()
    w = net(torch.linspace(-1.3, 0.75, 8, dtype=torch.float64), torch.linspace(0.1, 10, 8, dtype=torch.float64),
            torch.linspace(0, 1, 8, dtype=torch.float64))
    assert torch.isfinite(w).all() and (w > 0).all()