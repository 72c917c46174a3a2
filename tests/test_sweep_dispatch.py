"""The sweep's dispatch against in-process stand-ins for servers (tests/fake_comfy.py): a grid over slow and fast
links, a server that hangs, one that drops off the network and comes back, one that restarts with an empty
queue, a queue someone clears. Every run of the grid ends recorded once as a success, run once (counted on
the servers' side). The same situations against real ComfyUI servers: tests/host/test_host_sweep_servers.py.
Also the run states' transitions."""
import json
import threading
from collections import Counter

import pytest

from sweep_support import read_runs, sweep_module

pytest.importorskip("aiohttp", reason="the sweep needs aiohttp (ComfyUI installs it)")
pytest.importorskip("PIL", reason="the sweep needs Pillow (ComfyUI installs it)")
pytest.importorskip("tqdm", reason="the sweep needs tqdm (ComfyUI installs it)")
from fake_comfy import FakeComfy, workflow  # noqa: E402

CFGS, SEEDS = (1, 2, 3, 4, 5, 6), 2
GRID = Counter((float(cfg), seed) for cfg in CFGS for seed in range(SEEDS))


@pytest.fixture
def sweep():
    module = sweep_module()
    import sweeping.dispatch
    checking = sweeping.dispatch.QUEUE_CHECK_SECONDS
    sweeping.dispatch.QUEUE_CHECK_SECONDS = 0.3  # a cleared queue is noticed at once, not in 5 s
    yield module
    sweeping.dispatch.QUEUE_CHECK_SECONDS = checking


@pytest.fixture
def servers():
    made = []

    def make(count, **settings):
        made.extend(FakeComfy(**settings) for _ in range(count))
        return made[-count:]
    yield make
    for server in made:
        server.stop()


class Command:
    """The sweep's own command (main) in a thread, as a user runs it, over the given servers."""

    def __init__(self, sweep, tmp_path, servers, *extra):
        self.out = tmp_path / "out"
        flow = tmp_path / "workflow.json"
        flow.write_text(json.dumps(workflow()))
        argv = [str(flow), *[a for s in servers for a in ("--server", s.url)], "--set",
                f"Sampler.cfg={','.join(map(str, CFGS))}", "--seeds", str(SEEDS), "--out", str(self.out), *extra]
        self.status = None
        self.thread = threading.Thread(target=lambda: setattr(self, "status", sweep.main(argv)), daemon=True)
        self.thread.start()

    def wait(self, timeout=60):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the sweep did not end"
        return self.status


def each_run_once(servers, out):
    """Every run of the grid recorded once as a success, by a server that ran it; every run executed once
    over the servers (their own counts)."""
    rows = read_runs(out)
    assert Counter((r["settings"]["Sampler.cfg"], r["seed"]) for r in rows if r["status"] == "success") == GRID
    assert sum((Counter(s.executed) for s in servers), Counter()) == GRID
    by_url = {s.url: Counter(s.executed) for s in servers}
    assert all(by_url[r["server"]][(r["settings"]["Sampler.cfg"], r["seed"])] == 1 for r in rows)
    return {s.url: len(s.executed) for s in servers}


def wait_for(condition, timeout=30.0):
    import time
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_a_grid_over_slow_and_fast_links_runs_each_run_once_on_every_server(sweep, servers, tmp_path):
    slow = servers(1, latency=0.15, run_seconds=0.2)
    fast = servers(2, run_seconds=0.2)
    command = Command(sweep, tmp_path, [*slow, *fast])
    assert command.wait() == 0
    ran = each_run_once([*slow, *fast], command.out)
    assert all(count >= 1 for count in ran.values()), ran


def test_a_server_that_hangs_gives_its_runs_to_the_others(sweep, servers, tmp_path):
    hung, *others = servers(3, run_seconds=0.1)
    command = Command(sweep, tmp_path, [hung, *others], "--grace", "0.3", "--heartbeat", "1")
    assert hung.started.wait(10)
    hung.hang()  # mid-run: that run and the one waiting behind it never finish there
    assert command.wait() == 0
    each_run_once([hung, *others], command.out)
    assert len(hung.executed) == 0


def test_a_server_that_hangs_as_a_run_is_queued_on_it_gives_its_runs_to_the_others(sweep, servers, tmp_path):
    hung, *others = servers(3, run_seconds=0.1)
    command = Command(sweep, tmp_path, [hung, *others], "--grace", "0.3", "--heartbeat", "1")
    assert hung.started.wait(10)
    hung.hang_at_next_prompt()  # the POST of the next run it is given gets no answer
    # noticed when that request has had no answer for 1.5 heartbeats, and the connection's close has waited for
    # the hung server's close frame (aiohttp's 10 s: decision 34)
    assert command.wait() == 0
    each_run_once([hung, *others], command.out)


def test_a_server_off_the_network_finishes_its_run_and_is_used_again_once_back(sweep, servers, tmp_path):
    away, other = servers(2, run_seconds=0.15)
    command = Command(sweep, tmp_path, [away, other])
    assert away.started.wait(10)
    away.drop()  # within the grace (5 s): its runs stay its own, its queue goes on running
    wait_for(lambda: len(other.executed) >= 2)
    given = away.accepted
    away.back()
    assert command.wait() == 0
    each_run_once([away, other], command.out)
    assert away.accepted > given  # given more runs once back (what it held was collected: each run once)


def test_a_restarted_server_gets_the_runs_it_lost_again(sweep, servers, tmp_path):
    restarted, other = servers(2, run_seconds=0.15)
    command = Command(sweep, tmp_path, [restarted, other])
    wait_for(lambda: restarted.holding() == 2)
    restarted.drop()
    restarted.back(restarted=True)  # its queue is gone, and it has no history of those runs
    assert command.wait() == 0
    each_run_once([restarted, other], command.out)


def test_runs_someone_clears_from_a_queue_are_queued_again(sweep, servers, tmp_path):
    cleared, other = servers(2, run_seconds=0.15)
    command = Command(sweep, tmp_path, [cleared, other])
    wait_for(lambda: len(cleared.pending) == 1)
    cleared.clear()
    assert command.wait() == 0
    each_run_once([cleared, other], command.out)


def test_a_run_moves_only_along_the_sweeps_transitions(sweep):
    grid = sweep.Grid(workflow(), [], [0])
    run = grid.runs()[0]
    assert run.status == "missing"
    with pytest.raises(RuntimeError, match="missing -> queued"):
        run.queued_on("http://a", "id")
    run.wait()
    run.send()
    run.wait()  # the server went away while it was being queued
    run.send()
    run.queued_on("http://a", "id")
    run.ran(True, "", 1.0, [], [])
    assert run.status == "success" and json.dumps(run.status) == '"success"' and f"{run.status}" == "success"
    with pytest.raises(RuntimeError, match="success -> waiting"):
        run.wait()
    run.abandon()  # a finished run stays what it is when the sweep stops
    assert run.status == "success"
