"""Queue a grid of settings through the API of one or several ComfyUI servers and collect the results
side by side.

    python scripts/sweep.py workflows/api/guidance_interval_patch_sdxl.json --server http://127.0.0.1:8188 \\
        --set GuidanceIntervalPatch.sigma_hi=2.9,5.42 --set KSampler.cfg=7,10 --seeds 2 --out sweep

WORKFLOW is an API-format workflow (the files in workflows/api/, or the graph editor's "Export (API)").
Each --set NODE.INPUT=V1,V2,... is an axis; NODE is a node id or its title (_meta.title), INPUT one of
its widget inputs. The grid is the product of the axes times the seeds; the seeds go to every seed
input of the workflow (seed, noise_seed). The command checks that every server has the workflow's node
types and the list values it uses (checkpoint names...), hands the runs to the servers a few at a time
each, follows them over the websockets, downloads every output image from the server that made it and
writes, in DIR:
- runs.csv: one row per run: prompt_id, status, server, seed, one column per --set key, seconds (as the
  server measured it), evaluations and uncond_evaluations (model evaluations and of those, how many ran
  the unconditional pass, from the pack's run records; empty for a run without the pack's nodes), the
  image files, and the server's message for a run that failed;
- runs.json: the same with the pack's full run records (guided steps, weight per step and sample) and
  when each run was queued;
- sheet.png: a contact sheet, the first axis across, the other axes and the seeds down.
A server that stops answering gives its runs to the others; one that answers again is used again.
Running the same command again (with the same servers or others) queues only the runs that are missing
or failed and rebuilds the sheet from all of them; Ctrl-C takes the sweep's prompts off every server and
leaves every finished run recorded. The exit status is 0 when every run succeeded, 1 when some failed or
no server answered for --patience seconds, 2 for a usage error or a server that lacks what the workflow
uses, 130 after Ctrl-C.

Only the standard library and packages ComfyUI installs (aiohttp, Pillow, tqdm).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import itertools
import json
import math
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

SEED_INPUTS = ("seed", "noise_seed")
RUNS_ROUTE = "/guidance_schedules/runs"
DEFAULT_SERVER = "http://127.0.0.1:8188"
QUEUE_CHECK_SECONDS = 5.0  # how often a connected server's queue is read, beside its events (Dispatch.follow)


class UsageError(Exception):
    pass


# --- the grid --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Axis:
    node: str  # the node's id in the workflow
    input: str
    key: str  # as the user wrote it: NODE.INPUT
    values: tuple


def parse_value(text: str):
    """A value as a widget takes it: an integer, a number, true/false, or the text itself (combo choices)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def find_node(workflow: dict, name: str) -> str:
    if name in workflow:
        return name
    titled = [nid for nid, node in workflow.items() if node.get("_meta", {}).get("title") == name]
    if len(titled) == 1:
        return titled[0]
    if titled:
        raise UsageError(f"--set: several nodes are titled {name!r} ({', '.join(titled)}); use a node id")
    raise UsageError(f"--set: no node with id or title {name!r}; nodes: " +
                     ", ".join(f"{nid} ({node.get('_meta', {}).get('title', node.get('class_type'))})"
                               for nid, node in workflow.items()))


def parse_axis(workflow: dict, spec: str) -> Axis:
    target, sep, values = spec.partition("=")
    node_name, dot, input_name = target.rpartition(".")
    if not sep or not dot or not node_name or not input_name or not values:
        raise UsageError(f"--set {spec!r}: write NODE.INPUT=V1,V2,... (NODE: a node id or its title)")
    node = find_node(workflow, node_name)
    inputs = workflow[node].get("inputs", {})
    if input_name not in inputs:
        raise UsageError(f"--set {spec!r}: node {node} ({workflow[node]['class_type']}) has no input {input_name!r}; "
                         f"its inputs: {', '.join(inputs)}")
    if isinstance(inputs[input_name], list):
        raise UsageError(f"--set {spec!r}: {input_name} is a link from another node, not a value")
    if input_name in SEED_INPUTS:
        raise UsageError(f"--set {spec!r}: the seeds are set with --seeds (e.g. --seeds {values}); they go to every "
                         f"{' and '.join(SEED_INPUTS)} input of the workflow")
    return Axis(node, input_name, target, distinct(parse_value(v.strip()) for v in values.split(",")))


def distinct(values) -> tuple:
    """The values in their order, each once (5 and 5.0 are one value)."""
    kept = []
    for value in values:
        if not any(same_value(value, k) for k in kept):
            kept.append(value)
    return tuple(kept)


