"""Queue a grid of settings through a ComfyUI server's API and collect the results side by side.

    python scripts/sweep.py workflows/api/guidance_interval_patch_sdxl.json --server http://127.0.0.1:8188 \\
        --set GuidanceIntervalPatch.sigma_hi=2.9,5.42 --set KSampler.cfg=7,10 --seeds 2 --out sweep

WORKFLOW is an API-format workflow (the files in workflows/api/, or the graph editor's "Export (API)").
Each --set NODE.INPUT=V1,V2,... is an axis; NODE is a node id or its title (_meta.title), INPUT one of
its widget inputs. The grid is the product of the axes times the seeds; the seeds go to every seed
input of the workflow (seed, noise_seed). The command queues the grid, follows it over the websocket,
downloads every output image and writes, in DIR:
- runs.csv: one row per run: prompt_id, status, seed, one column per --set key, seconds (as the
  server measured it), evaluations and uncond_evaluations (model evaluations and of those, how many ran
  the unconditional pass, from the pack's run records; empty for a run without the pack's nodes), the
  image files, and the server's message for a run that failed;
- runs.json: the same with the pack's full run records (guided steps, weight per step and sample);
- sheet.png: a contact sheet, the first axis across, the other axes and the seeds down.
Running the same command again queues only the runs that are missing or failed and rebuilds the sheet
from all of them; Ctrl-C leaves every finished run recorded. The exit status is 0 when every run
succeeded, 1 when some failed, 2 for a usage error.

Only the standard library and packages ComfyUI installs (aiohttp, Pillow, tqdm).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import itertools
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

SEED_INPUTS = ("seed", "noise_seed")
RUNS_ROUTE = "/guidance_schedules/runs"


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
    return Axis(node, input_name, target, tuple(parse_value(v.strip()) for v in values.split(",")))


def parse_seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give a count N (seeds 0..N-1) or a list S1,S2,...") from None
    if len(values) == 1:
        if values[0] < 1:
            raise UsageError("--seeds: the count must be at least 1")
        return list(range(values[0]))
    return values


@dataclass
class Run:
    settings: tuple  # one value per axis
    seed: int
    key: str  # stable: the same settings and seed in a later sweep are the same run
    prompt: dict
    status: str = "missing"  # missing, queued, success, error
    prompt_id: str = ""
    seconds: float | None = None
    images: list = field(default_factory=list)
    records: list = field(default_factory=list)
    message: str = ""


def run_key(axes: list[Axis], settings: tuple, seed: int) -> str:
    text = json.dumps([[a.key for a in axes], list(settings), seed])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def grid(workflow: dict, axes: list[Axis], seeds: list[int]) -> list[Run]:
    seed_targets = [(nid, name) for nid, node in workflow.items() for name in SEED_INPUTS
                    if name in node.get("inputs", {}) and not isinstance(node["inputs"][name], list)]
    runs = []
    for settings in itertools.product(*(a.values for a in axes)):
        for seed in seeds:
            prompt = json.loads(json.dumps(workflow))
            for axis, value in zip(axes, settings):
                prompt[axis.node]["inputs"][axis.input] = value
            for nid, name in seed_targets:
                prompt[nid]["inputs"][name] = seed
            runs.append(Run(settings, seed, run_key(axes, settings, seed), prompt))
    return runs


# --- what is kept on disk --------------------------------------------------------------------------

def load_previous(out: Path) -> dict:
    path = out / "runs.json"
    if not path.is_file():
        return {}
    return {r["key"]: r for r in json.loads(path.read_text()).get("runs", [])}


def save(out: Path, axes: list[Axis], runs: list[Run]) -> None:
    """runs.json and runs.csv, written whole after every finished run (a new file, then renamed)."""
    rows = [{"key": r.key, "prompt_id": r.prompt_id, "status": r.status, "seed": r.seed,
             "settings": dict(zip([a.key for a in axes], r.settings)), "seconds": r.seconds,
             "evaluations": evaluations(r)[0], "uncond_evaluations": evaluations(r)[1], "images": r.images,
             "message": r.message, "records": r.records} for r in runs]
    tmp = out / "runs.json.tmp"
    tmp.write_text(json.dumps({"axes": [a.key for a in axes], "runs": rows}, indent=1))
    tmp.replace(out / "runs.json")
    tmp = out / "runs.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt_id", "status", "seed", *[a.key for a in axes], "seconds", "evaluations",
                         "uncond_evaluations", "images", "message"])
        for row in rows:
            writer.writerow([row["prompt_id"], row["status"], row["seed"], *row["settings"].values(),
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


# --- the server ------------------------------------------------------------------------------------

class Server:
    def __init__(self, session, url: str, client_id: str):
        self.session, self.url, self.client_id = session, url.rstrip("/"), client_id

    async def get_json(self, path: str, **query):
        async with self.session.get(self.url + path + (("?" + urlencode(query)) if query else "")) as r:
            if r.status == 404 and path == RUNS_ROUTE:
                return []  # a server without this pack
            r.raise_for_status()
            return await r.json()

    async def queue(self, prompt: dict) -> tuple[str | None, str]:
        """(prompt id, "") or (None, the server's reason for refusing it)."""
        async with self.session.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}) as r:
            body = await r.json(content_type=None)
            if r.status == 200:
                return body["prompt_id"], ""
            return None, refusal(body)

    async def download(self, image: dict, path: Path) -> None:
        query = {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": image.get("type", "output")}
        async with self.session.get(self.url + "/view?" + urlencode(query)) as r:
            r.raise_for_status()
            path.write_bytes(await r.read())

    async def unqueue(self, prompt_ids: list[str]) -> None:
        if prompt_ids:
            async with self.session.post(self.url + "/queue", json={"delete": prompt_ids}):
                pass


def refusal(body: dict) -> str:
    """The server's reason for refusing a prompt, in one line."""
    error = body.get("error", {})
    parts = [error.get("message", "") if isinstance(error, dict) else str(error)]
    for nid, node_error in (body.get("node_errors") or {}).items():
        for e in node_error.get("errors", []):
            parts.append(f"node {nid} ({node_error.get('class_type', '')}): {e.get('details') or e.get('message')}")
    return "; ".join(p for p in parts if p)


def seconds_of(history: dict) -> float | None:
    stamps = {m[0]: m[1].get("timestamp") for m in history.get("status", {}).get("messages", []) if isinstance(m[1], dict)}
    start = stamps.get("execution_start")
    end = stamps.get("execution_success") or stamps.get("execution_error")
    return (end - start) / 1000.0 if start is not None and end is not None else None


async def finish(server: Server, run: Run, out: Path) -> None:
    """Fill a finished run from the server: status, message, seconds, images, the pack's records."""
    for _ in range(50):  # the history is normally there already; a server behind a proxy may lag
        history = (await server.get_json(f"/history/{run.prompt_id}")).get(run.prompt_id, {})
        if history.get("status", {}).get("completed") is not None:
            break
        await asyncio.sleep(0.1)
    status = history.get("status", {})
    run.status = "success" if status.get("status_str") == "success" else "error"
    errors = [m[1] for m in status.get("messages", []) if m[0] in ("execution_error", "execution_interrupted")]
    run.message = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', 'interrupted')}"
                            for e in errors) or ("" if run.status == "success" else "the server recorded no result")
    run.seconds = seconds_of(history)
    run.images = []
    for nid, output in history.get("outputs", {}).items():
        for k, image in enumerate(output.get("images", [])):
            if image.get("type", "output") != "output":
                continue  # previews are temporary
            name = f"{run.key}_{nid}_{k}{Path(image['filename']).suffix or '.png'}"
            await server.download(image, out / "images" / name)
            run.images.append(f"images/{name}")
    run.records = await server.get_json(RUNS_ROUTE, prompt_id=run.prompt_id)


