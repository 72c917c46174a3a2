"""A reverse proxy on a loopback port that serves one ComfyUI server under a path, as nginx or a cloud front
end does (`http://127.0.0.1:PORT/gpu2/prompt` -> `http://server/prompt`), its websocket included. It runs its
own event loop in a thread, so a test can hand its `url` to a script as it would a server's.
"""
from __future__ import annotations

import asyncio
import threading
import time

from comfy_server import free_port


class PathProxy:
    def __init__(self, target: str, prefix: str = "/gpu2", delays: dict | None = None):
        """`delays`: seconds to hold a request before forwarding it, by "METHOD /path" (a slow link; a test may
        change them while the proxy runs); the start of each held request (time.monotonic()) goes to `holding`
        at once, its (start, end) to `held`."""
        self.target, self.prefix, self.port = target, prefix, free_port()
        self.url = f"http://127.0.0.1:{self.port}{prefix}"
        self.delays, self.holding, self.held = delays or {}, [], []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    async def _start(self):
        import aiohttp
        from aiohttp import web
        self.session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", self.prefix + "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _forward(self, request):
        from aiohttp import web
        url = self.target + request.raw_path[len(self.prefix):]  # as sent: quoted names stay quoted
        delay = self.delays.get(f"{request.method} {request.path[len(self.prefix):]}", 0)
        if delay:
            start = time.monotonic()
            self.holding.append(start)
            await asyncio.sleep(delay)
            self.held.append((start, time.monotonic()))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request, url.replace("http", "ws", 1))
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self.session.request(request.method, url, data=await request.read(), headers=headers) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body,
                                headers={k: v for k, v in answer.headers.items() if k.lower() == "content-type"})

    async def _forward_websocket(self, request, url):
        import aiohttp
        from aiohttp import web
        ours = web.WebSocketResponse()  # answers the client's pings itself, as a proxy's own socket does
        await ours.prepare(request)
        async with self.session.ws_connect(url) as theirs:
            async def pump(source, sink):
                async for message in source:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
            pumps = [asyncio.ensure_future(pump(ours, theirs)), asyncio.ensure_future(pump(theirs, ours))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pumps:
                task.cancel()
        await ours.close()
        return ours

    def stop(self):
        async def close():
            await self.runner.cleanup()
            await self.session.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