def parse_seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give a count N (seeds 0..N-1) or a list S1,S2,...") from None
    if len(values) == 1:
        if values[0] < 1:
            raise UsageError("--seeds: the count must be at least 1")
        return range(values[0])
    return list(distinct(values))


@dataclass
class Run:
    settings: tuple  # one value per axis
    seed: int
    key: str  # stable: the same prompt (seeds aside) and seed in a later sweep are the same run
    grid: "Grid" = field(repr=False, default=None)
    # missing (not run), waiting (for a server), sending (being queued), queued (on `server`), success, error
    status: str = "missing"
    prompt_id: str = ""  # on `server`
    server: str = ""  # the server's URL, once queued
    queued_at: float | None = None  # when the sweep queued it (Unix time)
    seconds: float | None = None
    images: list = field(default_factory=list)
    records: list = field(default_factory=list)
    message: str = ""

    @property
    def prompt(self) -> dict:
        """The API prompt of this run, made when it is needed (a grid of many runs holds no copy per run)."""
        return self.grid.prompt(self.settings, self.seed)


def same_value(a, b) -> bool:
    """Values of an axis compared as a user means them: 5 and 5.0 are one number; True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def key_value(value):
    """A value as it enters a run's key: numbers as floats, so that 5 and 5.0 are one run."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@dataclass
class Grid:
    """The runs of a sweep: the workflow with each cell's axis values and seed. Its size is known before any run
    is made, and a run's prompt is made when it is queued."""

    workflow: dict
    axes: list[Axis]
    seeds: list[int]

    def __post_init__(self):
        # (no axis is on a seed input: parse_axis refuses one)
        self.seed_targets = [(nid, name) for nid, node in self.workflow.items() for name in SEED_INPUTS
                             if name in node["inputs"] and not isinstance(node["inputs"][name], list)]
        # the key of a run is a digest of its whole prompt but its seeds: the workflow without the values the grid
        # sets, once, then each run's values and seed
        blank = json.loads(json.dumps(self.workflow))
        for nid, name in [*self.seed_targets, *((a.node, a.input) for a in self.axes)]:
            blank[nid]["inputs"][name] = None
        self.workflow_digest = hashlib.sha1(json.dumps(blank, sort_keys=True).encode()).hexdigest()

    @property
    def size(self) -> int:
        return math.prod(len(a.values) for a in self.axes) * len(self.seeds)

    def prompt(self, settings: tuple, seed: int) -> dict:
        prompt = json.loads(json.dumps(self.workflow))
        for axis, value in zip(self.axes, settings):
            prompt[axis.node]["inputs"][axis.input] = value
        for nid, name in self.seed_targets:
            prompt[nid]["inputs"][name] = seed
        return prompt

    def key(self, settings: tuple, seed: int) -> str:
        text = json.dumps([self.workflow_digest, [[a.node, a.input] for a in self.axes],
                           [key_value(v) for v in settings], seed])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def runs(self) -> list[Run]:
        return [Run(settings, seed, self.key(settings, seed), self)
                for settings in itertools.product(*(a.values for a in self.axes)) for seed in self.seeds]

    def prompts_to_check(self) -> list[dict]:
        """Prompts that hold every value the grid gives (a server is checked for each, not for every run)."""
        first = tuple(a.values[0] for a in self.axes)
        prompts = [self.prompt(first, self.seeds[0])]
        for i, axis in enumerate(self.axes):
            for value in axis.values[1:]:
                prompts.append(self.prompt(first[:i] + (value,) + first[i + 1:], self.seeds[0]))
        return prompts


def grid(workflow: dict, axes: list[Axis], seeds: list[int]) -> list[Run]:
    return Grid(workflow, axes, seeds).runs()


# --- what is kept on disk --------------------------------------------------------------------------

def load_previous(out: Path) -> dict:
    """The runs recorded in the folder by earlier sweeps, by key; UsageError naming the file where it cannot be
    read (nothing in the folder is touched then)."""
    path = out / "runs.json"
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
        return {r["key"]: r for r in runs}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError, KeyError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__}: {e}); nothing was changed. Restore it, or move "
                         "it away to record this folder's runs afresh (the images stay where they are)") from None


def keep_previous(runs: list[Run], previous: dict, out: Path) -> int:
    """The runs that succeeded in an earlier sweep into the same folder, as they were (whichever server ran them);
    a run whose images were removed since is run again. Returns how many were."""
    gone = 0
    for run in runs:
        kept = previous.get(run.key)
        if kept and kept["status"] == "success":
            if not all((out / image).is_file() for image in kept["images"]):
                gone += 1
                continue
            run.status, run.prompt_id, run.seconds = "success", kept["prompt_id"], kept["seconds"]
            run.server, run.queued_at = kept.get("server", ""), kept.get("queued_at")
            run.images, run.records = kept["images"], kept["records"]
    return gone


