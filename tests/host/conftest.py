"""The host tests: a real ComfyUI is imported before any of them is collected.

Without one they are not collected at all, and tests/test_host_present.py skips with the one reason
(or fails where GS_REQUIRE_HOST=1, as in CI).
"""
import os

import pytest

import host_support

if host_support.COMFYUI_ROOT is None:
    collect_ignore_glob = ["test_*.py"]
else:
    host_support.require_comfyui()
    import comfy.model_base
    import comfy.samplers
    # What ComfyUI 0.33 added, tested where the host has it (collected, and never skipped, there).
    HOST_HAS = {"test_host_model_types_033.py": hasattr(comfy.model_base.ModelType, "V_PREDICTION_DDPM"),
                "test_host_multigpu_033.py": hasattr(comfy.samplers, "_calc_cond_batch_multigpu")}
    collect_ignore = [test for test, present in HOST_HAS.items() if not present]
    # Four servers and two restarts, about three minutes: .ci/run sets GS_SWEEP_SERVERS=0 on the trees
    # between the oldest and the newest, to stay within CI's time (the sweep speaks only the HTTP API,
    # whose single-server tests run on every tree).
    if os.environ.get("GS_SWEEP_SERVERS") == "0":
        collect_ignore.append("test_host_sweep_servers.py")


@pytest.fixture(scope="module", params=["eps", "v_prediction", "flow"])
def tiny_setup(request):
    """(model type, a tiny model of it, positive and negative conditioning), for each model type."""
    import tiny_models
    model = tiny_models.build_model(request.param)
    return request.param, model, tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)


@pytest.fixture(scope="session", autouse=True)
def the_host_tree_stays_untouched():
    """Tests write into temporary folders, never into the ComfyUI tree they run (a shared, unmodified
    checkout): after the session, no file there is newer than its start."""
    import time
    start = time.time()
    yield
    written = [str(p) for p in host_support.COMFYUI_ROOT.rglob("*")
               if "__pycache__" not in p.parts and p.is_file() and p.stat().st_mtime >= start]
    assert not written, f"the host tests wrote into the ComfyUI tree: {written[:5]}"


@pytest.fixture
def scheduler_folder(tmp_path, monkeypatch):
    """A fresh models/guidance_schedulers for a test, first in ComfyUI's list: where the training node writes."""
    import folder_paths
    from guidance_schedules.nodes import annealing as annealing_nodes
    folder = tmp_path / "guidance_schedulers"
    folder.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths[annealing_nodes.FOLDER]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, annealing_nodes.FOLDER, ([str(folder), *paths], extensions))
    return folder
