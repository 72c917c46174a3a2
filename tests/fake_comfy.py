"""In-process stand-ins for ComfyUI servers, as the sweep's dispatch sees them: the HTTP routes and websocket
events of ComfyUI's API that scripts/sweep.py uses, a queue that runs one prompt at a time, and the trouble
a real server gets into on demand: a slow link, a hang (it accepts connections and answers nothing), a drop
(gone from the network, its queue still running), a restart (back with an empty queue), a queue someone
clears. Each runs its own event loop in a thread, so a test drives the sweep's own command in another.

They stand in for the network's side of a server only: tests/host/test_host_sweep_servers.py runs the same
situations against real ComfyUI servers; these make the dispatch's cases fast and exact to set up."""
from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
import uuid

from aiohttp import WSMsgType, web

KNOWN = {  # /object_info of the node types the fake runs
    "FakeSampler": {"input": {"required": {"seed": ["INT", {}], "cfg": ["FLOAT", {}]}}},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}}},
}


def workflow() -> dict:
    return {"1": {"class_type": "FakeSampler", "inputs": {"seed": 0, "cfg": 5.0}, "_meta": {"title": "Sampler"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "fake"}}}


def png() -> bytes:
    from PIL import Image
    data = io.BytesIO()
    Image.new("RGB", (8, 8), (40, 90, 160)).save(data, format="PNG")
    return data.getvalue()


