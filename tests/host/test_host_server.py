"""The pack in a running ComfyUI server, as users drive it: /object_info and API prompts."""
import urllib.request

import host_support
from comfy_server import cached_nodes
from prompts import calibration_prompt
import pytest
import torch
from safetensors.torch import load_file


BOUNDS = {"sigma_hi": 3.0, "sigma_lo": 0.3}


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def test_object_info_lists_the_nodes_with_their_inputs(server):
    info = server.get("/object_info")
    guider, patch = info["GuidanceIntervalGuider"], info["GuidanceIntervalPatch"]
    assert list(guider["input"]["required"]) == ["model", "positive", "negative", "cfg", "sigma_hi", "sigma_lo"]
    assert list(patch["input"]["required"]) == ["model", "sigma_hi", "sigma_lo"]
    assert guider["output"] == ["GUIDER"] and patch["output"] == ["MODEL"]
    assert guider["input"]["required"]["sigma_hi"][1]["default"] == 5.42
    assert guider["input"]["required"]["sigma_lo"][1]["default"] == 0.28
    # beside the KSampler, in whatever category the host gives it ('sampling', newer: 'model/sampling')
    assert guider["category"] == patch["category"] == info["KSampler"]["category"] + "/guidance schedules"
    assert "tooltip" in patch["input"]["required"]["sigma_lo"][1]


def interval_prompt(sampler="heun", bounds=BOUNDS):
    model, pos, neg = ["1", 0], ["1", 1], ["1", 2]
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "GuidanceIntervalPatch", "inputs": {"model": model, **bounds}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 42, "steps": 8, "cfg": 5.0, "sampler_name": sampler, "scheduler": "karras",
            "positive": pos, "negative": neg, "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "gs_patch"}},
        "6": {"class_type": "GuidanceIntervalGuider", "inputs": {
            "model": model, "positive": pos, "negative": neg, "cfg": 5.0, **bounds}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "karras", "steps": 8, "denoise": 1.0}},
        "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["9", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["3", 0]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "gs_guider"}},
    }


def saved_latent(server, history, node):
    return load_file(server.output_path(history["outputs"][node]["latents"][0]))["latent_tensor"]


def expected_in_process(sampler):
    """The same graph run in this process: the server must produce exactly this."""
    import nodes as comfy_nodes
    import tiny_models
    from guidance_schedules.nodes.interval import GuidanceIntervalPatch
    model = GuidanceIntervalPatch().patch(tiny_models.build_model("eps"), **BOUNDS)[0]
    latent = {"samples": torch.zeros(2, tiny_models.CHANNELS, 8, 8)}
    return comfy_nodes.KSampler().sample(model, 42, 8, 5.0, sampler, "karras", tiny_models.build_conditioning(1),
                                         tiny_models.build_conditioning(2), latent, 1.0)[0]["samples"]


@pytest.mark.parametrize("sampler", ["heun", "euler_cfg_pp"])
def test_an_api_prompt_runs_both_nodes(server, sampler):
    history = server.run_prompt(interval_prompt(sampler))
    assert history["status"]["status_str"] == "success", history["status"]
    via_patch, via_guider = saved_latent(server, history, "5"), saved_latent(server, history, "11")
    assert via_patch.shape == (2, 4, 8, 8) and torch.isfinite(via_patch).all()
    assert torch.equal(via_patch, via_guider)
    assert (via_patch - expected_in_process(sampler)).abs().max().item() <= 1e-5
    assert "Guidance interval (0.3, 3]" in server.log()


def test_bad_bounds_fail_the_prompt_with_a_message_naming_the_inputs(server):
    history = server.run_prompt(interval_prompt("euler", {"sigma_hi": 0.5, "sigma_lo": 2.0}))
    assert history["status"]["status_str"] == "error"
    errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "sigma_lo (2) must be smaller than sigma_hi (0.5)" in errors[0]["exception_message"]


def test_nan_or_negative_cfg_fails_the_prompt_with_a_message_naming_cfg(server):
    nan_cfg = interval_prompt("euler")
    nan_cfg["4"]["inputs"]["cfg"] = float("nan")  # JSON NaN passes ComfyUI's range check
    del nan_cfg["6"], nan_cfg["10"], nan_cfg["11"]
    linked = interval_prompt("euler")
    linked["20"] = {"class_type": "PrimitiveFloat", "inputs": {"value": -3.0}}
    linked["6"]["inputs"]["cfg"] = ["20", 0]  # a link is not range-checked either
    del linked["4"], linked["5"]
    for prompt in (nan_cfg, linked):
        history = server.run_prompt(prompt)
        assert history["status"]["status_str"] == "error"
        errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
        assert errors and "cfg must be a finite number >= 0" in errors[0]["exception_message"]


