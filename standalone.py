"""Using the pack outside ComfyUI's node loader: from its scripts, benchmarks, workflow generator and tests.

    sys.path.insert(0, PACK_ROOT)        # once, where the caller is not run from the pack's root
    import standalone
    standalone.import_pack()             # the pack as the package `guidance_schedules`, no node registration
    standalone.import_comfyui()          # ComfyUI itself, for code that samples (benchmarks, tests)

ComfyUI loads the pack through its __init__.py, which registers the nodes and needs ComfyUI; the pure
code in samplers/ needs neither, so the pack is importable as a package whose __init__ does not run.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent
PACKAGE = "guidance_schedules"


def import_pack() -> None:
    """Make `guidance_schedules.samplers...` (and `.nodes`, once ComfyUI is importable) importable."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(PACK_ROOT)]
        sys.modules[PACKAGE] = package


def find_comfyui() -> tuple[Path | None, str]:
    """(the ComfyUI root, "") from COMFYUI_PATH or from the ComfyUI this pack is installed in, else
    (None, why not)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if (root / "comfy" / "samplers.py").is_file():
            return root, ""
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no comfy/samplers.py)"
    installed_in = PACK_ROOT.parent.parent
    if PACK_ROOT.parent.name == "custom_nodes" and (installed_in / "comfy" / "samplers.py").is_file():
        return installed_in, ""
    return None, ("host tests need a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout "
                  "or clone this pack into ComfyUI/custom_nodes/")


def import_comfyui(cpu: bool | None = None, root: Path | None = None, progress_bars: bool = True) -> Path:
    """Put ComfyUI first on sys.path (before the pack's root, whose nodes/ would shadow ComfyUI's
    nodes.py), choose its device (the CPU where there is no CUDA, or as `cpu` says) before
    comfy.model_management picks one, and import the pack. Exits with the reason where there is no
    ComfyUI."""
    if root is None:
        root, reason = find_comfyui()
        if root is None:
            sys.exit(reason)
    pack = str(PACK_ROOT)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACK_ROOT]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    sys.path.append(pack)  # after ComfyUI: `benchmarks.beds` stays importable, `nodes` is ComfyUI's
    import torch
    import comfy.cli_args
    comfy.cli_args.args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    if not progress_bars:
        import comfy.utils
        comfy.utils.PROGRESS_BAR_ENABLED = False
    import_pack()
    return root
