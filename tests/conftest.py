"""Test setup shared by the pure tests and the host tests.

The pack is importable as `guidance_schedules` without running its __init__.py (which imports
ComfyUI), so the pure tests of samplers/ run anywhere (standalone.py). The host tests in tests/host/
import a real ComfyUI: from COMFYUI_PATH, or from the ComfyUI root when this pack sits in
ComfyUI/custom_nodes/ (tests/host/conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(PACK_ROOT))
import standalone  # noqa: E402  (the pack's root is on sys.path only for this import)

# `python -m pytest` puts the working directory first on sys.path, where this pack's nodes/ would
# shadow ComfyUI's nodes.py: the pack is imported as a package, and its root stays last on sys.path
# only so that `benchmarks.beds` (the test beds) is importable.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACK_ROOT] + [str(PACK_ROOT)]
standalone.import_pack()


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
