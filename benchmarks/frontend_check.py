"""The pack in ComfyUI's real frontend, as a user sees it: headless Chromium drives the graph editor of a
ComfyUI server (main.py --cpu, started here with the pack and the test helper pack) over the DevTools
protocol, and takes screenshots.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/frontend_check.py [--out DIR] [--readme]

1. an example workflow from the template folder, loaded into the editor (docs/screenshot_example.png
   with --readme);
   (and the template browser, on a first start, lists the examples in reading order);
2. LinearAG Calibrate run from the editor on the tiny test model: the node shows its result (and so does
   the annealing trainer);
3. a prompt whose interval bounds select no step: the warning appears as a toast;
4. every example opened from its card in the template browser, on a 1600 x 900 window: at a zoom where the editor
   draws text, every node known;
5. a node's help page in the Node Info panel, in English, then the editor switched to Chinese (the node's name
   and help page in Chinese), Japanese and Korean (the node's name);
the node library shows every node of the pack beside the KSampler, with its search words where the host sends
them; and the annealing node, with no guidance network installed, names where to get one.
It prints what it found and exits non-zero when a check fails. Needs Debian's chromium.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT))  # standalone.py, which tests/host_support.py imports
from comfy_server import ComfyServer, free_port  # noqa: E402  (tests/: the server the host tests start)
from prompts import calibration_prompt  # noqa: E402

EXAMPLE = "Adaptive Guidance with KSampler (SDXL)"
TITLES = [p.stem for p in (ROOT / "workflows").glob("*.json")]
# the reading order the pack's web extension gives the template browser
TEMPLATE_ORDER = re.findall(r'"([^"]+)"', re.search(r"const TEMPLATE_ORDER = \[(.*?)\];",
                                                    (ROOT / "web" / "guidance_schedules.js").read_text(), re.S).group(1))

# the pack's node ids, as nodes/__init__.py registers them
PACK_NODES = re.findall(r'^    "(\w+)": ', (ROOT / "nodes" / "__init__.py").read_text().split("NODE_DISPLAY_NAME_MAPPINGS")[1], re.M)

CALIBRATION = calibration_prompt(f"frontend_{int(time.time())}")  # the tiny test model, from the editor

TRAINING = {  # the annealing trainer on the tiny test model, from the editor: its result appears on the node
    "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
    "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
    "3": {"class_type": "AnnealingGuidanceTrain", "inputs": {
        "model": ["1", 0], "latents": ["2", 0], "positive": ["1", 1], "negative": ["1", 2], "steps": 10,
        "scheduler": "auto", "training_images": 4, "batch_size": 1, "gradient_accumulation": 2, "learning_rate": 1e-3,
        "weight_decay": 0.01, "seed": 1, "delta_normalization": 5.0, "prompt_noise": True,
        "name": f"frontend_{int(time.time())}"}},
}

NO_STEP = {
    "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
    "2": {"class_type": "GuidanceIntervalPatch", "inputs": {"model": ["1", 0], "sigma_hi": 900.0, "sigma_lo": 500.0}},
    "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "4": {"class_type": "KSampler", "inputs": {
        "model": ["2", 0], "seed": 1, "steps": 8, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
        "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["3", 0], "denoise": 1.0}},
    "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "frontend_check"}},
}


class Browser:
    """Just enough of the DevTools protocol: evaluate JavaScript, take a screenshot."""

    def __init__(self, session, ws):
        self.session, self.ws, self.next_id = session, ws, 0

    async def call(self, method, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def js(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = await self.js(expression)
            except RuntimeError:  # the page is navigating (a reload): ask again
                value = None
            if value:
                return value
            await asyncio.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f} s for {expression}")

    async def screenshot(self, path: Path):
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(data))
        print("screenshot", path)


APP = "(window.app ?? window.comfyAPI?.app?.app)"


async def run_from_editor(browser, prompt: dict, node_type: str, screenshot: Path) -> str:
    """Load an API prompt into the editor, queue it, and return the result text the pack's web extension puts
    on the node of `node_type` once it ran."""
    await browser.js(f"{APP}.loadApiJson({json.dumps(prompt)}, {json.dumps(node_type)})")
    await asyncio.sleep(1)
    await browser.js(f"{APP}.queuePrompt(0, 1).then(() => true)")
    text = await browser.wait_for(
        f"(() => {{ const n = {APP}.graph._nodes.find(n => n.type === {json.dumps(node_type)});"
        " const w = n?.widgets?.find(w => w.name === 'result'); return w?.value || ''; })()", 120)
    await asyncio.sleep(1)
    await browser.screenshot(screenshot)
    return text


async def check(url: str, out: Path) -> list[str]:
    import aiohttp
    port = free_port()
    profile = tempfile.mkdtemp(prefix="gs-chromium-")
    chromium = subprocess.Popen(
        [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--window-size=1600,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/json") as r:
                        targets = await r.json()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                browser = Browser(session, ws)
                await browser.call("Page.navigate", url=url)
                await browser.wait_for(f"!!({APP}?.graph) && !!document.querySelector('canvas')", 120)
                await asyncio.sleep(3)

                # 0. a new user's first start opens the template browser: the pack's category, with its pictures
                # (it opens a few seconds after the editor: wait for the pack's entry in its list of extensions)
                try:
                    opened = await browser.wait_for(
                        "(() => { const e = Array.from(document.querySelectorAll('*')).find(e => e.children.length === 0"
                        " && e.textContent.trim() === 'comfyui-guidance-schedules'); e?.click(); return !!e; })()", 30)
                except TimeoutError:
                    opened = False
                    print("template browser: not opened at the first start")
                if opened:
                    await asyncio.sleep(3)
                    await browser.screenshot(out / "templates.png")
                    titles = await browser.js("document.body.innerText")
                    shown = [t for t in TITLES if t in titles]
                    print(f"template browser: {len(shown)} of {len(TITLES)} examples shown by title")
                    if len(shown) != len(TITLES):
                        failures.append(f"the template browser misses {sorted(set(TITLES) - set(shown))}")
                    in_view = sorted(shown, key=titles.index)
                    print("template browser's order:", "; ".join(in_view))
                    if in_view != [t for t in TEMPLATE_ORDER if t in shown]:
                        failures.append("the template browser does not list the examples in reading order")
                    # close it: the dialog's close button (the top-right one)
                    await browser.js("(() => { const b = Array.from(document.querySelectorAll('.p-dialog button'))"
                                     ".filter(b => b.querySelector('.pi-times, .icon-\\[lucide--x\\], svg'))"
                                     ".sort((a, b) => b.getBoundingClientRect().right - a.getBoundingClientRect().right"
                                     " || a.getBoundingClientRect().top - b.getBoundingClientRect().top)[0];"
                                     " b?.click(); return !!b; })()")
                    await browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))"
                                     " || true")  # the newer frontend's dialog closes on Escape
                    await asyncio.sleep(1)

                # 0b. the node library: every node of the pack under the KSampler's own category (whatever
                # the host calls it), with its search words where the host sends them (0.33 does)
                library = await browser.js(
                    "(() => { const t = LiteGraph.registered_node_types; return { ksampler: t.KSampler?.category,"
                    f" nodes: Object.fromEntries({json.dumps(PACK_NODES)}.map(n => [n, {{category: t[n]?.category,"
                    " title: t[n]?.title, aliases: t[n]?.nodeData?.search_aliases ?? null}]))}; })()")
                expected = f"{library['ksampler']}/guidance schedules"
                print(f"node library: KSampler under {library['ksampler']!r}; the pack's nodes:")
                for name, node in library["nodes"].items():
                    print(f"  {name}: {node['category']!r}, {node['title']!r}, search words {node['aliases']}")
                    if node["category"] != expected and not str(node["category"]).startswith(expected + "/"):
                        failures.append(f"{name} is under {node['category']!r}, not {expected!r}")
                    if node["aliases"] is not None and not any("guidance" in a.lower() for a in node["aliases"]):
                        failures.append(f"{name}'s search words {node['aliases']} lack 'guidance'")

                # 1. an example from the pack's template folder, as the template browser loads it
                example = await browser.js(
                    f"fetch('/api/workflow_templates/comfyui-guidance-schedules/{EXAMPLE}.json').then(r => r.json())"
                    f".then(async w => {{ await {APP}.loadGraphData(w); return w.nodes.length; }})")
                await asyncio.sleep(1)
                # at the scale a user reads it (below 0.6 the editor draws nodes without their text)
                await browser.js(f"(() => {{ const c = {APP}.canvas; c.ds.scale = 0.8; c.ds.offset = [130, 110];"
                                 " c.setDirty(true, true); return true; })()")
                await asyncio.sleep(2)
                await browser.screenshot(out / "example.png")
                drawn = await browser.js(f"{APP}.graph._nodes.length")
                print(f"example: {example} nodes in the file, {drawn} in the editor")
                if drawn != example:
                    failures.append(f"the example shows {drawn} nodes, its file has {example}")

                # 1b. with no guidance network installed, the annealing node says where to get one
                scheduler = await browser.js(
                    f"(() => {{ const n = LiteGraph.createNode('AnnealingGuidancePatch'); {APP}.graph.add(n);"
                    " const v = n.widgets.find(w => w.name === 'scheduler').value; n.graph.remove(n); return v; })()")
                print("annealing node's scheduler widget with no network installed:", scheduler)
                if not scheduler or "README" not in str(scheduler):
                    failures.append(f"the scheduler widget reads {scheduler!r}")

                # 2. LinearAG Calibrate from the editor: its result appears on the node
                text = await run_from_editor(browser, CALIBRATION, "LinearAGCalibrate", out / "calibration.png")
                print("calibration result on the node:", text)
                if "relative error" not in text:
                    failures.append("LinearAG Calibrate shows no result")

                # 2b. the annealing trainer from the editor: the file it wrote appears on the node
                trained = await run_from_editor(browser, TRAINING, "AnnealingGuidanceTrain", out / "training.png")
                print("training result on the node:", trained)
                if "wrote frontend_" not in trained:
                    failures.append("Train Annealing Network shows no result")

                # 3. a warning of the pack, as a toast (below)
                await warning_toast(browser, out, failures)
                # 4. every example from its card, at a zoom where the editor draws text
                await examples_from_cards(browser, failures)
                # 5. help and the user's language
                await help_and_languages(browser, out, failures)
    finally:
        chromium.terminate()
        chromium.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
    return failures


async def warning_toast(browser, out, failures):
    """A prompt whose interval bounds select no step: the pack's warning appears as a toast."""
    await browser.js(f"{APP}.loadApiJson({json.dumps(NO_STEP)}, 'no step')")
    await asyncio.sleep(1)
    await browser.js(f"{APP}.queuePrompt(0, 1).then(() => true)")
    toast = await browser.wait_for(
        "Array.from(document.querySelectorAll('.p-toast-message')).map(e => e.innerText).join(' | ')", 60)
    await browser.screenshot(out / "warning.png")
    print("toast:", toast)
    if "select none" not in toast:
        failures.append("the warning did not appear as a toast")


