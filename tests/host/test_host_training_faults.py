"""The trainer and the calibration under bad input, changed inputs and faults: nothing a user made or asked for
is lost or silently wrong. Through the API where a user's prompt can cause it; in process where a fault must be
injected (a file appearing mid-training, a full disk)."""
import errno
import logging

import pytest
import torch
from safetensors.torch import load_file

import comfy.model_management
import comfy.samplers
import folder_paths
import tiny_models
from guidance_schedules.nodes import adaptive as adaptive_nodes
from guidance_schedules.nodes import annealing_train
from guidance_schedules.nodes.adaptive import LinearAGCalibrate
from guidance_schedules.nodes.annealing_train import AnnealingGuidanceTrain
from guidance_schedules.samplers import files as pack_files
from prompts import calibration_prompt, training_prompt


def errors_of(history):
    return [m[1]["exception_message"] for m in history["status"]["messages"] if m[0] == "execution_error"]


def folder_of(server, name):
    path = server.base / "models" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- through the API ----------------------------------------------------------------------------------

# 90 CJK characters and 70 emoji are within 120 characters but not within a file system's 255 bytes
BAD_NAMES = [("名" * 90, "too long for the file system"), ("😀" * 70, "too long for the file system"),
             ("a/", "not empty and do not start with a dot"), (".", "not empty and do not start with a dot"),
             ("sub/.hidden", "not empty and do not start with a dot")]


def test_a_checkpoint_another_process_is_writing_is_never_taken_over(comfy_server):
    """Two servers sharing a models folder: while another process trains under a name (its lock beside the
    .resume), a training queued under that name is refused, saying why, and neither its checkpoint nor its lock is
    touched; a lock left by a process that is gone is taken over, and the training removes it when done."""
    import socket
    import subprocess
    import sys
    folder = folder_of(comfy_server, "guidance_schedulers")
    resume, lock = folder / "gs_shared.resume", folder / "gs_shared.resume.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        resume.write_bytes(b"the other process's live checkpoint")
        lock.write_text(f"{socket.gethostname()} {other.pid}")
        errors = errors_of(comfy_server.run_prompt(training_prompt("gs_shared")))
        assert errors and "gs_shared.resume is being written by another process" in errors[0], errors
        assert f"pid {other.pid}" in errors[0]
        assert resume.read_bytes() == b"the other process's live checkpoint" and lock.is_file()
    finally:
        other.kill()
        other.wait()
    resume.unlink()  # the other process finished (its checkpoint gone) but left its lock: it is gone, so it is stale
    history = comfy_server.run_prompt(training_prompt("gs_shared"))
    assert history["status"]["status_str"] == "success", errors_of(history)
    assert (folder / "gs_shared.safetensors").is_file() and not lock.exists() and not resume.exists()


@pytest.mark.parametrize("name,why", BAD_NAMES)
def test_a_name_the_file_system_refuses_is_refused_before_any_work(comfy_server, name, why):
    for prompt, folder in ((training_prompt(name), "guidance_schedulers"), (calibration_prompt(name), "linear_ag")):
        before = sorted(p.name for p in folder_of(comfy_server, folder).rglob("*"))
        history = comfy_server.run_prompt(prompt)
        errors = errors_of(history)
        assert errors and errors[0].startswith("name: ") and why in errors[0], errors
        assert sorted(p.name for p in folder_of(comfy_server, folder).rglob("*")) == before  # not even a .resume
        assert tiny_models is not None


def test_zero_latents_and_non_finite_inputs_are_refused_by_name(comfy_server):
    folder = folder_of(comfy_server, "guidance_schedulers")
    cases = [
        (training_prompt("zero", latent=("GSTestLatent", {"batch_size": 0, "fill": "zeros"})),
         "latents: there are no training latents"),
        (training_prompt("nan_latent", latent=("GSTestLatent", {"batch_size": 2, "fill": "nan"})),
         "latents: the training latents hold NaN"),
        (training_prompt("nan_setting", delta_normalization=float("nan")),  # ComfyUI's JSON and checks let NaN in
         "delta_normalization must be a finite number > 0"),
        (training_prompt("nan_rate", learning_rate=float("nan")), "learning_rate must be a finite number > 0"),
    ]
    for prompt, message in cases:
        errors = errors_of(comfy_server.run_prompt(prompt))
        assert errors and errors[0].startswith(message), (message, errors)
    assert not [p for p in folder.iterdir() if p.stem in ("zero", "nan_latent", "nan_setting", "nan_rate")]


