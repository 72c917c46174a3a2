"""LinearAG (Castillo et al., 2023): replace the unconditional pass, on alternate steps of the guided
part of a run, by an affine combination of predictions already made, with per-step coefficients
fitted by least squares on full-CFG runs of the user's own model and sampler:

    D_u(i) ~ a_i D_c(i) + b_i D_c(i-1) + c_i D_u(i-1) + d_i      (i odd: 1, 3, 5, ...)

The paper writes the combination in noise space over past iterates; here it is in the denoised
space ComfyUI hands around, with the current conditional prediction and the previous step's two
predictions (the previous step, being even, always ran the real unconditional pass). Scalar
coefficients per step, shared by all latent elements, as in the paper.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from .files import FileRefused, checked_file, write_new
from .schedule import GuidanceSchedule, RunInfo, reduction_dtype

FORMAT = "guidance_schedules/linear_ag"
FORMAT_VERSION = "1"
N_TERMS = 4  # a, b, c, d


def estimated_step(step: int) -> bool:
    """LinearAG estimates the unconditional prediction on odd steps (1, 3, 5, ...)."""
    return step % 2 == 1


def features(cond: torch.Tensor, prev_cond: torch.Tensor, prev_uncond: torch.Tensor) -> torch.Tensor:
    """(elements, 4) design matrix of one step: D_c(i), D_c(i-1), D_u(i-1), 1."""
    c, pc, pu = (t.reshape(-1).to(torch.float64) for t in (cond, prev_cond, prev_uncond))
    return torch.stack([c, pc, pu, torch.ones_like(c)], dim=1)


def estimate(coefficients: torch.Tensor, step: int, cond, prev_cond, prev_uncond) -> torch.Tensor:
    """The estimated D_u(step), on the predictions' device, in at least float32 (not float64: some
    sampling devices, such as Apple's MPS, have none)."""
    a, b, c, d = (float(v) for v in coefficients[step])
    dtype = torch.promote_types(cond.dtype, torch.float32)
    return (a * cond.to(dtype) + b * prev_cond.to(dtype) + c * prev_uncond.to(dtype) + d).to(cond.dtype)


@dataclass
class Fit:
    coefficients: torch.Tensor  # (steps, 4); rows of even steps are unused (zeros)
    relative_error: torch.Tensor  # (steps,) ||D_u - estimate|| / ||D_u - D_c|| on the calibration data


class NormalEquations:
    """The calibration's least squares, accumulated run by run instead of kept as trajectories: per estimated step,
    the 4x4 matrix X^T X and the 4-vector X^T y of its design (X: the rows [D_c(i), D_c(i-1), D_u(i-1), 1] of every
    latent element, y: D_u(i)), with y.y and |D_u - D_c|^2 for the relative error, in float64 on the predictions'
    device (float32 where it has no float64). Its memory is a few numbers a step whatever the runs and the latent:
    a calibration holds only the previous step's two predictions besides it."""

    def __init__(self, steps: int):
        self.steps = steps
        self.gram: dict[int, torch.Tensor] = {}  # step -> X^T X (4, 4)
        self.moment: dict[int, torch.Tensor] = {}  # step -> X^T y (4,)
        self.target_square: dict[int, torch.Tensor] = {}  # step -> y.y
        self.gap_square: dict[int, torch.Tensor] = {}  # step -> |D_u - D_c|^2
        self.trajectories = 0

    def add(self, step: int, cond, prev_cond, prev_uncond, uncond) -> None:
        """One estimated step of a run (every latent of its batch: they are summed alike)."""
        dtype = reduction_dtype(cond.device)
        features = torch.stack([t.reshape(-1) for t in (cond, prev_cond, prev_uncond)]).to(dtype)  # (3, N)
        y = uncond.reshape(-1).to(dtype)
        n = torch.tensor([float(y.numel())], dtype=dtype, device=y.device)
        sums = features.sum(dim=1)
        gram = torch.cat([torch.cat([features @ features.T, sums[:, None]], dim=1),
                          torch.cat([sums, n])[None, :]], dim=0)
        moment = torch.cat([features @ y, y.sum()[None]])
        gap = y - features[0]
        for table, value in ((self.gram, gram), (self.moment, moment), (self.target_square, y @ y),
                             (self.gap_square, gap @ gap)):
            table[step] = table[step] + value if step in table else value

    def fit(self) -> Fit:
        """The coefficients and the relative error of each estimated step, as `fit` gives them from trajectories."""
        coefficients = torch.zeros(self.steps, N_TERMS, dtype=torch.float64)
        error = torch.zeros(self.steps, dtype=torch.float64)
        for i, gram in self.gram.items():
            gram, moment = gram.to("cpu", torch.float64), self.moment[i].to("cpu", torch.float64)
            # the minimum-norm solution, as lstsq's on the design (a design of lower rank: a constant prediction)
            solution = torch.linalg.lstsq(gram, moment.unsqueeze(1), driver="gelsd").solution[:, 0]
            coefficients[i] = solution
            residual = float(solution @ gram @ solution - 2 * solution @ moment + self.target_square[i].to("cpu"))
            gap = float(self.gap_square[i].to("cpu"))
            error[i] = math.sqrt(max(residual, 0.0)) / max(math.sqrt(gap), 1e-12)
        return Fit(coefficients, error)


