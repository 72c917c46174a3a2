"""scripts/sweep.py over several real ComfyUI servers (loopback ports, the tiny test model): one grid spread
over three, one behind a reverse proxy under a path, servers killed, restarted and hung mid-sweep (one of
them coming back while its runs are on their way to another), a connection that is sent no more events,
Ctrl-C and a resume on another set of servers, servers that lack a node or a checkpoint refused by name.

What ran where is read from each server's own history (the prompts it executed, with their inputs), not
from the sweep's records; the model evaluations of a run from the pack's records on the server that ran it.
"""
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from sweep_support import STEPS, SWEEP, between, karras_grid, read_runs
from comfy_server import ComfyServer
from path_proxy import PathProxy

CFGS = (1, 3, 5)
SEEDS = 2


@pytest.fixture(scope="module")
def servers():
    """A, B and C with the pack and the test helpers; D with the pack alone. Started side by side."""
    started = [ComfyServer(wait=False) for _ in range(3)] + [ComfyServer(packs=("pack",), wait=False)]
    try:
        for server in started:
            server.wait_until_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def gate(tmp_path):
    """A file that the runs of a test wait on while it exists (GSTestWait's hold_while_exists); removed after
    the test whatever happens, so that no server stays held for the tests after it."""
    path = tmp_path / "gate"
    yield path
    path.unlink(missing_ok=True)


def sigma_his():
    s = karras_grid()
    return between(s[1], s[2]), between(s[3], s[4])


