"""scripts/sweep.py over 1, 2 and 3 local ComfyUI servers, one of them made slower on purpose: how the runs
spread, and how long each server sat idle while runs were still waiting for one (the dispatch's own cost).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/sweep_servers.py         # about 2 minutes on 2 CPU cores

Each run samples the tiny test model (8 euler steps), then waits `--wait` seconds (twice that on the slow
server) in a test node that uses no CPU: the stand-in for a GPU's time, so that three servers on a 2-core
machine behave like three GPUs. What ran where and when comes from each server's own history (the
execution_start / execution_success times of every prompt); when the last run left the sweep's waiting
line, from runs.json (queued_at). A server's idle fraction is the share of the time from the sweep's first
queued run to its last one during which the server executed none of the sweep's prompts. The first row
queues the whole grid on one server at once: its gaps between runs are ComfyUI's own (history, its periodic
garbage collection), the floor that any dispatch adds to.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT))  # standalone.py, which tests/host_support.py imports
from comfy_server import ComfyServer  # noqa: E402  (tests/: the server the host tests start)

SLOW = 2.0  # the slow server's waits take this many times longer


def workflow(prefix: str, wait: float) -> dict:
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {"class_type": "GuidanceIntervalPatch", "inputs": {"model": ["1", 0], "sigma_hi": 5.42, "sigma_lo": 0.28}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 0, "steps": 8, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "GSTestWait", "inputs": {"samples": ["4", 0], "seconds": wait, "hold_while_exists": ""}},
        "6": {"class_type": "GSTestLatentToImage", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def executions(server: ComfyServer, prompt_ids: set) -> list[tuple[float, float]]:
    """(start, end) in seconds of the server's executions of these prompts, from its history."""
    spans = []
    for prompt_id, entry in server.get("/history?max_items=10000").items():
        if prompt_id not in prompt_ids:
            continue
        stamps = {kind: data["timestamp"] / 1000 for kind, data in entry["status"]["messages"] if "timestamp" in data}
        spans.append((stamps["execution_start"], stamps.get("execution_success", stamps.get("execution_error"))))
    return sorted(spans)


def busy_within(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] covered by the spans (which do not overlap: a server runs one prompt at a time)."""
    return sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans)


def measure(servers: list[ComfyServer], names: dict, wait: float, seeds: int, depth: int, work: Path) -> dict:
    label = f"{len(servers)}x-d{depth}"  # also the SaveImage prefix: each sweep's prompts are told apart by it
    flow = work / f"{label}.json"
    flow.write_text(json.dumps(workflow(f"bench_{label}", wait)))
    out = work / label
    command = [sys.executable, str(ROOT / "scripts" / "sweep.py"), str(flow), "--set", "4.cfg=3,5,7",
               "--seeds", str(seeds), "--out", str(out), "--depth", str(depth),
               *[a for s in servers for a in ("--server", s.url)]]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{done.stderr[-3000:]}")
    rows = json.loads((out / "runs.json").read_text())["runs"]
    first, last = min(r["queued_at"] for r in rows), max(r["queued_at"] for r in rows)
    per_server = []
    for server in servers:
        ids = {r["prompt_id"] for r in rows if r["server"] == server.url}
        spans = executions(server, ids)
        busy = busy_within(spans, first, last)
        # where idle time lies: between one run's end and the next one's start (its first run starts within
        # milliseconds of the first queued). ComfyUI's own time between prompts is in it, and the dispatch's.
        gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        per_server.append({"name": names[server.url], "runs": len(ids),
                           "idle": 1 - busy / (last - first) if last - first > 1 else None,
                           "mean_gap": sum(gaps) / len(gaps) if gaps else 0.0,
                           "mean_run": sum(e - s for s, e in spans) / len(spans)})
    return {"servers": len(servers), "depth": depth, "runs": len(rows), "wall": wall, "waiting": last - first,
            "per_server": per_server}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait", type=float, default=0.5, help="seconds each run waits (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=12, help="seeds per cfg value, 3 cfg values (default %(default)s)")
    args = parser.parse_args()
    # fast, slow, fast: 1 server is a fast one, 2 are a fast and the slow one, 3 all of them
    started = [ComfyServer(wait=False), ComfyServer(env={"GS_TEST_WAIT_FACTOR": str(SLOW)}, wait=False),
               ComfyServer(wait=False)]
    names = {started[0].url: "fast 1", started[1].url: f"slow (x{SLOW:g})", started[2].url: "fast 2"}
    results = []
    try:
        for server in started:
            server.wait_until_ready()
        work = Path(tempfile.mkdtemp(prefix="gs-sweep-bench-"))
        runs = 3 * args.seeds
        # first the baseline: the whole grid in one server's queue at once, so that no gap is the sweep's:
        # what is left is ComfyUI's own time between two prompts
        for n, depth in ((1, runs), (1, 2), (2, 2), (3, 2), (3, 1)):
            results.append(measure(started[:n], names, args.wait, args.seeds, depth, work))
            print(f"done: {n} server(s), depth {depth}", file=sys.stderr)
    finally:
        for server in started:
            server.stop()
    print(f"\n{results[0]['runs']} runs, each 8 tiny-model steps and a {args.wait:g} s wait "
          f"({args.wait * SLOW:g} s on the slow server)\n")
    print("| servers | --depth | wall s | runs per server | idle while runs waited | gap between runs (mean) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        servers = r["per_server"]
        depth = f"{r['depth']} (all)" if r["depth"] == r["runs"] else r["depth"]
        idle = ("-- (all queued at once)" if servers[0]["idle"] is None else
                ", ".join(f"{p['idle']:.1%}" for p in servers) + f" (of {r['waiting']:.1f} s)")
        print(f"| {r['servers']} | {depth} | {r['wall']:.1f} | " + ", ".join(f"{p['name']}: {p['runs']}" for p in servers)
              + f" | {idle} | " + ", ".join(f"{p['mean_gap'] * 1000:.0f} ms" for p in servers) + " |")


if __name__ == "__main__":
    main()
