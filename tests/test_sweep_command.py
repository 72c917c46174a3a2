"""scripts/sweep.py as a user meets it, where no server is needed: what it makes of its arguments and files, and
what it refuses (exit 2, one line naming the value) before anything reaches a server.

The sweep against real ComfyUI servers is tests/host/test_host_sweep.py and test_host_sweep_servers.py."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import pytest

from sweep_support import SWEEP, sweep_module
WORKFLOW = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
    "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 5, "steps": 4, "cfg": 5.0,
                                               "sampler_name": "euler", "scheduler": "karras"},
          "_meta": {"title": "KSampler"}},
}


def command(tmp_path, *args, workflow=None, timeout=60):
    path = tmp_path / "workflow.json"
    if workflow is None:
        path.write_text(json.dumps(WORKFLOW))
    elif isinstance(workflow, bytes):
        path.write_bytes(workflow)
    else:
        path = workflow
    return subprocess.run([sys.executable, str(SWEEP), str(path), *args], capture_output=True, text=True,
                          timeout=timeout)


def refused(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_a_runs_key_covers_the_whole_prompt_but_its_seeds():
    sweep = sweep_module()
    axes = [sweep.parse_axis(WORKFLOW, "KSampler.cfg=5,7")]
    keys = {r.key for r in sweep.grid(WORKFLOW, axes, [1, 2])}
    assert len(keys) == 4
    nine_steps = json.loads(json.dumps(WORKFLOW))
    nine_steps["4"]["inputs"]["steps"] = 9
    assert not keys & {r.key for r in sweep.grid(nine_steps, axes, [1, 2])}  # another workflow: new runs
    other_seed = json.loads(json.dumps(WORKFLOW))
    other_seed["4"]["inputs"]["seed"] = 123  # what --seeds overwrites does not count
    assert keys == {r.key for r in sweep.grid(other_seed, axes, [1, 2])}


def test_each_distinct_cell_runs_once_values_compared_as_numbers():
    sweep = sweep_module()
    axis = sweep.parse_axis(WORKFLOW, "4.cfg=5,5,5.0,7")
    assert axis.values == (5, 7)
    assert sweep.parse_seeds("3,3,4") == [3, 4]
    assert sweep.parse_axis(WORKFLOW, "1.ckpt_name=true,1,True").values == (True, 1)  # true is no number


def test_an_axis_on_a_seed_input_is_refused_naming_seeds(tmp_path):
    refused(command(tmp_path, "--set", "KSampler.seed=11,12", "--out", str(tmp_path / "out")), "--seeds 11,12")
    assert not (tmp_path / "out").exists()


def test_a_grid_too_large_is_refused_with_its_size_before_it_is_made(tmp_path):
    started = time.monotonic()
    result = command(tmp_path, "--seeds", "20000000", "--out", str(tmp_path / "out"))
    refused(result, "20,000,000 runs", "--yes")
    assert time.monotonic() - started < 20 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "not json", "not a record"])
def test_a_runs_json_that_cannot_be_read_is_named_and_nothing_is_touched(tmp_path, damage):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    text = {"truncated": '{"axes": [], "runs": [{"key": "ab', "not json": "\x00\x01garbage",
            "not a record": '{"runs": [1, 2]}'}[damage]
    (out / "runs.json").write_text(text)
    (out / "images" / "kept.png").write_bytes(b"png")
    refused(command(tmp_path, "--out", str(out), "--server", "http://127.0.0.1:9"), str(out / "runs.json"),
            "move it away")
    assert (out / "runs.json").read_text() == text and sorted(p.name for p in out.rglob("*")) == [
        "images", "kept.png", "runs.json"]


def png_with_prompt(prompt: dict | None) -> bytes:
    """A PNG as ComfyUI's SaveImage writes it: the prompt (and workflow) as tEXt chunks."""
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    text = b"" if prompt is None else chunk(b"tEXt", b"prompt\0" + json.dumps(prompt).encode("latin-1")) + \
        chunk(b"tEXt", b"workflow\0{}")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + text +
            chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("saved_as", ["utf-16", "utf-8-sig", "png"])
def test_a_workflow_saved_as_utf16_with_a_bom_or_in_a_png_is_read(tmp_path, saved_as):
    sweep = sweep_module()
    path = tmp_path / "saved"
    path.write_bytes(png_with_prompt(WORKFLOW) if saved_as == "png" else json.dumps(WORKFLOW).encode(saved_as))
    assert sweep.read_workflow(str(path)) == WORKFLOW


@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n", "PNG without a workflow"), (bytes(range(256)) * 4, "is not a workflow"),
    (json.dumps({"1": {"class_type": "KSampler", "inputs": None}}).encode(), "node 1 (KSampler) has inputs None")])
def test_other_files_are_refused_naming_what_they_are(tmp_path, content, words):
    if content == b"\x89PNG\r\n\x1a\n":
        content = png_with_prompt(None)
    refused(command(tmp_path, "--out", str(tmp_path / "out"), workflow=content), words)


@pytest.mark.parametrize("address", ["http://[::1", "http://127.0.0.1:port"])
def test_a_server_address_that_is_no_address_is_refused_naming_it(tmp_path, address):
    refused(command(tmp_path, "--server", address, "--out", str(tmp_path / "out")), repr(address))


def test_ctrl_c_while_the_servers_are_checked_writes_nothing(tmp_path):
    """A server that accepts connections and never answers: the check waits; Ctrl-C there ends the command with
    130, no traceback, and the new --out folder is not made."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(listener.accept() for _ in range(2)), daemon=True).start()
    out = tmp_path / "new_out"
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(WORKFLOW))
    process = subprocess.Popen([sys.executable, str(SWEEP), str(path), "--server",
                                f"http://127.0.0.1:{listener.getsockname()[1]}", "--out", str(out)],
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held, "the command never asked the server"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        listener.close()
    assert process.returncode == 130 and "Traceback" not in err, err
    assert not out.exists()
