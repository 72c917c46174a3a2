"""Test setup shared by the pure tests and the host tests.

The pack is made importable as `guidance_schedules` without running its __init__.py (which
imports ComfyUI), so the pure tests of samplers/ run anywhere. The host tests import a real
ComfyUI: from COMFYUI_PATH, or from the ComfyUI root when this pack sits in
ComfyUI/custom_nodes/. Without either they are skipped with one reason.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "guidance_schedules"

if PACKAGE not in sys.modules:
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(PACK_ROOT)]
    sys.modules[PACKAGE] = package

# `python -m pytest` puts the working directory first on sys.path, where this pack's nodes/
# would shadow ComfyUI's nodes.py: the pack is only ever imported as a package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACK_ROOT]


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def comfy_server():
    """A running ComfyUI (main.py --cpu) with this pack and the test helper pack, shared by the
    host tests that drive it over HTTP."""
    import host_support
    host_support.require_comfyui()
    from comfy_server import ComfyServer
    server = ComfyServer()
    yield server
    server.stop()