def test_an_api_prompt_runs_annealing_guidance_and_its_plot(server):
    import reference
    from guidance_schedules.samplers.annealing import convert_official_checkpoint
    if not reference.CHECKPOINT.is_file():
        host_support.skip_or_fail(f"no annealing reference data in {reference.REFERENCE}: {reference.HOW}")
    folder = server.base / "models" / "guidance_schedulers"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "annealing_sdxl.safetensors").exists():
        convert_official_checkpoint(str(reference.CHECKPOINT), str(folder / "annealing_sdxl.safetensors"))
    # A file added while the server runs is offered without a restart.
    combo = server.get("/object_info/AnnealingGuidanceGuider")["AnnealingGuidanceGuider"]["input"]["required"]["scheduler"]
    assert "annealing_sdxl.safetensors" in combo[0]
    model, pos, neg = ["1", 0], ["1", 1], ["1", 2]
    settings = {"scheduler": "annealing_sdxl.safetensors", "lambda": 0.4}
    prompt = {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "AnnealingGuidancePatch", "inputs": {"model": model, **settings}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 3, "steps": 10, "cfg": 1.0, "sampler_name": "euler_cfg_pp",
            "scheduler": "ddim_uniform", "positive": pos, "negative": neg, "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "gs_anneal_patch"}},
        "6": {"class_type": "AnnealingGuidanceGuider", "inputs": {"model": model, "positive": pos, "negative": neg, **settings}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_cfg_pp"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "ddim_uniform", "steps": 10, "denoise": 1.0}},
        "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["9", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["3", 0]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "gs_anneal_guider"}},
        "12": {"class_type": "GuidanceSchedulePlot", "inputs": {"samples": ["10", 0], "guider": ["6", 0]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "gs_anneal_plot"}},
    }
    history = server.run_prompt(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    via_patch, via_guider = saved_latent(server, history, "5"), saved_latent(server, history, "11")
    assert torch.isfinite(via_patch).all() and torch.equal(via_patch, via_guider)
    assert server.output_path(history["outputs"]["13"]["images"][0]).stat().st_size > 1000
    assert "Annealing guidance (annealing_sdxl.safetensors, lambda 0.4)" in server.log()

    prompt["4"]["inputs"]["sampler_name"] = "euler"
    failed = server.run_prompt(prompt)
    errors = [m[1] for m in failed["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "Use euler_cfg_pp" in errors[0]["exception_message"]


def adaptive_prompt(linear_ag="none", threshold=0.99):
    """Adaptive Guidance (with an optional LinearAG file) through KSampler (patch) and SamplerCustomAdvanced (guider)."""
    model, pos, neg = ["1", 0], ["1", 1], ["1", 2]
    settings = {"threshold": threshold, "linear_ag": linear_ag}
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "AdaptiveGuidancePatch", "inputs": {"model": model, **settings}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 7, "steps": 8, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "positive": pos, "negative": neg, "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "gs_ag_patch"}},
        "6": {"class_type": "AdaptiveGuidanceGuider", "inputs": {
            "model": model, "positive": pos, "negative": neg, "cfg": 5.0, **settings}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "karras", "steps": 8, "denoise": 1.0}},
        "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["9", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["3", 0]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "gs_ag_guider"}},
    }


def test_an_api_prompt_calibrates_linear_ag_and_runs_adaptive_guidance_with_it(server):
    from guidance_schedules.samplers import linear_ag
    info = server.get("/object_info/AdaptiveGuidanceGuider")["AdaptiveGuidanceGuider"]["input"]
    assert list(info["required"]) == ["model", "positive", "negative", "cfg", "threshold"]
    assert info["required"]["threshold"][1]["default"] == 0.995 and list(info["optional"]) == ["linear_ag"]

    calibrated = server.run_prompt(calibration_prompt("gs_api_euler_8"))
    assert calibrated["status"]["status_str"] == "success", calibrated["status"]
    assert "4 trajectories (2 runs of 2 latents), 8 steps" in calibrated["outputs"]["12"]["text"][0]
    path = server.base / "models" / "linear_ag" / "gs_api_euler_8.safetensors"
    calibrated_file = linear_ag.load(str(path))
    coefficients, fitted_for = calibrated_file.coefficients, calibrated_file.fitted_for
    assert (fitted_for.sampler, fitted_for.steps, fitted_for.runs) == ("sample_euler", 8, 4)
    before = path.read_bytes()
    # Queued again while the file it wrote is there: answered from ComfyUI's cache, the result shown again.
    again = server.run_prompt(calibration_prompt("gs_api_euler_8"))
    assert again["status"]["status_str"] == "success" and "12" in cached_nodes(again), again["status"]
    assert path.read_bytes() == before
    # Removed right after the run that wrote it (to calibrate again): the same prompt runs again, on every
    # host's cache policy, and writes the same fit (same inputs, same seed).
    path.unlink()
    rerun = server.run_prompt(calibration_prompt("gs_api_euler_8"))
    assert rerun["status"]["status_str"] == "success" and "12" not in cached_nodes(rerun), rerun["status"]
    refitted = linear_ag.load(str(path))
    assert torch.equal(refitted.coefficients, coefficients) and refitted.fitted_for == fitted_for
    # Removed and queued again once more: never mistaken for an earlier absence the cache remembers.
    path.unlink()
    assert "12" not in cached_nodes(server.run_prompt(calibration_prompt("gs_api_euler_8"))) and path.exists()
    # Another file under the name (a user's copy): refused, saying so, and left as it is.
    path.write_bytes(before)
    again = server.run_prompt(calibration_prompt("gs_api_euler_8"))
    errors = [m[1] for m in again["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "exists; choose another name" in errors[0]["exception_message"]
    assert path.read_bytes() == before  # nothing a user saved is overwritten

    # The new file is offered without a restart, and both AG nodes sample with it, alike.
    combo = server.get("/object_info/AdaptiveGuidancePatch")["AdaptiveGuidancePatch"]["input"]["optional"]["linear_ag"]
    assert combo[0] == ["none", "gs_api_euler_8.safetensors"]
    history = server.run_prompt(adaptive_prompt("gs_api_euler_8.safetensors", threshold=2.0))
    assert history["status"]["status_str"] == "success", history["status"]
    via_patch, via_guider = saved_latent(server, history, "5"), saved_latent(server, history, "11")
    assert torch.isfinite(via_patch).all() and torch.equal(via_patch, via_guider)
    assert "LinearAG estimated the unconditional pass at 4 steps" in server.log()

    # The same graph in this process, with the same coefficients, gives the same latents.
    import nodes as comfy_nodes
    import tiny_models
    from guidance_schedules.nodes.guidance import Schedule, patch_model
    from guidance_schedules.samplers.adaptive import AdaptiveSchedule
    model = patch_model(tiny_models.build_model("eps"),
                        Schedule(lambda run: AdaptiveSchedule(run, 2.0, calibrated_file), "in process"))
    expected = comfy_nodes.KSampler().sample(model, 7, 8, 5.0, "euler", "karras", tiny_models.build_conditioning(1),
                                             tiny_models.build_conditioning(2),
                                             {"samples": torch.zeros(2, tiny_models.CHANNELS, 8, 8)}, 1.0)[0]["samples"]
    assert (via_patch - expected).abs().max().item() <= 1e-5

    # The file replaced under the same name (other coefficients) is read again by the same prompt.
    path.unlink()
    linear_ag.save(linear_ag.Fit(coefficients * 0.5, torch.zeros(8, dtype=torch.float64)), fitted_for, str(path))
    replaced = server.run_prompt(adaptive_prompt("gs_api_euler_8.safetensors", threshold=2.0))
    assert (saved_latent(server, replaced, "5") - via_patch).abs().max().item() > 1e-4

    plain = server.run_prompt(adaptive_prompt())
    assert plain["status"]["status_str"] == "success", plain["status"]
    assert torch.equal(saved_latent(server, plain, "5"), saved_latent(server, plain, "11"))
    assert "Adaptive guidance (threshold 0.99) (sample_euler, edm)" in server.log()


def test_a_scheduler_file_replaced_under_the_same_name_is_read_again(server):
    """ComfyUI's cache must not serve the old network once the file changed (the cache key follows the file)."""
    import json
    import reference
    from safetensors import safe_open
    from safetensors.torch import save_file
    from guidance_schedules.samplers.annealing import convert_official_checkpoint
    if not reference.CHECKPOINT.is_file():
        host_support.skip_or_fail(f"no annealing reference data in {reference.REFERENCE}: {reference.HOW}")
    folder = server.base / "models" / "guidance_schedulers"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "replaced.safetensors"
    path.unlink(missing_ok=True)
    convert_official_checkpoint(str(reference.CHECKPOINT), str(path))
    prompt = {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "AnnealingGuidancePatch", "inputs": {"model": ["1", 0], "scheduler": "replaced.safetensors",
                                                                 "lambda": 0.4}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 3, "steps": 6, "cfg": 1.0, "sampler_name": "euler_cfg_pp",
            "scheduler": "ddim_uniform", "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["3", 0],
            "denoise": 1.0}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "gs_replaced"}},
    }
    first = saved_latent(server, server.run_prompt(prompt), "5")
    with safe_open(str(path), framework="pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    network = json.loads(meta["network"])
    network["w_bias"] = network["w_bias"] + 0.5  # another network under the same name
    meta["network"] = json.dumps(network)
    path.unlink()
    save_file(state, str(path), metadata=meta)
    history = server.run_prompt(prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    assert (saved_latent(server, history, "5") - first).abs().max().item() > 1e-4


@pytest.mark.parametrize("name,shown", [("bad\x00name", "control characters"), ("x" * 300, "at most 120 characters")])
def test_a_calibration_name_no_file_system_takes_is_refused_by_name(server, name, shown):
    history = server.run_prompt(calibration_prompt(name))
    assert history["status"]["status_str"] == "error"
    errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["exception_message"].startswith("name: ") and shown in errors[0]["exception_message"]
    assert len(errors[0]["exception_message"]) < 400


def test_warnings_reach_the_ui_client_and_the_frontend_extension_is_served(server):
    prompt = interval_prompt("euler", {"sigma_hi": 900.0, "sigma_lo": 500.0})  # bounds that select no step
    _, events = server.run_prompt_with_events(prompt)
    warnings = [e["data"]["message"] for e in events if e["type"] == "guidance_schedules.warning"]
    assert warnings and "select none of this run's 8 steps" in warnings[0]
    extensions = server.get("/extensions")
    script = next(e for e in extensions if e.endswith("/guidance_schedules.js"))
    with urllib.request.urlopen(server.url + script, timeout=30) as r:
        source = r.read().decode()
    assert "guidance_schedules.warning" in source and "LinearAGCalibrate" in source


def test_calibration_logs_one_line_for_all_its_runs(server):
    history = server.run_prompt(calibration_prompt("gs_api_log_once"))
    assert history["status"]["status_str"] == "success", history["status"]
    log = server.log()
    assert log.count("LinearAG calibration: wrote") == 1
    assert "LinearAG calibration (sample_euler" not in log  # no line per sampling run


def test_the_plot_refuses_a_run_of_another_model_when_the_prompt_is_queued_again(server):
    """The AG patch example's shape: re-queued with the KSampler wired to the unpatched model, the plot
    (whose inputs did not change) must not show the earlier run."""
    prompt = adaptive_prompt()
    prompt["13"] = {"class_type": "GuidanceSchedulePlot", "inputs": {"samples": ["4", 0], "model": ["2", 0]}}
    prompt["14"] = {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "gs_plot_wiring"}}
    first = server.run_prompt(prompt)
    assert first["status"]["status_str"] == "success", first["status"]
    prompt["4"]["inputs"]["model"] = ["1", 0]  # the KSampler now samples the unpatched model
    again = server.run_prompt(prompt)
    errors = [m[1] for m in again["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_id"] == "13"
    assert "'samples' was not made with the model connected here" in errors[0]["exception_message"]


@pytest.mark.parametrize("steps, denoise", [(1, 1.0), (8, 0.0)])
def test_a_calibration_with_fewer_than_two_steps_is_refused_before_any_work(server, steps, denoise):
    """One step (nothing to fit: LinearAG estimates odd steps from the step before) or none (denoise 0): refused
    naming the sigmas, and no file is written (queuing it again is not refused for the name)."""
    name = f"gs_api_too_short_{steps}_{int(denoise)}"
    for _ in range(2):
        prompt = calibration_prompt(name)
        prompt["8"]["inputs"].update(steps=steps, denoise=denoise)
        history = server.run_prompt(prompt)
        errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
        assert errors and errors[0]["exception_message"].startswith("sigmas: LinearAG calibration needs a run of at "
                                                                      "least 2 steps"), errors
        assert not (server.base / "models" / "linear_ag" / f"{name}.safetensors").exists()