def save(out: Path, axes: list[Axis], runs: list[Run], earlier: list[dict] = ()) -> None:
    """runs.json and runs.csv, written whole after every finished run (a new file, then renamed): this sweep's
    runs, then the folder's runs of earlier sweeps that are not in this grid (other settings, another workflow),
    as they were recorded: the folder accumulates."""
    rows = [{"key": r.key, "prompt_id": r.prompt_id, "status": r.status if r.status in ("success", "error") else "missing",
             "server": r.server if r.status in ("success", "error") else "", "seed": r.seed,
             "settings": dict(zip([a.key for a in axes], r.settings)), "queued_at": r.queued_at, "seconds": r.seconds,
             "evaluations": evaluations(r)[0], "uncond_evaluations": evaluations(r)[1], "images": r.images,
             "message": r.message, "records": r.records} for r in runs]
    rows += list(earlier)
    tmp = out / "runs.json.tmp"
    tmp.write_text(json.dumps({"axes": [a.key for a in axes], "runs": rows}, indent=1))
    tmp.replace(out / "runs.json")
    keys = list(dict.fromkeys([a.key for a in axes] + [k for row in rows for k in row.get("settings", {})]))
    tmp = out / "runs.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt_id", "status", "server", "seed", *keys, "seconds", "evaluations",
                         "uncond_evaluations", "images", "message"])
        for row in rows:
            settings = row.get("settings", {})
            writer.writerow([row["prompt_id"], row["status"], row["server"], row["seed"],
                             *[settings.get(k, "") for k in keys],
                             "" if row["seconds"] is None else f"{row['seconds']:.3f}",
                             "" if row["evaluations"] is None else row["evaluations"],
                             "" if row["uncond_evaluations"] is None else row["uncond_evaluations"],
                             " ".join(row["images"]), row["message"]])
    tmp.replace(out / "runs.csv")


def evaluations(run: Run) -> tuple[int | None, int | None]:
    """Model evaluations of the run and, of those, with the unconditional pass: the pack's records,
    summed over the run's sampler nodes; None without them."""
    if not run.records:
        return None, None
    return sum(r["evaluations"] for r in run.records), sum(r["uncond_evaluations"] for r in run.records)


# --- a server --------------------------------------------------------------------------------------

class ServerGone(Exception):
    """The server did not answer, or not as a ComfyUI server does (a proxy's error page)."""


