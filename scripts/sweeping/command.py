"""The command line: reading the workflow and the arguments, then the sweep from the servers' check to the
contact sheet, and what it says to the user."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .checks import check_servers
from .dispatch import Dispatch, Progress, ServerState, plural
from .grid import GRID_LIMIT, Axis, Grid, UsageError, parse_axis, parse_seeds
from .results import contact_sheet, keep_previous, load_previous, save
from .runs import Run, RunState
from .server import Server

DEFAULT_SERVER = "http://127.0.0.1:8188"
DESCRIPTION = ("Queue a grid of settings through the API of one or several ComfyUI servers and collect the results\n"
               "side by side.")


def read_workflow(path: str) -> dict:
    """An API-format workflow from a JSON file (UTF-8, UTF-8 with a BOM, or UTF-16 as PowerShell's '>' writes it)
    or from a PNG that ComfyUI saved (its "prompt" text chunk). UsageError for anything else."""
    data = Path(path).read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        text = png_text(data).get("prompt")
        if text is None:
            raise UsageError(f"{path} is a PNG without a workflow: use an image that ComfyUI saved (its SaveImage "
                             "node keeps the prompt in the file), or the editor's Export (API)")
    else:
        encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not a workflow (neither JSON text nor a PNG that ComfyUI saved)") from None
    try:
        workflow = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(workflow, dict) or "nodes" in workflow or \
            not all(isinstance(n, dict) and "class_type" in n for n in workflow.values()):
        raise UsageError(f"{path} is not an API-format workflow: use the files in workflows/api/ "
                         "or the graph editor's Export (API)")
    for nid, node in workflow.items():
        if not isinstance(node.get("inputs", {}), dict):
            raise UsageError(f"{path}: node {nid} ({node['class_type']}) has inputs {node['inputs']!r}; a node's "
                             "inputs are an object of names and values")
        node.setdefault("inputs", {})
    return workflow


def png_text(data: bytes) -> dict:
    """The tEXt and iTXt chunks of a PNG (what ComfyUI's SaveImage writes its prompt and workflow into)."""
    import struct
    import zlib
    chunks, at = {}, 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        at += 12 + length
        if kind == b"tEXt" and b"\0" in body:
            name, _, value = body.partition(b"\0")
            chunks[name.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt" and b"\0" in body:
            name, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")  # language
            _, _, value = rest.partition(b"\0")  # translated keyword
            try:
                chunks[name.decode("latin-1")] = (zlib.decompress(value) if compressed else value).decode("utf-8")
            except (zlib.error, UnicodeDecodeError):
                pass
        elif kind == b"IEND":
            break
    return chunks


def parse_servers(values: list[str]) -> list[str]:
    servers = []
    for value in values:
        for url in (u.strip().rstrip("/") for u in value.split(",")):
            if not url:
                continue
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018  (a port that is no number raises here)
            except ValueError as e:
                raise UsageError(f"--server {url!r} is not an address ({e}): give it as ComfyUI prints it, e.g. "
                                 "http://127.0.0.1:8188") from None
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise UsageError(f"--server {url!r}: give the server's address as ComfyUI prints it, e.g. "
                                 "http://127.0.0.1:8188 (or https://host/path behind a proxy)")
            if url in servers:
                raise UsageError(f"--server {url} is given twice")
            servers.append(url)
    return servers or [DEFAULT_SERVER]




async def sweep(args, axes: list[Axis], runs: list[Run], out: Path, earlier: list[dict],
                prompts_to_check: list[dict]) -> str:
    """Check the servers, then run the grid over them; "" or why the sweep stopped early.
    UsageError where a server lacks what the runs use (nothing queued)."""
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        servers = [Server(session, url, answer_within=1.5 * args.heartbeat) for url in args.servers]
        problems = await check_servers(servers, prompts_to_check)
        if problems:
            raise UsageError("the servers must all run what the workflow uses; nothing was queued:\n  "
                             + "\n  ".join(problems))
        (out / "images").mkdir(parents=True, exist_ok=True)
        states = [ServerState(server) for server in servers]
        progress = Progress(runs, states, axes)
        dispatch = Dispatch(states, runs, out, axes, depth=args.depth, grace=args.grace, patience=args.patience,
                            heartbeat=args.heartbeat, progress=progress, earlier=earlier)
        try:
            await dispatch.run()
        except BaseException:  # Ctrl-C, or an error on this side: nobody would collect what the servers hold
            await dispatch.withdraw_all()
            raise
        finally:
            for run in runs:
                run.abandon()
            save(out, axes, runs, earlier)
            progress.close()
        return dispatch.gave_up


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python scripts/sweep.py workflows/api/adaptive_guidance_patch_sdxl.json \\\n"
               "      --set AdaptiveGuidancePatch.threshold=0.99,0.995,0.999 --seeds 3 --out ag_sweep \\\n"
               "      --server http://gpu0:8188 --server http://gpu1:8188")
    parser.add_argument("workflow", help="an API-format workflow (workflows/api/*.json, or the editor's Export (API))")
    parser.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                        help=f"a ComfyUI server; repeat it (or give a comma list) to spread the grid over several, "
                             f"each running the same models and custom nodes (default {DEFAULT_SERVER})")
    parser.add_argument("--set", dest="axes", action="append", default=[], metavar="NODE.INPUT=V1,V2,...",
                        help="an axis of the grid: a node id or title, one of its inputs, the values "
                             "(e.g. --set KSampler.cfg=5,7.5,10); repeat for more axes")
    parser.add_argument("--seeds", default="1", metavar="N|S1,S2,...",
                        help="N seeds (0..N-1) or a list; they go to every seed/noise_seed input (default 1)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where runs.csv, runs.json, sheet.png and images/ go")
    parser.add_argument("--depth", type=int, default=2, metavar="N",
                        help="runs each server holds at once, the one running included (default %(default)s: the next "
                             "one is ready when a run ends; more only helps servers far away)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                        help="how long a server that stops answering keeps its runs before they go to the others "
                             "(default %(default)s)")
    parser.add_argument("--heartbeat", type=float, default=20.0, metavar="SECONDS",
                        help="how often each server's connection is checked: one that hangs (accepts connections, "
                             "never answers), between requests or in the middle of one, is noticed within 1.5 times "
                             "this (default %(default)s)")
    parser.add_argument("--patience", type=float, default=120.0, metavar="SECONDS",
                        help="how long to wait when no server answers before stopping (default %(default)s)")
    parser.add_argument("--yes", action="store_true",
                        help=f"run a grid of more than {GRID_LIMIT:,} runs (without it such a grid is refused, "
                             "with its size)")
    args = parser.parse_args(argv)
    try:
        workflow = read_workflow(args.workflow)
        axes = [parse_axis(workflow, spec) for spec in args.axes]
        keys = [a.key for a in axes]
        if len(set((a.node, a.input) for a in axes)) != len(axes):
            raise UsageError(f"--set: an input is given twice ({', '.join(keys)})")
        seeds = parse_seeds(args.seeds)
        args.servers = parse_servers(args.servers)
        for name, value, least in (("--depth", args.depth, 1), ("--grace", args.grace, 0), ("--patience", args.patience, 1),
                                   ("--heartbeat", args.heartbeat, 1)):
            if not value >= least:
                raise UsageError(f"{name} {value}: give {least} or more")
        the_grid = Grid(workflow, axes, seeds)
        if the_grid.size > GRID_LIMIT and not args.yes:
            raise UsageError(f"the grid has {the_grid.size:,} runs ({' x '.join(str(len(a.values)) for a in axes) or '1'} "
                             f"settings x {len(seeds):,} seeds); --seeds N means N seeds (0..N-1), a list S1,S2 those "
                             f"seeds. Add --yes to run more than {GRID_LIMIT:,}")
        out = Path(args.out)
        previous = load_previous(out)
    except OSError as e:
        print(f"error: {args.workflow}: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dropped = sum(len(v) - len(a.values) for v, a in zip((spec.partition("=")[2].split(",") for spec in args.axes), axes))
    if not isinstance(seeds, range):
        dropped += len(args.seeds.split(",")) - len(seeds)
    runs = the_grid.runs()
    gone = keep_previous(runs, previous, out)
    in_grid = {r.key for r in runs}
    earlier = [row for key, row in previous.items() if key not in in_grid]
    todo = sum(r.status is not RunState.SUCCESS for r in runs)
    print(f"{len(runs)} runs ({' x '.join(str(len(a.values)) for a in axes) or '1'} settings x {len(seeds)} seeds); "
          f"{len(runs) - todo} done before, {todo} to queue on {plural(len(args.servers), 'server')}", file=sys.stderr)
    if dropped:
        print(f"{plural(dropped, 'value')} given twice (as numbers: 5 and 5.0 are one) dropped: each cell runs once",
              file=sys.stderr)
    if gone:
        print(f"{plural(gone, 'run')} done before whose images are gone from {out / 'images'}: queued again",
              file=sys.stderr)
    if earlier:
        print(f"{plural(len(earlier), 'earlier run')} in {out} with other settings or another workflow "
              "(a changed workflow is new runs) stay recorded in its runs.json and runs.csv", file=sys.stderr)
    started = time.time()
    stopped = ""
    try:
        if todo:
            stopped = asyncio.run(sweep(args, axes, runs, out, earlier, the_grid.prompts_to_check()))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the sweep's prompts are off every server's queue, the finished runs recorded; "
              "run the same command to go on", file=sys.stderr)
        if (out / "runs.json").is_file():  # interrupted before anything was queued: nothing is written
            contact_sheet(axes, runs, out)
        return 130
    except OSError as e:  # on this side: the output folder (a full disk, no permission)
        print(f"error: {e}; the sweep stopped and took its prompts off the servers; the runs recorded before are "
              "kept: run the same command to go on", file=sys.stderr)
        return 1
    sheet = contact_sheet(axes, runs, out)
    failed = [r for r in runs if r.status is not RunState.SUCCESS]
    by_server, UNNAMED = {}, "a server not recorded"
    for r in runs:
        if r.status is RunState.SUCCESS:
            by_server[r.server] = by_server.get(r.server, 0) + 1
    print(f"{len(runs) - len(failed)} of {len(runs)} runs succeeded in {time.time() - started:.0f} s "
          f"({', '.join(f'{n} on {url or UNNAMED}' for url, n in by_server.items())}); wrote "
          f"{out / 'runs.csv'}, {out / 'runs.json'}, {sheet}", file=sys.stderr)
    if stopped:
        print(f"stopped early: {stopped}; run the same command to go on", file=sys.stderr)
    for r in failed:
        print(f"  {r.status}: seed {r.seed} {dict(zip(keys, r.settings))}: {r.message}", file=sys.stderr)
    return 1 if failed else 0
