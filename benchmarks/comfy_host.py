"""Importing the real ComfyUI (COMFYUI_PATH) and this pack as `guidance_schedules`, for the
benchmark scripts (the tests have tests/host_support.py)."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def import_comfyui(cpu: bool | None = None) -> Path:
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.insert(0, root)
    import torch
    import comfy.cli_args
    comfy.cli_args.args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    package = types.ModuleType("guidance_schedules")  # the pack without its __init__ (no node registration)
    package.__path__ = [str(PACK_ROOT)]
    sys.modules["guidance_schedules"] = package
    if str(PACK_ROOT) not in sys.path:
        sys.path.insert(1, str(PACK_ROOT))  # benchmarks.beds
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    return Path(root)