class FakeComfy:
    def __init__(self, run_seconds: float = 0.05, latency: float = 0.0):
        self.run_seconds, self.latency = run_seconds, latency
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.pending: list[tuple[str, dict, str]] = []  # (prompt id, prompt, client id)
        self.running: tuple[str, dict, str] | None = None
        self.history: dict[str, dict] = {}
        self.executed: list[tuple[float, int]] = []  # (cfg, seed) of every prompt it ran to the end, in order
        self.accepted = 0  # prompts queued on it
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.started = threading.Event()  # it began running a prompt
        self.image = png()
        self.loop = asyncio.new_event_loop()
        self.awake = None  # asyncio.Event in its loop: cleared while it hangs
        self.hang_at_prompt = False
        self.runner = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    # --- trouble, from the test's thread --------------------------------------------------------------

    def hang(self):
        """It stops answering: requests and pings wait, the prompt running stops where it is."""
        self.loop.call_soon_threadsafe(self.awake.clear)

    def hang_at_next_prompt(self):
        """It hangs as the next prompt is posted to it: that request gets no answer (a hang mid-request)."""
        self.hang_at_prompt = True

    def wake(self):
        self.loop.call_soon_threadsafe(self.awake.set)

    def drop(self):
        """Off the network (its port closed, its connections cut); its queue goes on running."""
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)

    def back(self, restarted: bool = False):
        """On the network again; `restarted`: with an empty queue, as a restarted ComfyUI."""
        async def start():
            if restarted:
                self.pending.clear()
                self.running = None
            await self._start_site()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def clear(self):
        """Someone clears its queue (the Clear button of a shared server): the waiting prompts leave, no history."""
        self.loop.call_soon_threadsafe(self.pending.clear)

    def holding(self) -> int:
        return len(self.pending) + (self.running is not None)

    def stop(self):
        self.wake()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    # --- the server -----------------------------------------------------------------------------------

    def _serve(self, ready):
        asyncio.set_event_loop(self.loop)
        self.awake = asyncio.Event()
        self.awake.set()
        self.loop.run_until_complete(self._start_site())
        self.loop.create_task(self._worker())
        ready.set()
        self.loop.run_forever()

    async def _start_site(self):
        """Listening on its port (a new application each time: one that was cleaned up is not restarted)."""
        app = web.Application(middlewares=[self._slow_and_hung])
        app.add_routes([
            web.get("/queue", self._queue), web.post("/queue", self._delete), web.post("/prompt", self._prompt),
            web.post("/interrupt", self._interrupt), web.get("/history/{prompt_id}", self._history),
            web.get("/object_info/{node_class}", self._object_info), web.get("/view", self._view),
            web.get("/guidance_schedules/runs", self._records), web.get("/ws", self._ws)])
        # a drop cuts its connections at once, as the network's failure does: aiohttp's shutdown would wait (60 s)
        # for the handlers to end, and a websocket's handler ends only when the sweep's side closes it
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.05)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    @web.middleware
    async def _slow_and_hung(self, request, handler):
        if self.hang_at_prompt and request.path == "/prompt":
            self.hang_at_prompt = False
            self.awake.clear()
        await self.awake.wait()
        if self.latency:
            await asyncio.sleep(self.latency)
        return await handler(request)

    async def _worker(self):
        while True:
            await asyncio.sleep(0.005)
            await self.awake.wait()
            if self.running is None and self.pending:
                self.running = self.pending.pop(0)
                prompt_id, prompt, client = self.running
                self.started.set()
                await self._send(client, "executing", {"node": "1", "prompt_id": prompt_id})
                start = time.time()
                while time.time() - start < self.run_seconds or not self.awake.is_set():
                    await asyncio.sleep(0.005)
                if self.running is None or self.running[0] != prompt_id:
                    continue  # a restart emptied it meanwhile
                inputs = prompt["1"]["inputs"]
                self.executed.append((inputs["cfg"], inputs["seed"]))
                self.history[prompt_id] = {
                    "status": {"status_str": "success", "completed": True, "messages": [
                        ["execution_start", {"timestamp": start * 1000}],
                        ["execution_success", {"timestamp": time.time() * 1000}]]},
                    "outputs": {"2": {"images": [{"filename": f"{prompt_id}.png", "subfolder": "", "type": "output"}]}}}
                self.running = None
                await self._send(client, "executing", {"node": None, "prompt_id": prompt_id})

    async def _send(self, client, kind, data):
        ws = self.sockets.get(client)
        if ws is not None and not ws.closed:
            try:
                await ws.send_json({"type": kind, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    async def _queue(self, request):
        row = lambda i, item: [i, item[0], item[1], {}, []]  # noqa: E731  (ComfyUI's queue item)
        return web.json_response({"queue_running": [row(0, self.running)] if self.running else [],
                                  "queue_pending": [row(i + 1, item) for i, item in enumerate(self.pending)]})

    async def _delete(self, request):
        gone = set((await request.json()).get("delete", []))
        self.pending = [item for item in self.pending if item[0] not in gone]
        return web.json_response({})

    async def _prompt(self, request):
        body = await request.json()
        prompt = body["prompt"]
        if prompt["1"]["inputs"]["cfg"] < 0:  # as ComfyUI refuses a value out of range
            return web.json_response({"error": {"message": "Prompt outputs failed validation"}, "node_errors": {
                "1": {"class_type": "FakeSampler", "errors": [{"message": "Value smaller than min of 0",
                                                                "details": "cfg"}]}}}, status=400)
        prompt_id = uuid.uuid4().hex
        self.accepted += 1
        self.pending.append((prompt_id, prompt, body.get("client_id", "")))
        return web.json_response({"prompt_id": prompt_id})

    async def _interrupt(self, request):
        return web.json_response({})

    async def _history(self, request):
        prompt_id = request.match_info["prompt_id"]
        return web.json_response({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})

    async def _object_info(self, request):
        name = request.match_info["node_class"]
        return web.json_response({name: KNOWN[name]} if name in KNOWN else {})

    async def _view(self, request):
        return web.Response(body=self.image, content_type="image/png")

    async def _records(self, request):
        return web.json_response([{"evaluations": 8, "uncond_evaluations": 4}])

    async def _ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = request.query.get("clientId", "")
        self.sockets[client] = ws
        try:
            while True:
                await self.awake.wait()  # a hung server reads nothing: no answer to a ping either
                try:
                    message = await asyncio.wait_for(ws.receive(), 0.1)
                except asyncio.TimeoutError:
                    continue
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            if self.sockets.get(client) is ws:
                del self.sockets[client]
        return ws