def workflow(prefix, wait=0.0, gate=""):
    """Tiny model -> interval patch -> KSampler -> a wait (standing in for a GPU's time; held while `gate`
    exists) -> a small picture -> SaveImage with a prefix of the test's own."""
    s = karras_grid()
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "GuidanceIntervalPatch", "inputs": {
            "model": ["1", 0], "sigma_hi": sigma_his()[0], "sigma_lo": between(s[5], s[6])},
            "_meta": {"title": "Interval"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 0, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "GSTestWait", "inputs": {"samples": ["4", 0], "seconds": wait, "hold_while_exists": gate}},
        "6": {"class_type": "GSTestLatentToImage", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def grid(seeds=SEEDS):
    """The 2 x 3 x 2-seed grid: (sigma_hi, cfg, seed) of every run."""
    return Counter((hi, cfg, seed) for hi in sigma_his() for cfg in CFGS for seed in range(seeds))


def sweep_command(tmp_path, servers, out, flow, *extra, seeds=SEEDS):
    workflow_file = tmp_path / f"{out.name}.json"
    workflow_file.write_text(json.dumps(flow))
    his = sigma_his()
    return [sys.executable, str(SWEEP), str(workflow_file), *[a for s in servers for a in ("--server", s.url)],
            "--set", f"Interval.sigma_hi={his[0]!r},{his[1]!r}", "--set", f"4.cfg={','.join(map(str, CFGS))}",
            "--seeds", str(seeds), "--out", str(out), *extra]


def executed(server, prefix):
    """{prompt id: (sigma_hi, cfg, seed)} of the prompts with this SaveImage prefix the server has executed to
    the end, from its own history."""
    found = {}
    for prompt_id, entry in server.get("/history?max_items=10000").items():
        prompt = entry["prompt"][2]
        if prompt["7"]["inputs"]["filename_prefix"] == prefix and entry["status"].get("status_str") == "success":
            found[prompt_id] = (prompt["2"]["inputs"]["sigma_hi"], prompt["4"]["inputs"]["cfg"], prompt["4"]["inputs"]["seed"])
    return found


def ours(server, prefix):
    """(running, pending) prompt ids with this prefix in the server's queue."""
    queue = server.get("/queue")
    return tuple([item[1] for item in queue[part] if item[2]["7"]["inputs"]["filename_prefix"] == prefix]
                 for part in ("queue_running", "queue_pending"))


def ran_each_run_once(servers, prefix, out, seeds=SEEDS):
    """Every run of the grid executed once over these servers (their own histories), and each row of runs.json
    names the server and prompt that ran it; what each server ran."""
    ran = {s.url: executed(s, prefix) for s in servers}
    assert Counter(v for by_id in ran.values() for v in by_id.values()) == grid(seeds)
    assert all(ran[r["server"]][r["prompt_id"]] == settings_of(r) for r in read_runs(out))
    return ran


def wait_until_full(servers, prefix):
    """Until each server holds two runs of the sweep: one running (held by the gate), one in its queue."""
    wait_for(lambda: all(tuple(map(len, ours(s, prefix))) == (1, 1) for s in servers), "every server full")


def wait_for(condition, what, timeout=240.0):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def expected_evaluations(sigma_hi, cfg):
    """euler: one evaluation a step; the unconditional pass on the steps inside the interval, none at cfg 1
    (ComfyUI's shortcut)."""
    s = karras_grid()
    guided = sum(between(s[5], s[6]) < s[i] <= sigma_hi for i in range(STEPS))
    return STEPS, 0 if cfg == 1 else guided


def settings_of(row):
    return row["settings"]["Interval.sigma_hi"], row["settings"]["4.cfg"], row["seed"]


def held(server, prefix):
    """(sigma_hi, cfg, seed) of the runs with this prefix that the server holds: running or in its queue."""
    queue = server.get("/queue")
    return Counter((item[2]["2"]["inputs"]["sigma_hi"], item[2]["4"]["inputs"]["cfg"], item[2]["4"]["inputs"]["seed"])
                   for part in ("queue_running", "queue_pending") for item in queue[part]
                   if item[2]["7"]["inputs"]["filename_prefix"] == prefix)


class Sweep:
    """The sweep as a background process whose messages are read as they come (a pipe nobody reads would
    stall it); `with Sweep(...)` kills it where the block fails."""

    def __init__(self, command):
        import threading
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if kind is not None and self.process.poll() is None:
            self.process.kill()

    def times(self, text):
        """How many of its lines so far say `text`."""
        return sum(text in line for line in self.lines)

    def said(self, text, after=0):
        """Whether it said `text` more than `after` times (a server under load may have been away before)."""
        return self.times(text) > after

    def wait(self, timeout=300):
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.reader.join(10)
            raise AssertionError(f"the sweep did not end in {timeout} s; it said:\n{''.join(self.lines)[-6000:]}")
        self.reader.join(10)
        return self.process.returncode, "".join(self.lines)


def test_a_grid_spreads_over_three_servers_each_run_once(tmp_path, servers):
    a, b, c, _ = servers
    out = tmp_path / "spread"
    done = subprocess.run(sweep_command(tmp_path, [a, b, c], out, workflow("gs_spread", wait=0.3)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = read_runs(out)
    assert len(rows) == 12 and all(r["status"] == "success" for r in rows)
    ran = ran_each_run_once([a, b, c], "gs_spread", out)
    assert all(ran.values()), {url: len(by_id) for url, by_id in ran.items()}  # each server ran some
    by_url = {s.url: s for s in (a, b, c)}
    for row in rows:
        settings = settings_of(row)
        assert (row["evaluations"], row["uncond_evaluations"]) == expected_evaluations(*settings[:2])
        history = by_url[row["server"]].get(f"/history/{row['prompt_id']}")[row["prompt_id"]]
        saved = [item for output in history["outputs"].values() for item in output.get("images", [])]
        assert len(row["images"]) == len(saved) == 1
        assert (out / row["images"][0]).read_bytes() == by_url[row["server"]].output_path(saved[0]).read_bytes()
    header = (out / "runs.csv").read_text().splitlines()[0]
    assert header.startswith("prompt_id,status,server,seed,Interval.sigma_hi,4.cfg,")
    assert "12 of 12 runs succeeded" in done.stderr


def test_a_server_behind_a_proxy_under_a_path_takes_its_share(tmp_path, servers):
    """B reached through a reverse proxy that serves it under /gpu2 (HTTP and the websocket), A directly: the
    grid spreads over both, each run once; each row names the address the sweep was given, and B's images
    come through the proxy."""
    a, b, _, _ = servers
    out = tmp_path / "proxy"
    with PathProxy(b.url, "/gpu2") as proxy:
        done = subprocess.run(sweep_command(tmp_path, [a, proxy], out, workflow("gs_proxy", wait=0.3)),
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    behind = {a.url: a, proxy.url: b}
    rows = read_runs(out)
    assert len(rows) == 12 and all(r["status"] == "success" for r in rows)
    assert {r["server"] for r in rows} == set(behind)
    ran = {url: executed(server, "gs_proxy") for url, server in behind.items()}
    assert Counter(v for by_id in ran.values() for v in by_id.values()) == grid()
    for row in rows:
        assert ran[row["server"]][row["prompt_id"]] == settings_of(row)
        history = behind[row["server"]].get(f"/history/{row['prompt_id']}")[row["prompt_id"]]
        saved = [item for output in history["outputs"].values() for item in output.get("images", [])]
        assert (out / row["images"][0]).read_bytes() == behind[row["server"]].output_path(saved[0]).read_bytes()


def test_a_server_killed_mid_sweep_its_runs_finish_elsewhere_and_it_is_used_again_once_back(tmp_path, servers, gate):
    a, b, c, _ = servers
    out, seeds = tmp_path / "kill", 4
    with Sweep(sweep_command(tmp_path, [a, b, c], out, workflow("gs_kill", wait=1.0, gate=str(gate)),
                             "--grace", "2", seeds=seeds)) as sweep:
        wait_for(lambda: any(r["server"] == b.url and r["status"] == "success" for r in read_runs(out)),
                 "a run finished on B")
        on_b = held(b, "gs_kill")
        b.kill()
        finished_on_b = Counter(settings_of(r) for r in read_runs(out) if r["server"] == b.url)
        lost = on_b - finished_on_b  # what B held and had not finished (one may have finished meanwhile)
        assert lost
        wait_for(lambda: lost <= Counter(settings_of(r) for r in read_runs(out) if r["server"] in (a.url, c.url)),
                 "B's runs finishing on A and C")
        gate.touch()  # A and C hold on to what they run now, so that runs are still waiting once B is back
        b.restart()  # a fresh process on the same port: an empty queue and history
        wait_for(lambda: held(b, "gs_kill"), "the sweep queueing on B again")
        gate.unlink()
    returncode, stderr = sweep.wait()
    assert returncode == 0, stderr
    rows = read_runs(out)
    assert len(rows) == 12 * seeds // SEEDS and all(r["status"] == "success" for r in rows)
    assert f"{b.url} does not answer" in stderr and f"{b.url} answers again" in stderr
    ran = {s.url: executed(s, "gs_kill") for s in (a, c)}
    ran[b.url] = executed(b, "gs_kill")  # by the restarted B
    assert ran[b.url]  # used again
    before_kill = [r for r in rows if r["server"] == b.url and r["prompt_id"] not in ran[b.url]]
    assert before_kill  # finished on B before it went away, and kept
    every = Counter([settings_of(r) for r in before_kill] + [v for by_id in ran.values() for v in by_id.values()])
    assert every == grid(seeds)  # nothing lost, nothing run twice
    for row in rows:
        if row not in before_kill:
            assert ran[row["server"]][row["prompt_id"]] == settings_of(row)
        assert (row["evaluations"], row["uncond_evaluations"]) == expected_evaluations(*settings_of(row)[:2])


def test_a_server_that_restarts_and_loses_its_queue_gets_those_runs_again(tmp_path, servers, gate):
    """Back before its grace is over: the runs it held are not in its new queue nor its history, so they are
    queued again; it takes them itself, as the first in line (the others are full, held by the gate)."""
    a, b, c, _ = servers
    out = tmp_path / "restart"
    gate.touch()
    with Sweep(sweep_command(tmp_path, [a, b, c], out, workflow("gs_restart", gate=str(gate)),
                             "--grace", "300")) as sweep:
        wait_until_full([a, b, c], "gs_restart")
        lost = held(b, "gs_restart")
        b.kill()
        b.restart()
        wait_for(lambda: sum(held(b, "gs_restart").values()) == 2, "the sweep queueing on B again")
        assert held(b, "gs_restart") == lost
        gate.unlink()
    returncode, stderr = sweep.wait()
    assert returncode == 0, stderr
    ran_each_run_once([a, b, c], "gs_restart", out)


def test_a_server_that_hangs_gives_up_its_runs_and_takes_back_those_no_one_took(tmp_path, servers, gate):
    """B stops (SIGSTOP: its port accepts connections, nothing answers), long enough for the sweep to notice
    and hand its runs on; A and C are full (held by the gate), so the runs still wait when B goes on
    (SIGCONT) with its queue intact: B keeps them, and no run is queued a second time."""
    a, b, c, _ = servers
    out = tmp_path / "hang"
    gate.touch()
    with Sweep(sweep_command(tmp_path, [a, b, c], out, workflow("gs_hang", gate=str(gate)),
                             "--grace", "1", "--heartbeat", "2")) as sweep:
        wait_until_full([a, b, c], "gs_hang")
        on_b = held(b, "gs_hang")
        given, back = sweep.times(f"{b.url} stayed away"), sweep.times(f"{b.url} answers again")
        b.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: sweep.said(f"{b.url} stayed away", given), "its runs going to the others", timeout=120)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: sweep.said(f"{b.url} answers again", back), "the sweep reconnecting", timeout=120)
        # it says so once it has caught up with what B holds: B kept its two runs, and was given nothing more
        assert held(b, "gs_hang") == on_b
        gate.unlink()
    returncode, stderr = sweep.wait()
    assert returncode == 0, stderr
    ran = ran_each_run_once([a, b, c], "gs_hang", out)
    assert Counter(ran[b.url].values()) >= on_b


def test_a_server_back_while_its_run_is_on_its_way_to_another_leaves_it_to_that_one(tmp_path, servers, gate):
    """B stops and its two runs go back in line; A, behind a link that now holds each queued prompt 6 s, takes
    them as its own runs end, and B answers again while they are still on their way to A. B leaves them to
    A (they are out of the line: taking them back would take them out twice) and the sweep goes on; only
    the run B was running when it stopped runs twice (B finishes it too). The gate is closed again before B
    resumes and opened once B answers: else B, resumed, ends its run at once and starts the next of its queue
    before the sweep can speak to it (a race of the servers', not the sweep's)."""
    a, b, _, _ = servers
    out = tmp_path / "sending"
    gate.touch()
    with PathProxy(a.url, "/a") as link_to_a, \
            Sweep(sweep_command(tmp_path, [link_to_a, b], out, workflow("gs_sending", gate=str(gate)),
                                "--grace", "1", "--heartbeat", "2")) as sweep:
        wait_until_full([a, b], "gs_sending")
        given, back = sweep.times(f"{b.url} stayed away"), sweep.times(f"{b.url} answers again")
        b.proc.send_signal(signal.SIGSTOP)
        try:
            # its grace over: B's runs wait again; A is full
            wait_for(lambda: sweep.said(f"{b.url} stayed away", given), "B's runs going back in line", timeout=120)
            link_to_a.delays["POST /prompt"] = 6.0
            gate.unlink()  # A's runs end; it takes the waiting ones, on their way for 6 s
            wait_for(lambda: link_to_a.holding, "A taking a run of B's", timeout=60)
            gate.touch()  # B's run held when it resumes, until the sweep has caught up with B
        finally:
            b.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: sweep.said(f"{b.url} answers again", back) or sweep.process.poll() is not None,
                 "B answering again", timeout=60)
        back_at = time.monotonic()
        gate.unlink()
        link_to_a.delays.clear()
        returncode, stderr = sweep.wait()
    assert returncode == 0, stderr
    assert back_at < link_to_a.held[0][1], "B came back only after the run reached A: the race was not tested"
    rows = read_runs(out)
    assert len(rows) == 12 and all(r["status"] == "success" for r in rows)
    behind = {link_to_a.url: a, b.url: b}
    ran = {url: executed(server, "gs_sending") for url, server in behind.items()}
    counts = Counter(v for by_id in ran.values() for v in by_id.values())
    assert set(counts) == set(grid()) and sum(counts.values()) - 12 <= 1, counts
    assert all(ran[r["server"]][r["prompt_id"]] == settings_of(r) for r in rows)


def test_runs_someone_clears_from_a_servers_queue_are_queued_again(tmp_path, servers, gate):
    """Someone clears A's queue mid-sweep (the Clear button of a shared server's UI): the run that waited
    there leaves without a word to the sweep and without a history; it is found missing from A's queue and
    queued again. Every run once."""
    a = servers[0]
    out = tmp_path / "cleared"
    gate.touch()
    with Sweep(sweep_command(tmp_path, [a], out, workflow("gs_cleared", gate=str(gate)), seeds=1)) as sweep:
        wait_until_full([a], "gs_cleared")
        (pending,) = ours(a, "gs_cleared")[1]
        assert a.post("/queue", {"clear": True})[0] == 200
        wait_for(lambda: len(ours(a, "gs_cleared")[1]) == 1 and pending not in ours(a, "gs_cleared")[1],
                 "the run queued again", timeout=60)
        gate.unlink()
        returncode, stderr = sweep.wait()
    assert returncode == 0, stderr
    assert all(r["status"] == "success" for r in read_runs(out))
    ran_each_run_once([a], "gs_cleared", out, seeds=1)


@contextlib.contextmanager
def websocket_as(server, client_id):
    """A second websocket client of the server under `client_id`, open while the block runs (what it is sent
    is read and dropped). ComfyUI keeps one socket per client id: the events meant for that id now come here."""
    host, port = server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        key = base64.b64encode(os.urandom(16)).decode()
        connection.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        assert connection.recv(4096).startswith(b"HTTP/1.1 101")
        connection.settimeout(None)
        threading.Thread(target=lambda: all(iter(lambda: connection.recv(65536), b"")), daemon=True).start()
        try:
            yield
        finally:
            connection.shutdown(socket.SHUT_RDWR)  # the reading thread's recv returns b"" and it ends


def test_a_connection_that_hears_nothing_still_sees_its_runs_end(tmp_path, servers, gate):
    """The sweep's connection to A stays open but is sent nothing more: another client took its client id
    (as ComfyUI itself does to a socket that reconnected while the server was hung, when it closes the old
    one late). Each run still ends, from A's queue and history, and the sweep with them."""
    a = servers[0]
    out = tmp_path / "deaf"
    gate.touch()
    with Sweep(sweep_command(tmp_path, [a], out, workflow("gs_deaf", gate=str(gate)), seeds=1)) as sweep:
        wait_until_full([a], "gs_deaf")
        client_id = a.get("/queue")["queue_running"][0][3]["client_id"]
        with websocket_as(a, client_id):
            gate.unlink()
            returncode, stderr = sweep.wait(timeout=180)
    assert returncode == 0, stderr
    assert all(r["status"] == "success" for r in read_runs(out))
    ran_each_run_once([a], "gs_deaf", out, seeds=1)


def test_ctrl_c_takes_the_sweep_off_every_server_and_a_resume_on_other_servers_queues_only_the_rest(tmp_path, servers, gate):
    a, b, c, _ = servers
    out = tmp_path / "resume"
    first = sweep_command(tmp_path, [a, b], out, workflow("gs_resume", wait=0.3, gate=str(gate)))
    with Sweep(first) as sweep:
        wait_for(lambda: sum(r["status"] == "success" for r in read_runs(out)) >= 2, "two runs finished")
        gate.touch()
        wait_until_full([a, b], "gs_resume")
        sweep.process.send_signal(signal.SIGINT)
    returncode, stderr = sweep.wait(timeout=120)
    assert returncode == 130, stderr
    # nothing of the sweep stays on either server: the queued runs removed, the running ones interrupted
    wait_for(lambda: all(ours(s, "gs_resume") == ([], []) for s in (a, b)), "A and B empty", timeout=30)
    gate.unlink()
    kept = {r["key"]: r for r in read_runs(out) if r["status"] == "success"}
    assert 2 <= len(kept) < 12
    assert {r["server"] for r in kept.values()} <= {a.url, b.url}
    before = {s.url: executed(s, "gs_resume") for s in (a, b, c)}

    resumed = subprocess.run(sweep_command(tmp_path, [b, c], out, workflow("gs_resume", wait=0.3, gate=str(gate))),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(kept)} done before, {12 - len(kept)} to queue on 2 servers" in resumed.stderr
    rows = read_runs(out)
    assert all(r["status"] == "success" for r in rows)
    assert all(r == kept[r["key"]] for r in rows if r["key"] in kept)  # as they were, server A's included
    after = {s.url: executed(s, "gs_resume") for s in (a, b, c)}
    assert after[a.url] == before[a.url]
    new = Counter(v for url in (b.url, c.url) for pid, v in after[url].items() if pid not in before[url])
    missing = Counter((r["settings"]["Interval.sigma_hi"], r["settings"]["4.cfg"], r["seed"])
                      for r in rows if r["key"] not in kept)
    assert new == missing and sum(new.values()) == 12 - len(kept)  # only what was missing, once each


def test_an_error_on_the_sweeps_side_stops_it_with_the_reason_and_takes_its_prompts_off_the_servers(
        tmp_path, servers, gate):
    """The images folder is replaced by a file while the runs are held: the first image cannot be written.
    Not a server's fault: no retry loop, no server blamed; the sweep ends, its prompts withdrawn."""
    a, b, *_ = servers
    out = tmp_path / "local"
    gate.touch()
    with Sweep(sweep_command(tmp_path, [a, b], out, workflow("gs_local", gate=str(gate)))) as sweep:
        wait_until_full([a, b], "gs_local")
        (out / "images").rmdir()
        (out / "images").write_text("not a folder")
        gate.unlink()
    returncode, stderr = sweep.wait(timeout=120)
    assert returncode == 1, stderr
    assert "error: [Errno 20] Not a directory" in stderr and "took its prompts off the servers" in stderr
    assert "does not answer" not in stderr
    wait_for(lambda: all(ours(s, "gs_local") == ([], []) for s in (a, b)), "A and B empty", timeout=30)
    assert all(r["status"] == "missing" for r in read_runs(out))


def test_servers_that_lack_a_node_or_a_checkpoint_are_refused_by_name_and_nothing_is_queued(tmp_path, servers):
    a, b, _, d = servers
    out = tmp_path / "refused"
    before = len(a.get("/history?max_items=10000"))
    lacking_nodes = subprocess.run(sweep_command(tmp_path, [a, d], out, workflow("gs_refused")),
                                   capture_output=True, text=True, timeout=120)
    assert lacking_nodes.returncode == 2
    assert f"{d.url} has no node type GSTestTinyModel" in lacking_nodes.stderr
    assert f"{d.url} has no node type GSTestWait" in lacking_nodes.stderr
    assert a.url not in lacking_nodes.stderr.split("nothing was queued")[1]
    odd_names = workflow("gs_refused")
    for k, name in enumerate(["GS Absent (Custom)", "GS|Absent", "GS/Absent", "GS%2FAbsent?x=1#y"]):
        odd_names[f"9{k}"] = {"class_type": name, "inputs": {}}  # custom nodes' names hold such characters
    lacking_odd = subprocess.run(sweep_command(tmp_path, [a], out, odd_names), capture_output=True, text=True, timeout=120)
    assert lacking_odd.returncode == 2, lacking_odd.stderr
    for k, name in enumerate(["GS Absent (Custom)", "GS|Absent", "GS/Absent", "GS%2FAbsent?x=1#y"]):
        assert f"{a.url} has no node type {name} (node 9{k})" in lacking_odd.stderr

    with_checkpoint = workflow("gs_refused")
    with_checkpoint["8"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "gs_only_on_a.safetensors"}}
    (a.base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (a.base / "models" / "checkpoints" / "gs_only_on_a.safetensors").write_bytes(b"never loaded")
    lacking_checkpoint = subprocess.run(sweep_command(tmp_path, [a, b], out, with_checkpoint),
                                        capture_output=True, text=True, timeout=120)
    assert lacking_checkpoint.returncode == 2
    assert f"{b.url} has no ckpt_name 'gs_only_on_a.safetensors' (node 8, CheckpointLoaderSimple)" \
        in lacking_checkpoint.stderr
    assert a.url not in lacking_checkpoint.stderr.split("nothing was queued")[1]

    bad_value = subprocess.run(sweep_command(tmp_path, [a], out, workflow("gs_refused"),
                                             "--set", "4.sampler_name=euler,no_such_sampler"),
                               capture_output=True, text=True, timeout=120)
    assert bad_value.returncode == 2 and f"{a.url} has no sampler_name 'no_such_sampler' (node 4, KSampler)" \
        in bad_value.stderr
    assert len(a.get("/history?max_items=10000")) == before and not (out / "runs.json").exists()

    present_odd = workflow("gs_odd")
    present_odd["5"]["class_type"] = "GSTestWait (odd? name #1|x)"  # the helper pack's ODD_NAME: on A, found and run
    found = subprocess.run(sweep_command(tmp_path, [a], tmp_path / "odd", present_odd), capture_output=True, text=True,
                           timeout=300)
    assert found.returncode == 0, found.stderr


def test_server_addresses_are_checked(tmp_path, servers):
    a, *_ = servers
    out = tmp_path / "o"
    flow = workflow("gs_addresses")
    twice = subprocess.run(sweep_command(tmp_path, [a, a], out, flow), capture_output=True, text=True, timeout=60)
    assert twice.returncode == 2 and f"--server {a.url} is given twice" in twice.stderr
    no_scheme = subprocess.run(sweep_command(tmp_path, [], out, flow, "--server", "127.0.0.1:8188"),
                               capture_output=True, text=True, timeout=60)
    assert no_scheme.returncode == 2 and "--server '127.0.0.1:8188'" in no_scheme.stderr
    silent = subprocess.run(sweep_command(tmp_path, [a], out, flow, "--server", "http://127.0.0.1:9"),
                            capture_output=True, text=True, timeout=60)
    assert silent.returncode == 2 and "http://127.0.0.1:9 does not answer" in silent.stderr


def test_when_no_server_answers_the_sweep_stops_after_its_patience_and_a_rerun_finishes_the_rest(tmp_path, servers):
    """Last in this file: it kills C for good."""
    a, _, c, _ = servers
    out = tmp_path / "patience"
    with Sweep(sweep_command(tmp_path, [c], out, workflow("gs_patience", wait=1.0),
                             "--grace", "1", "--patience", "3")) as sweep:
        wait_for(lambda: any(r["status"] == "success" for r in read_runs(out)), "a run finished on C")
        c.kill()
    returncode, stderr = sweep.wait(timeout=120)
    assert returncode == 1, stderr
    assert "stopped early: no server answered for 3 s" in stderr
    rows = read_runs(out)
    finished = [r for r in rows if r["status"] == "success"]
    assert finished and all(r["server"] == c.url for r in finished)
    assert all(r["status"] == "missing" and r["server"] == "" for r in rows if r not in finished)
    # the same workflow (another one would be new runs: a run's key covers the whole prompt)
    rerun = subprocess.run(sweep_command(tmp_path, [a], out, workflow("gs_patience", wait=1.0)),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} done before, {12 - len(finished)} to queue on 1 server" in rerun.stderr
    assert Counter(executed(a, "gs_patience").values()) + Counter(settings_of(r) for r in finished) == grid()
