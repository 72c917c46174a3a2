"""Start a real ComfyUI server (main.py --cpu) with this pack and the test helper pack.

Used by the server tests; also handy by hand:  python tests/comfy_server.py  (prints its URL).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from host_support import COMFYUI_ROOT, HELPER_PACK, PACK_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cached_nodes(history: dict) -> set[str]:
    """The nodes of a finished prompt that ComfyUI answered from its cache (ComfyUI's own report)."""
    return {node for kind, data in history["status"]["messages"] if kind == "execution_cached"
            for node in data.get("nodes", [])}


class ComfyServer:
    """One server in its own base directory (models/, output/, custom_nodes/ with the packs named).

    `wait=False` returns once the process is started, so that several servers start side by side
    (then `wait_until_ready()`); `kill()` and `restart()` take one down and bring it back on its port."""

    def __init__(self, startup_timeout: float = 180.0, *, packs=("pack", "helpers"), env=None, wait=True):
        self.base = Path(tempfile.mkdtemp(prefix="gs-comfy-"))
        custom = self.base / "custom_nodes"
        custom.mkdir()
        if "pack" in packs:
            (custom / "comfyui-guidance-schedules").symlink_to(PACK_ROOT, target_is_directory=True)
        if "helpers" in packs:
            (custom / "gs_test_helpers").symlink_to(HELPER_PACK, target_is_directory=True)
        self.startup_timeout, self.env = startup_timeout, env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "server.log"
        self._log = None
        self.start()
        if wait:
            self.wait_until_ready()

    def start(self):
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(self.base), "--disable-auto-launch"],
            cwd=COMFYUI_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})

    def wait_until_ready(self):
        deadline = time.time() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log()
                self.stop()
                raise RuntimeError(f"ComfyUI exited during startup:\n{log}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > deadline:
                    log = self.log()
                    self.stop()
                    raise RuntimeError(f"ComfyUI did not start in {self.startup_timeout:.0f}s:\n{log}")
                time.sleep(0.5)

    def kill(self):
        """Gone at once, as a crashed server or a lost machine: no shutdown, its queue lost."""
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        """A new process on the same port and base directory (a fresh queue and history)."""
        if self.proc.poll() is None:
            self.kill()
        self.start()
        self.wait_until_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")  # some routes answer with no body
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run_prompt(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue an API-format prompt and wait for its history entry."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "gs-tests"})
        if status != 200:
            raise AssertionError(f"/prompt refused the prompt ({status}): {json.dumps(body)[:2000]}")
        prompt_id = body["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout:.0f}s:\n{self.log()}")

    def run_prompt_with_events(self, prompt: dict, timeout: float = 120.0) -> tuple[str, list[dict]]:
        """Queue an API-format prompt as a client on the websocket; (prompt id, every event the client got
        until the prompt finished)."""
        import asyncio
        import uuid
        import aiohttp
        client_id = uuid.uuid4().hex

        async def run():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}") as ws:
                    async with session.post(self.url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                        prompt_id = (await r.json())["prompt_id"]
                    events = []
                    while True:
                        message = await asyncio.wait_for(ws.receive(), timeout)
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        event = json.loads(message.data)
                        events.append(event)
                        data = event.get("data", {})
                        if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                            return prompt_id, events
        return asyncio.run(run())

    def output_path(self, item: dict) -> Path:
        return self.base / "output" / item.get("subfolder", "") / item["filename"]

    def stop(self):
        """The server ended and its base directory removed (its custom_nodes are links: the packs stay), so that
        a test session leaves nothing in the temp directory."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    server = ComfyServer()
    print(server.url, "base directory", server.base, "- Ctrl+C stops it")
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