@pytest.mark.parametrize("fault,message", [
    ("returns_nan", "the model's predictions at sigma .* are not finite .NaN or infinite.; the training stopped"),
    ("no_gradient", "model: its predictions carry no gradient")])
def test_a_model_that_returns_nan_or_no_gradient_stops_the_training_and_writes_nothing(comfy_server, fault, message):
    import re
    prompt = training_prompt(f"faulty_{fault}", model=("GSTestFaultyModel", {"fault": fault}), training_images=8)
    errors = errors_of(comfy_server.run_prompt(prompt))
    assert errors and re.search(message, errors[0]), errors
    assert not list(folder_of(comfy_server, "guidance_schedulers").glob(f"faulty_{fault}*"))


def test_fewer_images_than_a_batch_or_an_optimizer_step_is_said(comfy_server):
    prompt = training_prompt("few_images", training_images=3, gradient_accumulation=2)
    _, events = comfy_server.run_prompt_with_events(prompt)
    warnings = [e["data"]["message"] for e in events if e.get("type") == "guidance_schedules.warning"]
    assert any("not a whole number of batches of 2; 4 images are trained" in w for w in warnings), warnings
    assert any("fewer than one optimizer step" in w for w in warnings), warnings


# --- in process, with the fault injected ------------------------------------------------------------------

def train_inputs(name, **overrides):
    inputs = dict(model=tiny_models.build_model("eps"), latents={"samples": torch.randn(3, 4, 8, 8,
                                                                                        generator=torch.Generator().manual_seed(0))},
                  positive=[tiny_models.build_conditioning(1)], negative=[tiny_models.build_conditioning(2)], steps=10,
                  scheduler="auto", training_images=16, batch_size=2, gradient_accumulation=2, learning_rate=1e-3,
                  weight_decay=0.01, seed=7, delta_normalization=5.0, prompt_noise=True, name=name)
    inputs.update(overrides)
    # INPUT_IS_LIST: every input arrives as a list; positive and negative are given as lists of conditionings
    return {k: v if k in ("positive", "negative") else [v] for k, v in inputs.items()}


def run_node(**inputs):
    with torch.inference_mode():  # as ComfyUI runs every node
        return AnnealingGuidanceTrain().train(**inputs)


def interrupted(monkeypatch, name, after_examples=11, **overrides):
    """A training interrupted after some examples (2 optimizer steps and more): its .resume is left."""
    calls = {"n": 0}
    check = comfy.model_management.throw_exception_if_processing_interrupted

    def interrupt():
        calls["n"] += 1
        if calls["n"] == after_examples:
            raise comfy.model_management.InterruptProcessingException()
        check()
    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted", interrupt)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node(**train_inputs(name, **overrides))
    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted", check)


def test_a_resume_on_other_conditioning_or_another_model_is_refused_by_name(scheduler_folder, monkeypatch):
    interrupted(monkeypatch, "mixed")
    assert (scheduler_folder / "mixed.resume").is_file()
    other_model = tiny_models.build_model("eps")
    other_model.model.diffusion_model.mix.mul_(-1)  # the same family and shapes, other weights
    for changed, expected in ((dict(positive=[tiny_models.build_conditioning(5)]), "other positive"),
                              (dict(negative=[tiny_models.build_conditioning(6)]), "other negative"),
                              (dict(model=other_model), "other model")):
        with pytest.raises(ValueError, match=f"checkpoint of a training with {expected}; queue it with the same"):
            run_node(**train_inputs("mixed", **changed))
    run_node(**train_inputs("mixed"))  # the same inputs resume
    assert (scheduler_folder / "mixed.safetensors").is_file() and not (scheduler_folder / "mixed.resume").exists()


def test_a_file_that_appears_under_the_name_during_training_is_kept_and_so_is_the_network(scheduler_folder,
                                                                                           monkeypatch, caplog):
    original = annealing_train.run_training

    def and_meanwhile(*args, **kwargs):
        original(*args, **kwargs)
        (scheduler_folder / "shared.safetensors").write_bytes(b"another server's network")
    monkeypatch.setattr(annealing_train, "run_training", and_meanwhile)
    with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
        out = run_node(**train_inputs("shared"))
    assert (scheduler_folder / "shared.safetensors").read_bytes() == b"another server's network"
    assert out["result"][0] == "shared_2.safetensors" and "shared.safetensors appeared meanwhile" in out["ui"]["text"][0]
    assert load_file(str(scheduler_folder / "shared_2.safetensors"))
    assert "written as shared_2.safetensors" in caplog.text and not (scheduler_folder / "shared.resume").exists()