def fit(runs: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> Fit:
    """runs[r][i] = (D_c, D_u) at step i of calibration run r (full CFG). Least squares per odd step, solved on the
    design directly: the reference NormalEquations.fit is held to (tests/test_linear_ag.py)."""
    steps = len(runs[0])
    if any(len(r) != steps for r in runs):
        raise ValueError("calibration runs differ in step count")
    coefficients = torch.zeros(steps, N_TERMS, dtype=torch.float64)
    error = torch.zeros(steps, dtype=torch.float64)
    for i in range(1, steps):
        if not estimated_step(i):
            continue
        design = torch.cat([features(r[i][0], r[i - 1][0], r[i - 1][1]) for r in runs])
        target = torch.cat([r[i][1].reshape(-1).to(torch.float64) for r in runs])
        solution = torch.linalg.lstsq(design, target.unsqueeze(1), driver="gelsd").solution[:, 0]
        coefficients[i] = solution
        gap = torch.cat([(r[i][1] - r[i][0]).reshape(-1).to(torch.float64) for r in runs]).norm()
        error[i] = (design @ solution - target).norm() / gap.clamp_min(1e-12)
    return Fit(coefficients, error)


@dataclass(frozen=True)
class FittedFor:
    sampler: str  # k-diffusion function name
    steps: int
    sigmas: tuple[float, ...]
    model: str  # the model's config class and prediction type, e.g. "SDXL EPS"
    cfg: float
    runs: int
    prediction: str = ""  # eps, v, flow, edm (files before format 1.1 say it in `model` only)

    def prediction_type(self) -> str:
        known = {"EPS": "eps", "V_PREDICTION": "v", "FLOW": "flow", "EDM": "edm"}
        return self.prediction or known.get(self.model.rsplit(" ", 1)[-1], "")


def save(result: Fit, fitted_for: FittedFor, path: str) -> None:
    """Write the coefficients to a new file (FileExistsError where the name is taken)."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "fitted_for": json.dumps({**fitted_for.__dict__, "sigmas": list(fitted_for.sigmas)})}
    write_new(path, {"coefficients": result.coefficients, "relative_error": result.relative_error}, meta)


def _fitted_for_from(meta: dict, name: str) -> FittedFor:
    """What the coefficients were fitted for, every field checked."""
    try:
        fitted = json.loads(meta["fitted_for"])
    except KeyError:
        raise FileRefused(f"{name}: the metadata lacks 'fitted_for'") from None
    except json.JSONDecodeError as e:
        raise FileRefused(f"{name}: the metadata is not valid JSON ({e})") from None
    if not isinstance(fitted, dict):
        raise FileRefused(f"{name}: fitted_for must be a JSON object")
    problems = []
    steps, sigmas = fitted.get("steps"), fitted.get("sigmas")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
        problems.append("steps must be a whole number from 1 to 10000")
    elif not isinstance(sigmas, list) or len(sigmas) != steps + 1 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in sigmas):
        problems.append("sigmas must be steps + 1 finite numbers")
    for key in ("sampler", "model"):
        if not isinstance(fitted.get(key), str):
            problems.append(f"{key} must be a string")
    cfg, runs = fitted.get("cfg"), fitted.get("runs")
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg):
        problems.append("cfg must be a finite number")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        problems.append("runs must be a whole number >= 1")
    if problems:
        raise FileRefused(f"{name}: fitted_for is not valid: {'; '.join(problems)}")
    prediction = fitted.get("prediction", "")
    return FittedFor(sampler=fitted["sampler"], steps=steps, sigmas=tuple(float(v) for v in sigmas),
                     model=fitted["model"], cfg=float(cfg), runs=runs, prediction=prediction if isinstance(prediction, str) else "")


@dataclass(frozen=True)
class LinearAGFile:
    """A loaded coefficients file: what AdaptiveSchedule needs of it."""

    name: str  # the file's name, for messages
    coefficients: torch.Tensor  # (steps, 4), float64
    fitted_for: FittedFor

    def check_run(self, run: RunInfo) -> None:
        check_run(self.fitted_for, run, self.name)


def load(path: str) -> LinearAGFile:
    name = os.path.basename(path)
    with checked_file(path, FORMAT, FORMAT_VERSION,
                      "is not a LinearAG coefficients file (make one with the LinearAGCalibrate node)") as (meta, f):
        fitted_for = _fitted_for_from(meta, name)
        if "coefficients" not in f.keys():
            raise FileRefused(f"{name} holds no coefficients (make one with the LinearAGCalibrate node)")
        coefficients = f.get_tensor("coefficients")
    if not coefficients.is_floating_point():
        raise FileRefused(f"{name}: the coefficients are of dtype {str(coefficients.dtype).removeprefix('torch.')}; "
                          "they are floating point numbers (calibrate again)")
    coefficients = coefficients.to(torch.float64)  # whatever float dtype they were saved in (float8 included)
    if tuple(coefficients.shape) != (fitted_for.steps, N_TERMS):
        raise FileRefused(f"{name}: coefficients of shape {tuple(coefficients.shape)} do not fit "
                          f"{fitted_for.steps} steps ({fitted_for.steps}, {N_TERMS} expected)")
    if not torch.isfinite(coefficients).all():
        raise FileRefused(f"{name} holds non-finite coefficients (inf or NaN): calibrate again")
    return LinearAGFile(name, coefficients.to(torch.float64), fitted_for)


def check_run(fitted_for: FittedFor, run: RunInfo, name: str = "the LinearAG file") -> None:
    """Refuse a run the coefficients were not fitted for: they hold for one sampler, sigma grid and kind of
    model (the file's cfg is only a caution: AdaptiveSchedule says so in the log)."""
    sampler, steps = run.sampler, run.steps
    if sampler != fitted_for.sampler:
        raise FileRefused(f"{name} was fitted for the sampler {fitted_for.sampler.removeprefix('sample_')}; "
                          f"this run uses {sampler.removeprefix('sample_')}. Calibrate again for it.")
    if steps != fitted_for.steps:
        raise FileRefused(f"{name} was fitted for {fitted_for.steps} steps; this run has {steps}. "
                          "Calibrate again for it.")
    if fitted_for.sigmas and run.sigmas and not all(
            math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(fitted_for.sigmas, run.sigmas)):
        raise FileRefused(
            f"{name} was fitted for the sigmas {_grid(fitted_for.sigmas)}; this run samples {_grid(run.sigmas)} (another "
            "scheduler, denoise or model sampling). Calibrate again for it.")
    fitted_prediction = fitted_for.prediction_type()
    if fitted_prediction and run.prediction and fitted_prediction != run.prediction:
        raise FileRefused(f"{name} was fitted for a model with {fitted_prediction} prediction; this "
                          f"model has {run.prediction} prediction. Calibrate again for it.")


def _grid(sigmas) -> str:
    shown = ", ".join(f"{s:.4g}" for s in sigmas[:3])
    return f"{shown}, ... {sigmas[-2]:.4g}, {sigmas[-1]:.4g}" if len(sigmas) > 5 else ", ".join(f"{s:.4g}" for s in sigmas)


class CalibrationSchedule(GuidanceSchedule):
    """Full CFG (the unconditional pass every step, cfg 1 included) that adds each estimated step's first
    evaluation to `equations` (NormalEquations), keeping only the step before's two predictions."""

    follows_cfg1_shortcut = False

    def __init__(self, run: RunInfo, equations: NormalEquations):
        super().__init__(run)
        if run.steps != equations.steps:
            raise ValueError(f"sigmas: the calibration runs have {equations.steps} steps; this one has {run.steps}")
        self.equations = equations
        self.previous: tuple[int, torch.Tensor, torch.Tensor] | None = None
        equations.trajectories += run.latent_shape[0] if run.latent_shape else 1

    def guide(self, ev, cond, uncond, candidates):
        if ev.first_of_step:
            if estimated_step(ev.step) and self.previous is not None and self.previous[0] == ev.step - 1:
                self.equations.add(ev.step, cond, self.previous[1], self.previous[2], uncond)
            self.previous = (ev.step, cond.detach(), uncond.detach())
        return super().guide(ev, cond, uncond, candidates)
