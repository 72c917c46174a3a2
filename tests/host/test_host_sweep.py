"""The pack's run records over the API, and scripts/sweep.py against a real ComfyUI server."""
import json
import signal
import subprocess
import sys
import time

import pytest

from sweep_support import STEPS, SWEEP, between, karras_grid, read_runs



@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def workflow(steps=STEPS):
    """Tiny model -> interval patch -> KSampler -> a small picture of the latent -> SaveImage (API format)."""
    s = karras_grid()
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "GuidanceIntervalPatch", "inputs": {
            "model": ["1", 0], "sigma_hi": between(s[1], s[2]), "sigma_lo": between(s[5], s[6])},
            "_meta": {"title": "Interval"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 0, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["3", 0], "denoise": 1.0},
            "_meta": {"title": "KSampler"}},
        "5": {"class_type": "GSTestLatentToImage", "inputs": {"samples": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "gs_sweep"}},
    }


def sweep(tmp_path, server, *args, workflow_file=None):
    if workflow_file is None:
        workflow_file = tmp_path / "workflow.json"
        workflow_file.write_text(json.dumps(workflow()))
    return subprocess.run([sys.executable, str(SWEEP), str(workflow_file), "--server", server.url, *args],
                          capture_output=True, text=True, timeout=600)


def test_a_prompt_reports_what_guidance_did_over_the_websocket_and_get(server):
    prompt_id, events = server.run_prompt_with_events(workflow())
    records = server.get(f"/guidance_schedules/runs?prompt_id={prompt_id}")
    sent = [e["data"] for e in events if e["type"] == "guidance_schedules.run"]
    assert len(sent) == 1 and records == sent
    record = records[0]
    s = karras_grid()
    guided = [i for i in range(STEPS) if between(s[5], s[6]) < s[i] <= between(s[1], s[2])]
    assert (record["prompt_id"], record["node"], record["method"]) == (prompt_id, "4", "interval")
    patch_inputs = workflow()["2"]["inputs"]
    assert record["settings"] == {"sigma_hi": patch_inputs["sigma_hi"], "sigma_lo": patch_inputs["sigma_lo"]}
    assert (record["sampler"], record["steps"], record["cfg"], record["batch_size"]) == ("sample_euler", STEPS, 5.0, 1)
    assert record["guided_steps"] == [guided]
    assert record["weights"] == [[5.0 if i in guided else 1.0 for i in range(STEPS)]]
    assert (record["evaluations"], record["uncond_evaluations"]) == (STEPS, len(guided))
    assert server.get("/guidance_schedules/runs?prompt_id=no-such-prompt") == []