class Server:
    """One ComfyUI server as the sweep sees it: its standard HTTP API, and the sweep's runs it holds."""

    def __init__(self, session, url: str):
        self.session, self.url = session, url
        self.client_id = ""  # a new one for each connection, given by Dispatch.serve
        self.holding: dict[str, Run] = {}  # prompt id -> run: queued there and not yet finished
        self.sending = 0  # runs on their way to it (a POST under way)
        self.released: dict[str, Run] = {}  # runs it held when it stopped answering, given to the others since
        self.connected = False  # its websocket is open (it may still be catching up)
        self.answering = False  # connected and caught up: runs are queued on it
        self.down_since: float | None = None
        self.running: Run | None = None
        self.step = (0, 0)
        self.finished = 0

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"

    async def request(self, method: str, path: str, **kwargs):
        """The JSON answer; ServerGone where the server does not answer, or answers with an error."""
        import aiohttp
        try:
            async with self.session.request(method, self.url + path, **kwargs) as r:
                if r.status >= 400:
                    raise ServerGone(f"HTTP {r.status} for {path}")
                return await r.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            raise ServerGone(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e

    async def get_json(self, path: str, **query):
        return await self.request("GET", path + (("?" + urlencode(query)) if query else ""))

    async def records(self, prompt_id: str) -> list:
        """The pack's run records of a prompt; [] from a server without the pack."""
        try:
            return await self.get_json(RUNS_ROUTE, prompt_id=prompt_id)
        except ServerGone as e:
            if "HTTP 404" in str(e):
                return []
            raise

    async def queue(self, prompt: dict) -> tuple[str | None, str]:
        """(prompt id, "") or (None, the server's reason for refusing the prompt)."""
        import aiohttp
        try:
            async with self.session.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}) as r:
                if r.status == 200:
                    return (await r.json(content_type=None))["prompt_id"], ""
                if r.status == 400:  # ComfyUI's answer to a prompt it refuses
                    return None, refusal(await r.json(content_type=None))
                raise ServerGone(f"HTTP {r.status} for /prompt")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError) as e:
            raise ServerGone(f"{type(e).__name__}: {e}") from e

    async def queue_ids(self) -> tuple[set, set]:
        """The ids of the prompts it is running and of those waiting in its queue."""
        queue = await self.get_json("/queue")
        return ({item[1] for item in queue.get("queue_running", [])},
                {item[1] for item in queue.get("queue_pending", [])})

    async def history(self, prompt_id: str) -> dict:
        """The prompt's history entry once it has finished, else {}."""
        entry = (await self.get_json(f"/history/{prompt_id}")).get(prompt_id, {})
        return entry if entry.get("status", {}).get("completed") is not None else {}

    async def download(self, image: dict, path: Path) -> None:
        import aiohttp
        query = {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": image.get("type", "output")}
        try:
            async with self.session.get(self.url + "/view?" + urlencode(query)) as r:
                if r.status != 200:
                    raise ServerGone(f"HTTP {r.status} for /view")
                path.write_bytes(await r.read())
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ServerGone(f"{type(e).__name__}: {e}") from e

    async def withdraw(self, prompt_ids) -> None:
        """Take the sweep's prompts off the server: out of its queue, and the one running interrupted (by
        its id: ComfyUI interrupts a named prompt only while that prompt runs)."""
        running, pending = await self.queue_ids()
        if pending & set(prompt_ids):
            await self.request("POST", "/queue", json={"delete": sorted(pending & set(prompt_ids))})
        for prompt_id in running & set(prompt_ids):
            await self.request("POST", "/interrupt", json={"prompt_id": prompt_id})


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def refusal(body: dict) -> str:
    """The server's reason for refusing a prompt, in one line: ComfyUI's own message and its details."""
    error = body.get("error", {})
    parts = [error.get("message", "") if isinstance(error, dict) else str(error)]
    for nid, node_error in (body.get("node_errors") or {}).items():
        for e in node_error.get("errors", []):
            said = ": ".join(dict.fromkeys(t for t in (e.get("message"), e.get("details")) if t))
            parts.append(f"node {nid} ({node_error.get('class_type', '')}): {said}")
    return "; ".join(p for p in parts if p)


def seconds_of(history: dict) -> float | None:
    stamps = {m[0]: m[1].get("timestamp") for m in history.get("status", {}).get("messages", []) if isinstance(m[1], dict)}
    start = stamps.get("execution_start")
    end = stamps.get("execution_success") or stamps.get("execution_error")
    return (end - start) / 1000.0 if start is not None and end is not None else None


async def finish(server: Server, run: Run, out: Path) -> None:
    """Fill a finished run from the server that ran it: status, message, seconds, images, the pack's records."""
    for _ in range(50):  # the history is normally there already; a server behind a proxy may lag
        history = await server.history(run.prompt_id)
        if history:
            break
        await asyncio.sleep(0.1)
    status = history.get("status", {})
    images = []
    for nid, output in history.get("outputs", {}).items():
        for k, image in enumerate(output.get("images", [])):
            if image.get("type", "output") != "output":
                continue  # previews are temporary
            name = f"{run.key}_{nid}_{k}{Path(image['filename']).suffix or '.png'}"
            await server.download(image, out / "images" / name)
            images.append(f"images/{name}")
    records = await server.records(run.prompt_id)
    errors = [m[1] for m in status.get("messages", []) if m[0] in ("execution_error", "execution_interrupted")]
    run.status = "success" if status.get("status_str") == "success" else "error"
    run.message = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', 'interrupted')}"
                            for e in errors) or ("" if run.status == "success" else "the server recorded no result")
    run.seconds, run.images, run.records = seconds_of(history), images, records


# --- the servers' check ----------------------------------------------------------------------------

def combo_choices(spec) -> list | None:
    """The choices of a combo input as /object_info describes it, in either of ComfyUI's forms
    ([[choices], {...}] or ["COMBO", {"options": [choices]}]); None for any other input."""
    if not isinstance(spec, list) or not spec:
        return None
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(spec[0], list):
        choices = spec[0]
    elif spec[0] == "COMBO" and "remote" not in options:
        choices = options.get("options", [])
    else:
        return None
    return choices if all(isinstance(c, (str, int, float)) for c in choices) else None


def lacking(node_info: dict, prompts: list[dict]) -> list[str]:
    """What one server lacks to run the grid: node types it does not have, and the values the prompts give to
    a list input (a checkpoint's, a LoRA's, a sampler's name) that are not among its choices."""
    missing, seen = [], set()
    for prompt in prompts:
        for nid, node in prompt.items():
            info = node_info.get(node["class_type"])
            if not info:
                if node["class_type"] not in seen:
                    missing.append(f"node type {node['class_type']} (node {nid}): install the same custom nodes there")
                    seen.add(node["class_type"])
                continue
            specs = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
            for name, value in node.get("inputs", {}).items():
                choices = combo_choices(specs.get(name))
                if choices is None or isinstance(value, list) or value in choices or (nid, name, value) in seen:
                    continue
                seen.add((nid, name, value))
                missing.append(f"{name} {value!r} (node {nid}, {node['class_type']}): "
                               + (f"it has {len(choices)} others" if choices else "it has none"))
    return missing


