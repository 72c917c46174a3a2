"""A run of the grid and the states it goes through, with the only transitions the sweep makes:

    missing --(the dispatch takes it)--> waiting --(a server is asked)--> sending --(accepted)--> queued
    sending --(refused: a value out of range)--> error;  sending --(the server went away)--> waiting
    queued --(it ran there)--> success | error;  queued --(lost with a restart, or given up)--> waiting
    waiting --(a server that came back still has it)--> queued
    missing --(recorded as done by an earlier sweep into the folder)--> success
    waiting | sending | queued --(the sweep stops: Ctrl-C, an error, no server)--> missing
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum


class RunState(str, Enum):
    MISSING = "missing"  # not run (yet): the state it is recorded with when the sweep stops before it ran
    WAITING = "waiting"  # in the line for a server
    SENDING = "sending"  # being queued on a server (out of the line: a server catching up must not take it)
    QUEUED = "queued"  # on `Run.server`, as `Run.prompt_id`
    SUCCESS = "success"
    ERROR = "error"

    __str__ = str.__str__  # "success", in messages and files, on every Python
    __format__ = str.__format__


FINISHED = (RunState.SUCCESS, RunState.ERROR)
TRANSITIONS = {
    RunState.MISSING: {RunState.WAITING, RunState.SUCCESS},
    RunState.WAITING: {RunState.SENDING, RunState.QUEUED, RunState.MISSING},
    RunState.SENDING: {RunState.WAITING, RunState.QUEUED, RunState.ERROR, RunState.MISSING},
    RunState.QUEUED: {RunState.WAITING, RunState.SUCCESS, RunState.ERROR, RunState.MISSING},
    RunState.SUCCESS: set(),
    RunState.ERROR: set(),
}


@dataclass
class Run:
    settings: tuple  # one value per axis
    seed: int
    key: str  # stable: the same prompt (seeds aside) and seed in a later sweep are the same run
    grid: object = field(repr=False, default=None)  # the grid.Grid that made it, which makes its prompt
    status: RunState = RunState.MISSING  # changed only by the methods below
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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def _move(self, to: RunState) -> None:
        if to not in TRANSITIONS[self.status]:
            raise RuntimeError(f"run {self.key}: {self.status} -> {to} is not a transition of a run")
        self.status = to

    def wait(self) -> None:
        """Into the line for a server (again): no server has it."""
        self._move(RunState.WAITING)
        self.server, self.prompt_id = "", ""

    def send(self) -> None:
        self._move(RunState.SENDING)

    def queued_on(self, server: str, prompt_id: str, *, now: bool = True) -> None:
        """On `server` as `prompt_id`; `now`: just queued (else taken back where an earlier sweep queued it)."""
        self._move(RunState.QUEUED)
        self.server, self.prompt_id = server, prompt_id
        if now:
            self.queued_at, self.message = time.time(), ""

    def refused(self, server: str, reason: str) -> None:
        self._move(RunState.ERROR)
        self.server, self.message = server, reason

    def ran(self, succeeded: bool, message: str, seconds, images: list, records: list) -> None:
        """What the server that ran it recorded."""
        self._move(RunState.SUCCESS if succeeded else RunState.ERROR)
        self.message, self.seconds, self.images, self.records = message, seconds, images, records

    def restore(self, kept: dict) -> None:
        """Done by an earlier sweep into the same folder, as that sweep recorded it."""
        self._move(RunState.SUCCESS)
        self.prompt_id, self.seconds = kept["prompt_id"], kept["seconds"]
        self.server, self.queued_at = kept.get("server", ""), kept.get("queued_at")
        self.images, self.records = kept["images"], kept["records"]

    def abandon(self) -> None:
        """The sweep stopped before it ran: recorded as missing, for the next command to queue."""
        if not self.finished and self.status is not RunState.MISSING:
            self._move(RunState.MISSING)
            self.server = ""
