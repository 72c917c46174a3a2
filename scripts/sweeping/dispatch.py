"""Handing the runs to the servers and following them to their end, through server trouble: hangs, drops,
restarts, queues cleared by someone else, slow links."""
from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .downloads import finish
from .grid import Axis
from .results import save
from .runs import Run, RunState
from .server import Server, ServerGone

QUEUE_CHECK_SECONDS = 5.0  # how often a connected server's queue is read, beside its events (Dispatch.follow)


@dataclass(eq=False)
class ServerState:
    """What the dispatch knows of one server and does with it; `api` is the server itself (server.Server, its
    HTTP API), which keeps no state of the dispatch's."""

    api: Server
    holding: dict = field(default_factory=dict)  # prompt id -> Run: queued there and not yet finished
    sending: int = 0  # runs on their way to it (a POST under way)
    released: dict = field(default_factory=dict)  # runs it held when it stopped answering, given to the others since
    connected: bool = False  # its websocket is open (it may still be catching up)
    answering: bool = False  # connected and caught up: runs are queued on it
    down_since: float | None = None
    running: Run | None = None
    step: tuple = (0, 0)
    finished: int = 0

    @property
    def url(self) -> str:
        return self.api.url


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Dispatch:
    """Hands the runs to the servers a few at a time each (`depth`: the one running and the next ready), so
    that a server never waits for the sweep and a slow one holds no run that a free one could take.

    A server that stops answering keeps its runs for `grace` seconds (a short glitch costs nothing); then
    they go back to the front of the waiting line, for the others. Whenever a server answers (again), what
    it holds is checked against its own queue and history: finished runs are collected, runs it lost (a
    restart) wait again, and runs it was relieved of are taken back if no other server has them yet, or
    else taken off its queue. A run is therefore run twice only when a server that had it running came
    back after the others had started it, or when a server that was frozen (not restarted) starts the next
    run of its queue as it resumes, before the sweep can take it off. While it answers, its events tell when a
    run ends, and its queue is read every QUEUE_CHECK_SECONDS as well, for the ends whose events did not come
    (see serve)."""

    def __init__(self, servers: list[ServerState], runs: list[Run], out: Path, axes: list[Axis], *, depth: int,
                 grace: float, patience: float, heartbeat: float, progress, earlier: list[dict] = ()):
        self.servers, self.runs, self.out, self.axes = servers, runs, out, axes
        self.earlier = earlier  # the folder's runs of earlier sweeps outside this grid, kept in its records
        self.depth, self.grace, self.patience, self.progress = depth, grace, patience, progress
        self.heartbeat = heartbeat  # seconds between pings: a hung server is noticed within 1.5 times that
        self.waiting: deque[Run] = deque()
        for run in runs:
            if not run.finished:  # (a run done by an earlier sweep into the folder is restored as a success)
                run.wait()
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
                await asyncio.wait_for(server.api.withdraw(list(server.holding)), 10)
            except (ServerGone, asyncio.TimeoutError):
                pass
        await asyncio.gather(*(withdraw(s) for s in self.servers if s.holding))

    # one task per server: connect, catch up, fill, follow; when it stops answering, retry every second
    async def serve(self, server: ServerState) -> None:
        import aiohttp
        while True:
            # A new client id for each connection. ComfyUI keeps one websocket per client id, and where the
            # handler of the connection before ends only after the new one came (a server that hung, or was
            # too busy to answer a ping, sees the old one closed late), it unregisters the new one: the events
            # of prompts queued under that id would go nowhere. Runs queued under an earlier id are followed
            # by reading the server's queue (check).
            server.api.client_id = uuid.uuid4().hex
            try:
                # bounded: a hung server (or proxy) accepts the connection and never answers
                ws = await asyncio.wait_for(server.api.session.ws_connect(server.api.ws_url, heartbeat=self.heartbeat), 10)
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
                    self.progress.say(f"{server.url} stayed away {self.grace:g} s: its "
                                      f"{plural(len(server.holding), 'run')} go to the others")
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
            run.wait()
            self.waiting.appendleft(run)
        for server in self.servers:
            if server.answering:
                self.start(self.fill_quietly(server))

    async def fill_quietly(self, server: ServerState) -> None:
        try:
            await self.fill(server)
        except ServerGone:
            pass  # the server's own task notices when it reads its connection, and retries

    async def fill(self, server: ServerState) -> None:
        """Queue waiting runs on the server until it holds `depth` of them."""
        while server.answering and self.waiting and len(server.holding) + server.sending < self.depth:
            run = self.waiting.popleft()
            run.send()  # out of the line: a server catching up must not take it back meanwhile
            server.sending += 1
            try:
                prompt_id, reason = await server.api.queue(run.prompt)
            except ServerGone:
                run.wait()
                self.waiting.appendleft(run)
                raise
            finally:
                server.sending -= 1
            if prompt_id is None:  # refused (a value out of range): a row with the reason
                run.refused(server.url, reason)
                self.finished(run)
            else:
                run.queued_on(server.url, prompt_id)
                server.holding[prompt_id] = run
            self.progress.show(server)

    async def follow(self, server: ServerState, ws) -> None:
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

    async def on_event(self, server: ServerState, event: dict) -> None:
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

    async def collect(self, server: ServerState, prompt_id: str) -> None:
        run = server.holding[prompt_id]
        await finish(server.api, run, self.out)  # ServerGone: it stays held, and is collected when the server answers
        del server.holding[prompt_id]
        server.running = None if server.running is run else server.running
        server.finished += 1
        self.finished(run)

    def finished(self, run: Run) -> None:
        save(self.out, self.axes, self.runs, self.earlier)
        self.progress.finished(run)
        if not self.unfinished():
            self.done.set()

    async def check(self, server: ServerState) -> tuple[set, set]:
        """The runs it holds that the server no longer has in its queue: collected where they ran, else (lost
        with a restart) waiting again. Returns its queue: the prompt ids running, and those pending."""
        held = list(server.holding)  # before asking: a run queued while the answer comes is not in it
        running, pending = await server.api.queue_ids()
        for prompt_id in held:
            if prompt_id not in server.holding or prompt_id in running or prompt_id in pending:
                continue  # collected meanwhile, or still to run
            if await server.api.history(prompt_id):  # ComfyUI moves a prompt from its queue to its history at once
                await self.collect(server, prompt_id)
                await self.fill(server)
            else:
                self.wait_again([server.holding.pop(prompt_id)])
        return running, pending

    async def catch_up(self, server: ServerState) -> None:
        """On (re)connecting: what happened to the runs the server held, or was relieved of, meanwhile."""
        running, pending = await self.check(server)
        for prompt_id, run in list(server.released.items()):
            queued = prompt_id in running or prompt_id in pending
            ran = not queued and run.status is RunState.WAITING and bool(await server.api.history(prompt_id))
            if run.status is RunState.WAITING and (queued or ran):  # nobody took it meanwhile: it stays here
                self.waiting.remove(run)
                run.queued_on(server.url, prompt_id, now=False)
                server.holding[prompt_id] = run
                if ran:
                    await self.collect(server, prompt_id)
            elif prompt_id in pending:  # another server has it, or had it
                await server.api.request("POST", "/queue", json={"delete": [prompt_id]})
            del server.released[prompt_id]


class Progress:
    """Runs done of the total, and one line per server: what it is running, what it holds, what it did.
    The server lines only on a terminal (in a log they would be a line per step); messages always."""

    def __init__(self, runs: list[Run], servers: list[ServerState], axes: list[Axis]):
        from tqdm import tqdm
        self.axes = axes
        done = sum(r.status is RunState.SUCCESS for r in runs)
        self.bar = tqdm(total=len(runs), initial=done, desc="runs", unit="run", position=0)
        on_terminal = sys.stderr.isatty()
        self.lines = {s.url: tqdm(total=0, position=i + 1, bar_format="{desc}", leave=False, disable=not on_terminal)
                      for i, s in enumerate(servers)}
        self.shown = {}

    def label(self, run: Run) -> str:
        return ", ".join([f"{a.key}={v}" for a, v in zip(self.axes, run.settings)] + [f"seed {run.seed}"])

    def show(self, server: ServerState, often: bool = False) -> None:
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
