"""scripts/sweep.py as a module, for the tests that look inside it (the command itself runs in a subprocess)."""
import importlib.util
import sys
from pathlib import Path

SWEEP = Path(__file__).resolve().parents[1] / "scripts" / "sweep.py"


def sweep_module():
    spec = importlib.util.spec_from_file_location("sweep", SWEEP)
    sweep = importlib.util.module_from_spec(spec)
    sys.modules["sweep"] = sweep  # dataclasses look their module up there
    spec.loader.exec_module(sweep)
    return sweep
