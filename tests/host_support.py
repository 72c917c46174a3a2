"""The real ComfyUI for the host tests (tests/host/), and what they do without one.

tests/host/conftest.py calls `require_comfyui()` before any host test module is imported: it puts
ComfyUI (COMFYUI_PATH, or the ComfyUI this pack is installed in) first on sys.path. Without one,
the host tests are not collected and `test_host_present.py` skips with the one reason. Where the host
is required (GS_REQUIRE_HOST=1, as .ci/run sets it) a missing ComfyUI or missing reference data
fails the run instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import standalone

PACK_ROOT = standalone.PACK_ROOT
HELPER_PACK = Path(__file__).resolve().parent / "helper_pack"
COMFYUI_ROOT, NO_COMFYUI_REASON = standalone.find_comfyui()
HOST_REQUIRED = os.environ.get("GS_REQUIRE_HOST") == "1"


def skip_or_fail(reason: str):
    """Skip the test or module with `reason`, or fail where the host tests are required (CI)."""
    if HOST_REQUIRED:
        pytest.fail(f"GS_REQUIRE_HOST=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_comfyui() -> Path:
    if COMFYUI_ROOT is None:
        skip_or_fail(NO_COMFYUI_REASON)
    if str(HELPER_PACK) not in sys.path:
        standalone.import_comfyui(root=COMFYUI_ROOT)
        sys.path.insert(1, str(HELPER_PACK))
    return COMFYUI_ROOT