def test_a_grid_sweep_records_every_run_and_a_second_run_queues_nothing(tmp_path, server):
    out = tmp_path / "out"
    s = karras_grid()
    his = [between(s[1], s[2]), between(s[3], s[4])]
    done = sweep(tmp_path, server, "--set", f"Interval.sigma_hi={his[0]!r},{his[1]!r}", "--set", "4.cfg=1,5",
                 "--seeds", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    runs = read_runs(out)
    assert len(runs) == 8 and all(r["status"] == "success" for r in runs)
    lo = between(s[5], s[6])
    for r in runs:
        hi, cfg = r["settings"]["Interval.sigma_hi"], r["settings"]["4.cfg"]
        guided = sum(lo < s[i] <= hi for i in range(STEPS))
        # euler: one evaluation per step; cfg 1 runs no unconditional pass (ComfyUI's shortcut)
        assert (r["evaluations"], r["uncond_evaluations"]) == (STEPS, 0 if cfg == 1 else guided), r
        assert len(r["images"]) == 1 and (out / r["images"][0]).stat().st_size > 0
        assert r["seconds"] is not None and r["seconds"] >= 0
    assert sorted({r["seed"] for r in runs}) == [0, 1]
    csv_lines = (out / "runs.csv").read_text().splitlines()
    assert csv_lines[0] == ("prompt_id,status,server,seed,Interval.sigma_hi,4.cfg,seconds,evaluations,"
                            "uncond_evaluations,images,message")
    assert all(r["server"] == server.url for r in runs)
    assert len(csv_lines) == 9
    from PIL import Image
    with Image.open(out / "sheet.png") as sheet:
        # the first axis across (2 cells of 256 px after a 170 px label column); the other axis and the seeds
        # down, 2 x 2 rows, each a 64 px square picture scaled to 248 px, a margin and a 30 px caption
        assert sheet.size == (170 + 2 * 256, 36 + 4 * (248 + 8 + 30))
    again = sweep(tmp_path, server, "--set", f"Interval.sigma_hi={his[0]!r},{his[1]!r}", "--set", "4.cfg=1,5",
                  "--seeds", "2", "--out", str(out))
    assert again.returncode == 0 and "8 done before, 0 to queue" in again.stderr
    assert [r["prompt_id"] for r in read_runs(out)] == [r["prompt_id"] for r in runs]


def test_a_value_the_server_refuses_is_one_error_row_and_the_others_succeed(tmp_path, server):
    out = tmp_path / "out"
    done = sweep(tmp_path, server, "--set", "4.cfg=5,-3", "--out", str(out))
    assert done.returncode == 1
    runs = {r["settings"]["4.cfg"]: r for r in read_runs(out)}
    assert runs[5]["status"] == "success"
    assert runs[-3]["status"] == "error" and "cfg" in runs[-3]["message"]  # refused by the server's range check
    assert runs[-3]["server"] == server.url
    assert "error" in (out / "runs.csv").read_text()


def test_a_choice_the_server_does_not_have_is_refused_before_anything_is_queued(tmp_path, server):
    out = tmp_path / "out"
    done = sweep(tmp_path, server, "--set", "KSampler.sampler_name=euler,no_such_sampler", "--out", str(out))
    assert done.returncode == 2
    assert f"{server.url} has no sampler_name 'no_such_sampler' (node 4, KSampler)" in done.stderr
    assert not (out / "runs.json").exists()


def test_an_interrupted_sweep_keeps_its_finished_runs_and_resumes(tmp_path, server):
    out = tmp_path / "out"
    workflow_file = tmp_path / "slow.json"
    workflow_file.write_text(json.dumps(workflow(steps=400)))  # about a second a run on the CPU
    args = [sys.executable, str(SWEEP), str(workflow_file), "--server", server.url, "--seeds", "6", "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "runs.json").is_file() and any(r["status"] == "success" for r in read_runs(out)):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    first = {r["seed"]: r for r in read_runs(out)}
    finished = {seed for seed, r in first.items() if r["status"] == "success"}
    assert 1 <= len(finished) < 6, first
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} done before, {6 - len(finished)} to queue" in resumed.stderr
    after = {r["seed"]: r for r in read_runs(out)}
    assert all(r["status"] == "success" for r in after.values())
    assert all(after[seed]["prompt_id"] == first[seed]["prompt_id"] for seed in finished)


def test_usage_errors_name_what_is_wrong(tmp_path, server):
    bad = sweep(tmp_path, server, "--set", "NoSuchNode.cfg=1,2", "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and "no node with id or title 'NoSuchNode'" in bad.stderr
    bad = sweep(tmp_path, server, "--set", "KSampler.model=1", "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and "is a link from another node" in bad.stderr
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    bad = sweep(tmp_path, server, "--out", str(tmp_path / "o"), workflow_file=ui)
    assert bad.returncode == 2 and "not an API-format workflow" in bad.stderr


def test_a_changed_workflow_is_new_runs_and_a_second_grid_adds_to_the_folder(tmp_path, server):
    """A folder accumulates: the same --set over a changed workflow (9 steps instead of 8) runs again, and a
    second grid into the same --out (another cfg) leaves the first grid's rows recorded; the sheet shows the grid
    of the command."""
    out = tmp_path / "out"
    first = sweep(tmp_path, server, "--set", "4.cfg=4,5", "--out", str(out))
    assert first.returncode == 0, first.stderr
    nine = tmp_path / "nine.json"
    nine.write_text(json.dumps(workflow(steps=9)))
    changed = sweep(tmp_path, server, "--set", "4.cfg=4,5", "--out", str(out), workflow_file=nine)
    assert changed.returncode == 0 and "0 done before, 2 to queue" in changed.stderr, changed.stderr
    assert "2 earlier runs" in changed.stderr and "a changed workflow is new runs" in changed.stderr
    runs = read_runs(out)
    assert len(runs) == 4 and sorted(r["evaluations"] for r in runs) == [8, 8, 9, 9]
    other = sweep(tmp_path, server, "--set", "4.cfg=6", "--out", str(out), workflow_file=nine)
    assert other.returncode == 0, other.stderr
    runs = read_runs(out)
    assert sorted((r["evaluations"], r["settings"]["4.cfg"]) for r in runs) == [(8, 4), (8, 5), (9, 4), (9, 5), (9, 6)]
    assert len((out / "runs.csv").read_text().splitlines()) == 6
    from PIL import Image
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.size[0] == 170 + 256  # this command's grid: one cell across


def test_a_finished_sweep_whose_images_were_removed_runs_them_again(tmp_path, server):
    out = tmp_path / "out"
    assert sweep(tmp_path, server, "--seeds", "2", "--out", str(out)).returncode == 0
    before = {r["seed"]: r for r in read_runs(out)}
    (out / before[1]["images"][0]).unlink()
    again = sweep(tmp_path, server, "--seeds", "2", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "1 done before, 1 to queue" in again.stderr and "images are gone" in again.stderr
    after = {r["seed"]: r for r in read_runs(out)}
    assert after[0]["prompt_id"] == before[0]["prompt_id"] and after[1]["prompt_id"] != before[1]["prompt_id"]
    assert all((out / r["images"][0]).is_file() for r in after.values())


def test_an_error_row_holds_comfyuis_own_reason(tmp_path, server):
    out = tmp_path / "out"
    done = sweep(tmp_path, server, "--set", "4.steps=4,100000", "--out", str(out))
    assert done.returncode == 1
    row = next(r for r in read_runs(out) if r["status"] == "error")
    assert "Value 100000 bigger than max of 10000: steps" in row["message"], row["message"]  # not "steps" alone


def test_a_two_expert_split_is_two_run_records_and_the_sweep_adds_them_up(tmp_path, server):
    """Wan 2.2's wiring on the tiny model: two KSamplerAdvanced over one 8-step range (0-4 and 4-8), each model
    patched with the same interval. Each sampler's run is its own record, the guided steps of each its share of
    the one grid's (the bounds are sigmas), and the sweep's evaluation columns are their sum for the prompt."""
    s = karras_grid()
    hi, lo = between(s[1], s[2]), between(s[5], s[6])
    prompt = {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "GuidanceIntervalPatch", "inputs": {"model": ["1", 0], "sigma_hi": hi, "sigma_lo": lo}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["2", 0], "add_noise": "enable", "noise_seed": 0, "steps": STEPS, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "karras", "positive": ["1", 1], "negative": ["1", 2],
            "latent_image": ["3", 0], "start_at_step": 0, "end_at_step": 4, "return_with_leftover_noise": "enable"}},
        "5": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["2", 0], "add_noise": "disable", "noise_seed": 0, "steps": STEPS, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "karras", "positive": ["1", 1], "negative": ["1", 2],
            "latent_image": ["4", 0], "start_at_step": 4, "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
        "6": {"class_type": "GSTestLatentToImage", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "gs_split"}},
    }
    prompt_id, _ = server.run_prompt_with_events(prompt)
    first, second = server.get(f"/guidance_schedules/runs?prompt_id={prompt_id}")
    guided = [i for i in range(STEPS) if lo < s[i] <= hi]
    assert (first["node"], first["steps"], first["guided_steps"]) == ("4", 4, [[i for i in guided if i < 4]])
    assert (second["node"], second["steps"], second["guided_steps"]) == ("5", 4, [[i - 4 for i in guided if i >= 4]])
    workflow_file = tmp_path / "split.json"
    workflow_file.write_text(json.dumps(prompt))
    out = tmp_path / "out"
    # another seed than the prompt above: an identical prompt is answered from ComfyUI's cache, which samples nothing
    assert sweep(tmp_path, server, "--seeds", "7,9", "--out", str(out), workflow_file=workflow_file).returncode == 0
    for row in read_runs(out):
        assert (row["evaluations"], row["uncond_evaluations"]) == (STEPS, len(guided)) and len(row["records"]) == 2