def test_a_failed_final_write_keeps_the_training_and_a_second_queue_writes_it(scheduler_folder, monkeypatch):
    run_node(**train_inputs("straight"))
    original = pack_files.save_file

    def full_disk(tensors, filename, metadata=None):
        if metadata and metadata.get("format") == "guidance_schedules/annealing_scheduler":
            with open(filename, "wb") as f:
                f.write(b"\x00" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(tensors, filename, metadata=metadata)
    monkeypatch.setattr(pack_files, "save_file", full_disk)
    with pytest.raises(ValueError, match="name: could not write full.safetensors .No space left on device.; the "
                                         "trained network is kept in full.resume"):
        run_node(**train_inputs("full"))
    assert not (scheduler_folder / "full.safetensors").exists()
    assert sorted(p.name for p in scheduler_folder.iterdir()) == ["full.resume", "straight.safetensors"]
    monkeypatch.setattr(pack_files, "save_file", original)
    run_node(**train_inputs("full"))
    straight, full = load_file(str(scheduler_folder / "straight.safetensors")), load_file(str(scheduler_folder / "full.safetensors"))
    assert straight.keys() == full.keys() and all(torch.equal(straight[k], full[k]) for k in straight)


def test_conditioning_that_is_not_one_per_latent_is_said(scheduler_folder, caplog):
    several = [[*tiny_models.build_conditioning(1), *tiny_models.build_conditioning(3)]]  # 2 entries, 3 latents
    with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
        run_node(**train_inputs("said", positive=several, training_images=4,
                                negative=[tiny_models.build_conditioning(2), tiny_models.build_conditioning(4)]))
    assert "one conditioning of 2 entries for 3 latents, so every image trains with all of them" in caplog.text
    assert "2 negative conditionings were given; the first is the null prompt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
        run_node(**train_inputs("empty", positive=[[]], training_images=4))
    assert "positive holds an empty conditioning" in caplog.text


def test_a_calibration_keeps_its_fit_when_a_file_takes_its_name_meanwhile(monkeypatch, tmp_path):
    folder = tmp_path / "linear_ag"
    paths, extensions = folder_paths.folder_names_and_paths[adaptive_nodes.LINEAR_AG_FOLDER]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, adaptive_nodes.LINEAR_AG_FOLDER,
                        ([str(folder), *paths], extensions))
    original = adaptive_nodes.linear_ag_files.NormalEquations.fit

    def and_meanwhile(equations):  # the file appears while the fit is being made, after the runs
        folder.mkdir(exist_ok=True)
        (folder / "taken.safetensors").write_bytes(b"a user's calibration")
        return original(equations)
    monkeypatch.setattr(adaptive_nodes.linear_ag_files.NormalEquations, "fit", and_meanwhile)
    model = tiny_models.build_model("eps")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", 6)
    with torch.inference_mode():
        out = LinearAGCalibrate().calibrate(model, tiny_models.build_conditioning(1), tiny_models.build_conditioning(2),
                                            5.0, comfy.samplers.sampler_object("euler"), sigmas,
                                            {"samples": torch.zeros(1, 4, 8, 8)}, 1, 0, "taken")
    assert (folder / "taken.safetensors").read_bytes() == b"a user's calibration"
    assert (folder / "taken_2.safetensors").is_file() and "taken.safetensors appeared meanwhile" in out["ui"]["text"][0]


def test_a_resume_in_another_process_recognises_the_same_model():
    """A resume comes after a restart or a kill, in another process: the model's fingerprint (a LoRA-like weight
    patch on it included) must not depend on the process, such as Python's per-process salt of str hashes."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    tests = Path(__file__).resolve().parents[1]
    script = (f"import sys; sys.path[:0] = [{str(tests.parent)!r}, {str(tests)!r}]\n"
              "import host_support; host_support.require_comfyui()\n"
              "import torch, tiny_models\n"
              "from guidance_schedules.nodes.annealing_train import model_fingerprint\n"
              "model = tiny_models.build_model('eps')\n"
              "model.add_patches({'diffusion_model.mix': (torch.ones(8, 4),)}, 0.5)\n"
              "print(model_fingerprint(model))\n")
    prints = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip().splitlines()[-1:]
              for seed in ("1", "2")]
    assert prints[0] and prints[0] == prints[1], prints
    model = tiny_models.build_model("eps")
    model.add_patches({"diffusion_model.mix": (torch.ones(8, 4),)}, 0.5)
    assert prints[0] == [annealing_train.model_fingerprint(model)]  # and the same as in this process
