"""One ComfyUI server's standard HTTP API as the sweep uses it (nothing else is needed on the server)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlencode

RUNS_ROUTE = "/guidance_schedules/runs"  # the pack's run records (404 on a server without the pack)


class ServerGone(Exception):
    """The server did not answer, or not as a ComfyUI server does (a proxy's error page)."""


class Server:
    """One ComfyUI server's standard HTTP API, as the sweep uses it (what the dispatch knows of the server and does
    with it is dispatch.ServerState)."""

    def __init__(self, session, url: str, answer_within: float = 60.0):
        self.session, self.url = session, url
        # a request whose answer stops coming for this long is a server that hangs (ServerGone): the same bound
        # as its connection's heartbeat, so that a hang in the middle of a request is noticed as soon as one
        # between requests (a large download goes on as long as its data keeps coming)
        self.answer_within = answer_within
        self.client_id = ""  # a new one for each connection, given by the dispatch

    def timeout(self):
        import aiohttp
        return aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.answer_within)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"

    async def request(self, method: str, path: str, **kwargs):
        """The JSON answer; ServerGone where the server does not answer, or answers with an error."""
        import aiohttp
        try:
            async with self.session.request(method, self.url + path, timeout=self.timeout(), **kwargs) as r:
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
            async with self.session.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id},
                                         timeout=self.timeout()) as r:
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
            async with self.session.get(self.url + "/view?" + urlencode(query), timeout=self.timeout()) as r:
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


def refusal(body: dict) -> str:
    """The server's reason for refusing a prompt, in one line: ComfyUI's own message and its details."""
    error = body.get("error", {})
    parts = [error.get("message", "") if isinstance(error, dict) else str(error)]
    for nid, node_error in (body.get("node_errors") or {}).items():
        for e in node_error.get("errors", []):
            said = ": ".join(dict.fromkeys(t for t in (e.get("message"), e.get("details")) if t))
            parts.append(f"node {nid} ({node_error.get('class_type', '')}): {said}")
    return "; ".join(p for p in parts if p)