async def click_text(browser, text: str) -> bool:
    """Click the innermost element whose text is `text` (a card's title, a category)."""
    return await browser.js(f"(() => {{ const e = Array.from(document.querySelectorAll('*')).find(e => e.children.length"
                            f" === 0 && e.textContent.trim() === {json.dumps(text)}); e?.click(); return !!e; }})()")


TEXT_ZOOM = 0.6  # below it the editor draws nodes without their text
FRONTEND_ONLY = ("Note", "MarkdownNote")


async def examples_from_cards(browser, failures):
    for title in TEMPLATE_ORDER:
        await browser.js("(() => { const b = Array.from(document.querySelectorAll('button')).find(b =>"
                         " b.getAttribute('aria-label') === 'Templates'); b?.click(); return !!b; })()")
        await asyncio.sleep(2)
        await click_text(browser, "comfyui-guidance-schedules")
        await asyncio.sleep(2)
        if not await click_text(browser, title):
            failures.append(f"no card for {title!r} in the template browser")
            continue
        await asyncio.sleep(3)
        opened = await browser.js(
            f"(() => {{ const g = {APP}.graph; const known = LiteGraph.registered_node_types; return {{scale:"
            f" {APP}.canvas.ds.scale, nodes: g._nodes.length, unknown: g._nodes.map(n => n.type).filter(t =>"
            f" !known[t] && !{json.dumps(FRONTEND_ONLY)}.includes(t))}}; }})()")
        print(f"example {title!r}: {opened['nodes']} nodes, opens at {opened['scale']:.2f}",
              f"unknown {opened['unknown']}" if opened["unknown"] else "")
        if opened["scale"] < TEXT_ZOOM:
            failures.append(f"{title!r} opens at zoom {opened['scale']:.2f}, where the editor draws no text")
        if opened["unknown"]:
            failures.append(f"{title!r} has node types the editor does not know: {opened['unknown']}")