async def check_servers(servers: list[Server], prompts: list[dict]) -> list[str]:
    """Every server answers and has what the prompts use; one line per problem, naming the server."""
    classes = sorted({node["class_type"] for prompt in prompts for node in prompt.values()})

    async def node_info(server: Server, node_class: str) -> dict:
        try:
            return await server.get_json(f"/object_info/{quote(node_class, safe='')}")
        except ServerGone as e:
            if "HTTP 404" in str(e):  # a name no route matches (one with a '/'): no such node there either
                return {}
            raise

    async def check(server: Server) -> list[str]:
        try:
            await server.queue_ids()  # a ComfyUI answers here
            infos = await asyncio.gather(*(node_info(server, c) for c in classes))
        except ServerGone as e:
            return [f"{server.url} does not answer ({e})"]
        return [f"{server.url} has no {what}" for what in lacking({k: v for i in infos for k, v in i.items()}, prompts)]

    return [line for lines in await asyncio.gather(*(check(s) for s in servers)) for line in lines]


# --- the dispatch ----------------------------------------------------------------------------------

class Dispatch:
    """Hands the runs to the servers a few at a time each (`depth`: the one running and the next ready), so
    that a server never waits for the sweep and a slow one holds no run that a free one could take.

    A server that stops answering keeps its runs for `grace` seconds (a short glitch costs nothing); then
    they go back to the front of the waiting line, for the others. Whenever a server answers (again), what
    it holds is checked against its own queue and history: finished runs are collected, runs it lost (a
    restart) wait again, and runs it was relieved of are taken back if no other server has them yet, or
    else taken off its queue. A run is therefore run twice only when a server that had it running came
    back after the others had started it. While it answers, its events tell when a run ends, and its queue
    is read every QUEUE_CHECK_SECONDS as well, for the ends whose events did not come (see serve)."""

    def __init__(self, servers: list[Server], runs: list[Run], out: Path, axes: list[Axis], *, depth: int,
                 grace: float, patience: float, heartbeat: float, progress, earlier: list[dict] = ()):
        self.servers, self.runs, self.out, self.axes = servers, runs, out, axes
        self.earlier = earlier  # the folder's runs of earlier sweeps outside this grid, kept in its records
        self.depth, self.grace, self.patience, self.progress = depth, grace, patience, progress
        self.heartbeat = heartbeat  # seconds between pings: a hung server is noticed within 1.5 times that
        self.waiting: deque[Run] = deque()
        for run in runs:
            if run.status != "success":
                run.status, run.server, run.prompt_id = "waiting", "", ""
                self.waiting.append(run)
        self.done = asyncio.Event()
        self.gave_up = ""
        self.failure: BaseException | None = None  # an error on this side (a full disk): it ends the sweep
        self.chores: set = set()

    def unfinished(self) -> bool:
        return bool(self.waiting) or any(s.holding or s.sending for s in self.servers)

    async def run(self) -> None:
        tasks = [self.start(self.serve(server)) for server in self.servers] + [self.start(self.watch())]
        try:
            if self.unfinished():
                await self.done.wait()
        finally:
            every = {*tasks, *self.chores}
            for task in every:
                task.cancel()
            await asyncio.gather(*every, return_exceptions=True)
        if self.failure is not None:
            raise self.failure

    def start(self, job) -> asyncio.Task:
        """A task of the sweep's; an error it does not expect (not a server's: those are handled where they
        happen) ends the sweep and is raised by run()."""
        async def guarded():
            try:
                await job
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failure = self.failure or e
                self.done.set()
        task = asyncio.create_task(guarded())
        self.chores.add(task)
        task.add_done_callback(self.chores.discard)
        return task

    async def withdraw_all(self) -> None:
        """Ctrl-C: every server holding runs of the sweep loses them (one that does not answer is given up on
        after 10 s)."""
        async def withdraw(server):
            try:
                await asyncio.wait_for(server.withdraw(list(server.holding)), 10)
            except (ServerGone, asyncio.TimeoutError):
                pass
        await asyncio.gather(*(withdraw(s) for s in self.servers if s.holding))

    # one task per server: connect, catch up, fill, follow; when it stops answering, retry every second
    async def serve(self, server: Server) -> None:
        import aiohttp
        while True:
            # A new client id for each connection. ComfyUI keeps one websocket per client id, and where the
            # handler of the connection before ends only after the new one came (a server that hung, or was
            # too busy to answer a ping, sees the old one closed late), it unregisters the new one: the events
            # of prompts queued under that id would go nowhere. Runs queued under an earlier id are followed
            # by reading the server's queue (check).
            server.client_id = uuid.uuid4().hex
            try:
                # bounded: a hung server (or proxy) accepts the connection and never answers
                ws = await asyncio.wait_for(server.session.ws_connect(server.ws_url, heartbeat=self.heartbeat), 10)
                async with ws:
                    server.connected = True
                    await self.catch_up(server)
                    if server.down_since is not None:
                        self.progress.say(f"{server.url} answers again")
                    server.answering, server.down_since = True, None
                    self.progress.show(server)
                    await self.fill(server)
                    await self.follow(server, ws)
                failure = ws.exception()  # no answer to a ping, for one
                raise ServerGone(f"{type(failure).__name__}: {failure}" if failure else "it closed the connection")
            except (ServerGone, aiohttp.ClientError, asyncio.TimeoutError) as e:
                server.connected = server.answering = False
                server.running = None
                if server.down_since is None:
                    server.down_since = time.monotonic()
                    self.progress.say(f"{server.url} does not answer ({str(e) or type(e).__name__})"
                                      + (f"; what it holds ({plural(len(server.holding), 'run')}) goes to the "
                                         f"others in {self.grace:g} s if it stays away" if server.holding else ""))
                self.progress.show(server)
            await asyncio.sleep(1.0)

    async def watch(self) -> None:
        """The clocks: a server away for `grace` seconds gives up its runs (not while it is catching up on
        them after reconnecting); no server answering for `patience` seconds ends the sweep."""
        nobody_since = None
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for server in self.servers:
                if (server.down_since is not None and not server.connected and server.holding
                        and now - server.down_since >= self.grace):
                    server.released.update(server.holding)
                    self.wait_again(list(server.holding.values()))
                    server.holding.clear()
                    self.progress.show(server)
            if any(s.answering for s in self.servers):
                nobody_since = None
            elif nobody_since is None:
                nobody_since = now
            elif now - nobody_since > self.patience:
                self.gave_up = f"no server answered for {self.patience:g} s"
                self.done.set()

    def wait_again(self, runs: list[Run]) -> None:
        """Runs back to the front of the line (in grid order), and every server that answers asked to take them."""
        for run in reversed(runs):
            run.status, run.server, run.prompt_id = "waiting", "", ""
            self.waiting.appendleft(run)
        for server in self.servers:
            if server.answering:
                self.start(self.fill_quietly(server))

    async def fill_quietly(self, server: Server) -> None:
        try:
            await self.fill(server)
        except ServerGone:
            pass  # the server's own task notices when it reads its connection, and retries

    async def fill(self, server: Server) -> None:
        """Queue waiting runs on the server until it holds `depth` of them."""
        while server.answering and self.waiting and len(server.holding) + server.sending < self.depth:
            run = self.waiting.popleft()
            run.status = "sending"  # out of the line: a server catching up must not take it back meanwhile
            server.sending += 1
            try:
                prompt_id, reason = await server.queue(run.prompt)
            except ServerGone:
                run.status = "waiting"
                self.waiting.appendleft(run)
                raise
            finally:
                server.sending -= 1
            if prompt_id is None:  # refused (a value out of range): a row with the reason
                run.status, run.server, run.message = "error", server.url, reason
                self.finished(run)
            else:
                run.status, run.server, run.prompt_id, run.queued_at = "queued", server.url, prompt_id, time.time()
                run.message = ""
                server.holding[prompt_id] = run
            self.progress.show(server)

    async def follow(self, server: Server, ws) -> None:
        """The server's events until it closes the connection: progress, and each run's end. Its queue is read
        too, every QUEUE_CHECK_SECONDS: a run whose events went elsewhere (see serve) is collected all the same."""
        import aiohttp
        ended = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        receiving = asyncio.ensure_future(ws.receive())
        checked = time.monotonic()
        try:
            while True:
                await asyncio.wait({receiving}, timeout=max(0.0, checked + QUEUE_CHECK_SECONDS - time.monotonic()))
                if time.monotonic() >= checked + QUEUE_CHECK_SECONDS:
                    await self.check(server)
                    checked = time.monotonic()
                if not receiving.done():
                    continue
                message = receiving.result()
                if message.type in ended:
                    return
                receiving = asyncio.ensure_future(ws.receive())
                if message.type == aiohttp.WSMsgType.TEXT:  # not the binary previews
                    await self.on_event(server, json.loads(message.data))
        finally:
            receiving.cancel()

    async def on_event(self, server: Server, event: dict) -> None:
        data = event.get("data") or {}
        run = server.holding.get(data.get("prompt_id"))
        if run is None:
            return
        if event["type"] == "executing" and data.get("node") is not None and server.running is not run:
            server.running, server.step = run, (0, 0)
            self.progress.show(server)
        elif event["type"] == "progress":
            server.step = (data.get("value", 0), data.get("max", 0))
            self.progress.show(server, often=True)
        # "executing" with no node comes once the server has stored the prompt's history
        # (execution_success and execution_error come before that)
        elif event["type"] == "executing" and data.get("node") is None:
            await self.collect(server, data["prompt_id"])
            await self.fill(server)

    async def collect(self, server: Server, prompt_id: str) -> None:
        run = server.holding[prompt_id]
        await finish(server, run, self.out)  # ServerGone: it stays held, and is collected when the server answers
        del server.holding[prompt_id]
        server.running = None if server.running is run else server.running
        server.finished += 1
        self.finished(run)

    def finished(self, run: Run) -> None:
        save(self.out, self.axes, self.runs, self.earlier)
        self.progress.finished(run)
        if not self.unfinished():
            self.done.set()

    async def check(self, server: Server) -> tuple[set, set]:
        """The runs it holds that the server no longer has in its queue: collected where they ran, else (lost
        with a restart) waiting again. Returns its queue: the prompt ids running, and those pending."""
        held = list(server.holding)  # before asking: a run queued while the answer comes is not in it
        running, pending = await server.queue_ids()
        for prompt_id in held:
            if prompt_id not in server.holding or prompt_id in running or prompt_id in pending:
                continue  # collected meanwhile, or still to run
            if await server.history(prompt_id):  # ComfyUI moves a prompt from its queue to its history at once
                await self.collect(server, prompt_id)
                await self.fill(server)
            else:
                self.wait_again([server.holding.pop(prompt_id)])
        return running, pending

    async def catch_up(self, server: Server) -> None:
        """On (re)connecting: what happened to the runs the server held, or was relieved of, meanwhile."""
        running, pending = await self.check(server)
        for prompt_id, run in list(server.released.items()):
            queued = prompt_id in running or prompt_id in pending
            ran = not queued and run.status == "waiting" and bool(await server.history(prompt_id))
            if run.status == "waiting" and (queued or ran):  # nobody took it meanwhile: it stays here
                self.waiting.remove(run)
                run.status, run.server, run.prompt_id = "queued", server.url, prompt_id
                server.holding[prompt_id] = run
                if ran:
                    await self.collect(server, prompt_id)
            elif prompt_id in pending:  # another server has it, or had it
                await server.request("POST", "/queue", json={"delete": [prompt_id]})
            del server.released[prompt_id]


