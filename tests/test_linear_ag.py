"""LinearAG fitting and files, without ComfyUI."""
import pytest
import torch
from safetensors.torch import save_file

from guidance_schedules.samplers import linear_ag
from guidance_schedules.samplers.files import FileRefused


def synthetic_runs(coefficients, runs=5, steps=6, shape=(2, 4, 4), seed=0):
    """Trajectories whose odd-step D_u is exactly the affine combination with these coefficients."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(runs):
        traj = []
        for i in range(steps):
            cond = torch.randn(1, *shape, generator=g)
            if linear_ag.estimated_step(i) and i > 0:
                a, b, c, d = coefficients[i]
                uncond = a * cond + b * traj[i - 1][0] + c * traj[i - 1][1] + d
            else:
                uncond = torch.randn(1, *shape, generator=g)
            traj.append((cond, uncond))
        out.append(traj)
    return out


def test_fit_recovers_exact_coefficients():
    truth = torch.zeros(6, 4, dtype=torch.float64)
    truth[1], truth[3], truth[5] = torch.tensor([0.8, 0.1, 0.3, 0.05]), torch.tensor([1.1, -0.2, 0.05, 0.0]), \
        torch.tensor([0.5, 0.0, 0.5, -0.1])
    result = linear_ag.fit(synthetic_runs(truth))
    assert torch.allclose(result.coefficients, truth, atol=1e-5)
    assert result.relative_error[1::2].max() < 1e-5


def fitted_for(**changes):
    base = dict(sampler="sample_euler", steps=6, sigmas=(14.6, 7.0, 3.0, 1.0, 0.3, 0.1, 0.0), model="SDXL EPS",
                cfg=7.0, runs=5)
    return linear_ag.FittedFor(**{**base, **changes})


def test_save_load_round_trip_and_no_overwrite(tmp_path):
    result = linear_ag.fit(synthetic_runs(torch.zeros(6, 4, dtype=torch.float64)))
    path = tmp_path / "sub" / "coeffs.safetensors"
    linear_ag.save(result, fitted_for(), str(path))
    loaded = linear_ag.load(str(path))
    assert torch.equal(loaded.coefficients, result.coefficients) and loaded.fitted_for == fitted_for()
    assert loaded.name == "coeffs.safetensors"
    with pytest.raises(FileExistsError):
        linear_ag.save(result, fitted_for(), str(path))


def run(sampler="sample_euler", sigmas=(14.6, 7.0, 3.0, 1.0, 0.3, 0.1, 0.0), prediction="eps"):
    from guidance_schedules.samplers.schedule import RunInfo
    return RunInfo(sigmas=tuple(sigmas), sampler=sampler, prediction=prediction)


def test_a_file_for_another_sampler_step_count_grid_or_model_is_refused():
    linear_ag.check_run(fitted_for(), run())
    with pytest.raises(FileRefused, match="fitted for the sampler euler; this run uses dpmpp_2m"):
        linear_ag.check_run(fitted_for(), run("sample_dpmpp_2m"))
    with pytest.raises(FileRefused, match="fitted for 6 steps; this run has 20"):
        linear_ag.check_run(fitted_for(), run(sigmas=[float(20 - i) for i in range(21)]))
    with pytest.raises(FileRefused, match="fitted for the sigmas 14.6, 7, 3, ... 0.1, 0; this run "
                                                              "samples 10, 7, 3"):
        linear_ag.check_run(fitted_for(), run(sigmas=(10.0, 7.0, 3.0, 1.0, 0.3, 0.1, 0.0)))
    with pytest.raises(FileRefused, match="fitted for a model with eps prediction; this model has v prediction"):
        linear_ag.check_run(fitted_for(), run(prediction="v"))
    # a file that names its prediction type only in `model` (written before the field existed)
    assert fitted_for(model="SDXL V_PREDICTION").prediction_type() == "v"


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(FileRefused, match="not a readable safetensors file"):
        linear_ag.load(str(bad))
    other = tmp_path / "other.safetensors"
    save_file({"coefficients": torch.zeros(3, 4)}, str(other))
    with pytest.raises(FileRefused, match="not a LinearAG coefficients file"):
        linear_ag.load(str(other))


def test_bad_coefficients_or_metadata_are_refused_with_what_is_wrong(tmp_path):
    result = linear_ag.fit(synthetic_runs(torch.zeros(6, 4, dtype=torch.float64)))
    path = tmp_path / "good.safetensors"
    linear_ag.save(result, fitted_for(), str(path))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())

    def variant(name, coefficients=result.coefficients, **meta_changes):
        out = tmp_path / name
        save_file({"coefficients": coefficients.contiguous()}, str(out), metadata={**meta, **meta_changes})
        return str(out)
    infinite = result.coefficients.clone()
    infinite[1, 0] = float("inf")
    with pytest.raises(FileRefused, match="inf.safetensors holds non-finite coefficients"):
        linear_ag.load(variant("inf.safetensors", infinite))
    with pytest.raises(FileRefused, match=r"shape \(3, 4\) do not fit 6 steps"):
        linear_ag.load(variant("shape.safetensors", torch.zeros(3, 4, dtype=torch.float64)))
    with pytest.raises(FileRefused, match="steps must be a whole number"):
        linear_ag.load(variant("steps.safetensors", fitted_for='{"steps": "six"}'))
    with pytest.raises(FileRefused, match="format_version '9'"):
        linear_ag.load(variant("version.safetensors", format_version="9"))
    with pytest.raises(FileRefused, match="ints.safetensors: the coefficients are of dtype int64"):
        linear_ag.load(variant("ints.safetensors", torch.zeros(6, 4, dtype=torch.int64)))
    # any float dtype is read, float8 included (isfinite has no float8 kernel: it is read as float64 first)
    eight = linear_ag.load(variant("f8.safetensors", result.coefficients.to(torch.float8_e4m3fn)))
    assert eight.coefficients.dtype == torch.float64
    assert torch.equal(eight.coefficients, result.coefficients.to(torch.float8_e4m3fn).to(torch.float64))


def accumulated(runs):
    equations = linear_ag.NormalEquations(len(runs[0]))
    for run in runs:
        for i in range(1, len(run)):
            if linear_ag.estimated_step(i):
                equations.add(i, run[i][0], run[i - 1][0], run[i - 1][1], run[i][1])
    return equations.fit()


@pytest.mark.parametrize("exact", [True, False])
def test_the_accumulated_normal_equations_give_the_direct_least_squares(exact):
    """What the calibration keeps (4x4 and 4 numbers a step, run by run) against the least squares solved on all
    trajectories at once: the coefficients to 1e-8 relative, the relative error alike."""
    truth = torch.zeros(6, 4, dtype=torch.float64)
    truth[1], truth[3], truth[5] = torch.tensor([0.8, 0.1, 0.3, 0.05]), torch.tensor([1.1, -0.2, 0.05, 0.0]), \
        torch.tensor([0.5, 0.0, 0.5, -0.1])
    runs = synthetic_runs(truth, runs=7, shape=(4, 8, 8))
    if not exact:  # predictions the four terms do not explain exactly
        g = torch.Generator().manual_seed(5)
        runs = [[(c, u + 0.05 * torch.randn(u.shape, generator=g)) for c, u in run] for run in runs]
    direct, summed = linear_ag.fit(runs), accumulated(runs)
    odd = slice(1, None, 2)
    scale = direct.coefficients[odd].abs().max()
    assert (summed.coefficients[odd] - direct.coefficients[odd]).abs().max() <= 1e-8 * scale
    assert torch.allclose(summed.relative_error[odd], direct.relative_error[odd], rtol=1e-6, atol=1e-7)