async def node_info(browser, node_type: str) -> str:
    """Add a node, select it, open the Node Info panel from the selection toolbox: the panel's text."""
    await browser.js(f"(() => {{ const g = {APP}.graph; g.clear(); const n = LiteGraph.createNode({json.dumps(node_type)});"
                     f" n.pos = [300, 200]; g.add(n); {APP}.canvas.selectNode(n); {APP}.canvas.setDirty(true, true);"
                     " return true; })()")
    await asyncio.sleep(1.5)
    await browser.js("(() => { const b = Array.from(document.querySelectorAll('button')).find(b =>"
                     " b.getAttribute('aria-label') === 'Node Info' || b.getAttribute('aria-label') === '节点信息'"
                     " || (b.getAttribute('aria-label') || '').includes('Info')); b?.click(); return !!b; })()")
    await asyncio.sleep(3)
    return await browser.js("document.body.innerText")


async def help_and_languages(browser, out, failures):
    help_node = "GuidanceIntervalPatch"
    text = await node_info(browser, help_node)
    await browser.screenshot(out / "help.png")
    print("help page (en) shown:", "Recommended settings" in text)
    if "Recommended settings" not in text or "2404.07724" not in text:
        failures.append(f"the Node Info panel does not show {help_node}'s help page")
    for language in ("zh", "ja", "ko"):
        expected = json.loads((ROOT / "locales" / language / "nodeDefs.json").read_text(encoding="utf-8"))
        await browser.js(f"{APP}.extensionManager.setting.set('Comfy.Locale', {json.dumps(language)}).then(() => true)")
        await asyncio.sleep(2)
        await browser.call("Page.reload")
        await browser.wait_for(f"!!({APP}?.graph) && !!document.querySelector('canvas')", 120)
        await asyncio.sleep(5)
        await browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})) || true")
        titles = await browser.js(f"Object.fromEntries({json.dumps(PACK_NODES)}.map(n =>"
                                  " [n, LiteGraph.registered_node_types[n]?.title]))")
        wrong = {n: t for n, t in titles.items() if t != expected[n]["display_name"]}
        print(f"{language}: the pack's node names", "translated" if not wrong else f"NOT translated: {wrong}")
        if wrong:
            failures.append(f"{language}: node names not translated: {wrong}")
        if language == "zh":
            text = await node_info(browser, help_node)
            await browser.screenshot(out / "help_zh.png")
            print("help page (zh) shown:", "推荐设置" in text)
            if "推荐设置" not in text:
                failures.append("the Node Info panel does not show the Chinese help page")
    await browser.js(f"{APP}.extensionManager.setting.set('Comfy.Locale', 'en').then(() => true)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="where the screenshots go (default: a temporary folder)")
    parser.add_argument("--readme", action="store_true", help="also copy the example's screenshot to docs/")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="gs-frontend-"))
    out.mkdir(parents=True, exist_ok=True)
    server = ComfyServer()
    try:
        failures = asyncio.run(check(server.url, out))
    finally:
        server.stop()
    if args.readme:
        shutil.copy(out / "example.png", ROOT / "docs" / "screenshot_example.png")
    for failure in failures:
        print("FAILED:", failure)
    print("all checks held" if not failures else f"{len(failures)} checks failed", "; screenshots in", out)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