class Progress:
    """Runs done of the total, and one line per server: what it is running, what it holds, what it did.
    The server lines only on a terminal (in a log they would be a line per step); messages always."""

    def __init__(self, runs: list[Run], servers: list[Server], axes: list[Axis]):
        from tqdm import tqdm
        self.axes = axes
        done = sum(r.status == "success" for r in runs)
        self.bar = tqdm(total=len(runs), initial=done, desc="runs", unit="run", position=0)
        on_terminal = sys.stderr.isatty()
        self.lines = {s.url: tqdm(total=0, position=i + 1, bar_format="{desc}", leave=False, disable=not on_terminal)
                      for i, s in enumerate(servers)}
        self.shown = {}

    def label(self, run: Run) -> str:
        return ", ".join([f"{a.key}={v}" for a, v in zip(self.axes, run.settings)] + [f"seed {run.seed}"])

    def show(self, server: Server, often: bool = False) -> None:
        if often and time.monotonic() - self.shown.get(server.url, 0) < 0.2:
            return
        self.shown[server.url] = time.monotonic()
        running, step = server.running, server.step
        if not server.answering:
            state = "does not answer" + (f", holds {len(server.holding)}" if server.holding else "")
        elif running is None:
            state = f"idle; {len(server.holding)} queued, {server.finished} done"
        else:
            state = (f"running {self.label(running)}" + (f" step {step[0]}/{step[1]}" if step[1] else "")
                     + f"; {len(server.holding) - 1} queued, {server.finished} done")
        self.lines[server.url].set_description_str(f"{server.url}: {state}")

    def say(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def finished(self, run: Run) -> None:
        self.bar.update(1)

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        self.bar.close()


async def sweep(args, axes: list[Axis], runs: list[Run], out: Path, earlier: list[dict],
                prompts_to_check: list[dict]) -> str:
    """Check the servers, then run the grid over them; "" or why the sweep stopped early.
    UsageError where a server lacks what the runs use (nothing queued)."""
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        servers = [Server(session, url) for url in args.servers]
        problems = await check_servers(servers, prompts_to_check)
        if problems:
            raise UsageError("the servers must all run what the workflow uses; nothing was queued:\n  "
                             + "\n  ".join(problems))
        (out / "images").mkdir(parents=True, exist_ok=True)
        progress = Progress(runs, servers, axes)
        dispatch = Dispatch(servers, runs, out, axes, depth=args.depth, grace=args.grace, patience=args.patience,
                            heartbeat=args.heartbeat, progress=progress, earlier=earlier)
        try:
            await dispatch.run()
        except BaseException:  # Ctrl-C, or an error on this side: nobody would collect what the servers hold
            await dispatch.withdraw_all()
            raise
        finally:
            for run in runs:
                if run.status in ("waiting", "sending", "queued"):
                    run.status, run.server = "missing", ""
            save(out, axes, runs, earlier)
            progress.close()
        return dispatch.gave_up


# --- the contact sheet -----------------------------------------------------------------------------

def contact_sheet(axes: list[Axis], runs: list[Run], out: Path, cell: int = 256) -> Path:
    """The first axis across; the other axes and the seeds down. Each cell: the run's first image scaled
    to the cell's width, and its evaluations (with the unconditional pass) and seconds, or its status."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default()
    across = axes[0].values if axes else (None,)
    down = sorted({(r.settings[1:], r.seed) for r in runs}, key=lambda d: ([str(v) for v in d[0]], d[1]))
    by_cell = {(r.settings[0] if axes else None, r.settings[1:], r.seed): r for r in runs}
    thumbs = {}
    for run in runs:
        if run.status == "success" and run.images:
            with Image.open(out / run.images[0]) as image:
                w, h = image.size
                size = (cell - 8, max(1, round(h * (cell - 8) / w)))
                # nearest when enlarging: a small picture stays sharp
                thumbs[run.key] = image.convert("RGB").resize(size, Image.NEAREST if w < size[0] else Image.LANCZOS)
    label_w, head_h, foot_h = 170, 36, 30
    heights = [max([thumbs[r.key].height for r in (by_cell.get((v, rest, seed)) for v in across)
                    if r is not None and r.key in thumbs] or [60]) + 8 for rest, seed in down]
    sheet = Image.new("RGB", (label_w + cell * len(across), head_h + sum(h + foot_h for h in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    if axes:
        draw.text((label_w, 4), axes[0].key, fill="black", font=font)
    for i, value in enumerate(across):
        draw.text((label_w + i * cell + 6, 18), str(value), fill="black", font=font)
    y = head_h
    for (rest, seed), height in zip(down, heights):
        lines = [f"{a.key}={v}" for a, v in zip(axes[1:], rest)] + [f"seed {seed}"]
        draw.multiline_text((6, y + 6), "\n".join(lines), fill="black", font=font)
        for i, value in enumerate(across):
            run, x = by_cell.get((value, rest, seed)), label_w + i * cell
            if run is None:
                continue
            if run.key in thumbs:
                sheet.paste(thumbs[run.key], (x + 4, y + 4))
                evals, uncond = evaluations(run)
                text = (f"{evals} evals ({uncond} uncond)" if evals is not None else "no guidance record") + \
                    (f", {run.seconds:.1f} s" if run.seconds is not None else "")
            else:
                text = run.status if run.status != "success" else "no image"
            draw.text((x + 4, y + height + 4), text, fill="black" if run.status == "success" else (200, 0, 0), font=font)
        y += height + foot_h
    path = out / "sheet.png"
    sheet.save(path)
    return path


# --- the command -----------------------------------------------------------------------------------

GRID_LIMIT = 100_000  # runs a grid may have without --yes


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
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
                             "never answers) is noticed within 1.5 times this (default %(default)s)")
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
    todo = sum(r.status != "success" for r in runs)
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
    failed = [r for r in runs if r.status != "success"]
    by_server, UNNAMED = {}, "a server not recorded"
    for r in runs:
        if r.status == "success":
            by_server[r.server] = by_server.get(r.server, 0) + 1
    print(f"{len(runs) - len(failed)} of {len(runs)} runs succeeded in {time.time() - started:.0f} s "
          f"({', '.join(f'{n} on {url or UNNAMED}' for url, n in by_server.items())}); wrote "
          f"{out / 'runs.csv'}, {out / 'runs.json'}, {sheet}", file=sys.stderr)
    if stopped:
        print(f"stopped early: {stopped}; run the same command to go on", file=sys.stderr)
    for r in failed:
        print(f"  {r.status}: seed {r.seed} {dict(zip(keys, r.settings))}: {r.message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
