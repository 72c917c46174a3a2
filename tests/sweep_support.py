"""What the sweep's tests share: scripts/sweep.py as a module, for the tests that look inside it (the command
itself runs in a subprocess), the grid the servers sample the tiny model on, and the folder's records."""
import importlib.util
import json
import math
import sys
from pathlib import Path

SWEEP = Path(__file__).resolve().parents[1] / "scripts" / "sweep.py"
STEPS = 8  # the servers' KSampler steps in the sweep tests


def karras_grid(steps=STEPS):
    """The grid a server's KSampler samples the tiny EPS model on (written out from ComfyUI, not the pack)."""
    import comfy.samplers
    import tiny_models
    ms = tiny_models.build_model("eps").get_model_object("model_sampling")
    return [float(s) for s in comfy.samplers.calculate_sigmas(ms, "karras", steps)]


def between(a, b):
    """A bound between two grid sigmas (their geometric mean): the step on either side is unambiguous."""
    return math.sqrt(a * b)


def read_runs(out):
    """The runs a sweep recorded in its folder (none before it wrote runs.json)."""
    path = out / "runs.json"
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def sweep_module():
    spec = importlib.util.spec_from_file_location("sweep", SWEEP)
    sweep = importlib.util.module_from_spec(spec)
    sys.modules["sweep"] = sweep  # dataclasses look their module up there
    spec.loader.exec_module(sweep)
    return sweep