async def sweep(args, axes: list[Axis], runs: list[Run], out: Path) -> None:
    import aiohttp
    from tqdm import tqdm
    client_id = uuid.uuid4().hex
    todo = [r for r in runs if r.status != "success"]
    done_bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="runs", position=0, unit="run")
    step_bar = tqdm(total=0, desc="steps", position=1, leave=False, unit="step")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as session:
        server = Server(session, args.server, client_id)
        ws_url = server.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        async with session.ws_connect(ws_url, heartbeat=30) as ws:
            pending: dict[str, Run] = {}
            try:
                for run in todo:
                    prompt_id, reason = await server.queue(run.prompt)
                    if prompt_id is None:
                        run.status, run.message, run.prompt_id = "error", reason, ""
                        done_bar.update(1)
                        save(out, axes, runs)
                    else:
                        run.status, run.prompt_id, run.message = "queued", prompt_id, ""
                        pending[prompt_id] = run
                while pending:
                    message = await ws.receive()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            raise ConnectionError("the server closed the websocket")
                        continue  # binary previews
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    run = pending.get(data.get("prompt_id"))
                    if run is None:
                        continue
                    if event["type"] == "progress":
                        step_bar.reset(total=data.get("max", 0))
                        step_bar.update(data.get("value", 0))
                    # "executing" with no node comes once the server has stored the prompt's history
                    # (execution_success and execution_error come before that)
                    if event["type"] == "executing" and data.get("node") is None:
                        await finish(server, run, out)
                        del pending[run.prompt_id]
                        done_bar.update(1)
                        save(out, axes, runs)
            except (KeyboardInterrupt, asyncio.CancelledError):
                await server.unqueue(list(pending))
                raise
            finally:
                for run in pending.values():
                    run.status = "missing"
                save(out, axes, runs)
                step_bar.close()
                done_bar.close()


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

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python scripts/sweep.py workflows/api/adaptive_guidance_patch_sdxl.json \\\n"
               "      --set AdaptiveGuidancePatch.threshold=0.99,0.995,0.999 --seeds 3 --out ag_sweep")
    parser.add_argument("workflow", help="an API-format workflow (workflows/api/*.json, or the editor's Export (API))")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="the ComfyUI server (default %(default)s)")
    parser.add_argument("--set", dest="axes", action="append", default=[], metavar="NODE.INPUT=V1,V2,...",
                        help="an axis of the grid: a node id or title, one of its inputs, the values "
                             "(e.g. --set KSampler.cfg=5,7.5,10); repeat for more axes")
    parser.add_argument("--seeds", default="1", metavar="N|S1,S2,...",
                        help="N seeds (0..N-1) or a list; they go to every seed/noise_seed input (default 1)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where runs.csv, runs.json, sheet.png and images/ go")
    args = parser.parse_args(argv)
    try:
        workflow = json.loads(Path(args.workflow).read_text())
        if not isinstance(workflow, dict) or "nodes" in workflow or \
                not all(isinstance(n, dict) and "class_type" in n for n in workflow.values()):
            raise UsageError(f"{args.workflow} is not an API-format workflow: use the files in workflows/api/ "
                             "or the graph editor's Export (API)")
        axes = [parse_axis(workflow, spec) for spec in args.axes]
        keys = [a.key for a in axes]
        if len(set((a.node, a.input) for a in axes)) != len(axes):
            raise UsageError(f"--set: an input is given twice ({', '.join(keys)})")
        seeds = parse_seeds(args.seeds)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {args.workflow}: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    runs = grid(workflow, axes, seeds)
    previous = load_previous(out)
    for run in runs:
        kept = previous.get(run.key)
        if kept and kept["status"] == "success":
            run.status, run.prompt_id, run.seconds = "success", kept["prompt_id"], kept["seconds"]
            run.images, run.records = kept["images"], kept["records"]
    todo = sum(r.status != "success" for r in runs)
    print(f"{len(runs)} runs ({' x '.join(str(len(a.values)) for a in axes) or '1'} settings x {len(seeds)} seeds); "
          f"{len(runs) - todo} done before, {todo} to queue", file=sys.stderr)
    started = time.time()
    try:
        if todo:
            asyncio.run(sweep(args, axes, runs, out))
    except KeyboardInterrupt:
        print("\ninterrupted: the finished runs are recorded; run the same command to go on", file=sys.stderr)
        contact_sheet(axes, runs, out)
        return 130
    except (OSError, ConnectionError) as e:
        print(f"error: {args.server}: {e}", file=sys.stderr)
        save(out, axes, runs)
        contact_sheet(axes, runs, out)
        return 1
    sheet = contact_sheet(axes, runs, out)
    failed = [r for r in runs if r.status != "success"]
    print(f"{len(runs) - len(failed)} of {len(runs)} runs succeeded in {time.time() - started:.0f} s; wrote "
          f"{out / 'runs.csv'}, {out / 'runs.json'}, {sheet}", file=sys.stderr)
    for r in failed:
        print(f"  {r.status}: seed {r.seed} {dict(zip(keys, r.settings))}: {r.message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
