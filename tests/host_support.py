"""Finding and importing the real ComfyUI for the host tests.

Call `require_comfyui()` at the top of a host test module, before importing comfy: it puts
ComfyUI (COMFYUI_PATH, or the ComfyUI this pack is installed in) on sys.path, or skips the
module with the one reason there is no ComfyUI. Where the host is required (GS_REQUIRE_HOST=1, as
.ci/run sets it) a missing ComfyUI or missing reference data fails the run instead of skipping.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parents[1]
HELPER_PACK = Path(__file__).resolve().parent / "helper_pack"


def find_comfyui() -> tuple[Path | None, str]:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if (root / "comfy" / "samplers.py").is_file():
            return root, ""
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no comfy/samplers.py)"
    if PACK_ROOT.parent.name == "custom_nodes" and (PACK_ROOT.parent.parent / "comfy" / "samplers.py").is_file():
        return PACK_ROOT.parent.parent, ""
    return None, ("host tests need a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout "
                  "or clone this pack into ComfyUI/custom_nodes/")


COMFYUI_ROOT, NO_COMFYUI_REASON = find_comfyui()
HOST_REQUIRED = os.environ.get("GS_REQUIRE_HOST") == "1"


def skip_or_fail(reason: str):
    """Skip the module with `reason`, or fail where the host tests are required (CI)."""
    if HOST_REQUIRED:
        pytest.fail(f"GS_REQUIRE_HOST=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_comfyui() -> Path:
    if COMFYUI_ROOT is None:
        skip_or_fail(NO_COMFYUI_REASON)
    if str(COMFYUI_ROOT) not in sys.path:
        sys.path.insert(0, str(COMFYUI_ROOT))
        sys.path.insert(1, str(HELPER_PACK))
        import torch
        import comfy.cli_args
        # ComfyUI picks its device when comfy.model_management is first imported.
        comfy.cli_args.args.cpu = not torch.cuda.is_available()
    return COMFYUI_ROOT
