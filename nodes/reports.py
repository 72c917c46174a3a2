"""What guidance did, over ComfyUI's API: one record per sampling run that carries one of the pack's
schedules, sent as a websocket event and kept for GET /guidance_schedules/runs.

- websocket event `guidance_schedules.run` (to the client that queued the prompt): the record below;
- GET /guidance_schedules/runs?prompt_id=ID: the records of that prompt, in run order (a JSON list;
  empty for a prompt that ran none of the pack's schedules or is no longer kept).

A record: prompt_id, node (the sampler node that ran), method (interval, adaptive, annealing, ...),
settings (the method node's inputs), describe (the log's name of it), sampler, sigma_space, steps,
cfg (under a core guider with scales of its own, its first: DualCFGGuider's cfg_conds), guider_scales (only
there: every scale of that guider by input name, e.g. {"cfg_conds": 5, "cfg_cond2_negative": 2}), batch_size, guided_steps (per sample), weights (per sample, per step: the weight it got, 1 where
unguided, null for a step without an evaluation of its own), evaluations (model evaluations, each
for the whole batch), uncond_evaluations (of those, how many ran the unconditional pass) and
uncond_needed (per sample: the passes that sample needed, what it would cost alone).
The records of the last KEPT_PROMPTS prompts are kept in memory; older prompts drop out.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict

log = logging.getLogger("guidance_schedules")

EVENT = "guidance_schedules.run"
WARNING_EVENT = "guidance_schedules.warning"  # {"message", "prompt_id", "node"}: the pack's warnings, for the UI
ROUTE = "/guidance_schedules/runs"
KEPT_PROMPTS = 500

_runs: OrderedDict[str, list[dict]] = OrderedDict()
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _prompt_server_class():
    """ComfyUI's PromptServer class, looked up once (a failed import searches the whole path every time, which
    cost milliseconds per sampling run outside a server): None outside a running ComfyUI."""
    try:
        from server import PromptServer
    except ImportError:  # imported outside a running ComfyUI (benchmarks, in-process tests)
        return None
    return PromptServer


def _server():
    cls = _prompt_server_class()
    return getattr(cls, "instance", None) if cls is not None else None


@functools.lru_cache(maxsize=1)
def _executing_context_getter():
    """comfy_execution's get_executing_context, looked up once; None on a host without it."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    return get_executing_context


def _executing() -> tuple[str | None, str | None]:
    """(prompt id, node id) of the node ComfyUI is executing, if any."""
    getter = _executing_context_getter()
    context = getter() if getter is not None else None
    return (context.prompt_id, context.node_id) if context is not None else (None, None)


def report(record: dict) -> dict:
    """Keep the record of a finished sampling run and send it to the client that queued the prompt."""
    prompt_id, node = _executing()
    record = {"prompt_id": prompt_id, "node": node, **record}
    if prompt_id is not None:
        with _lock:
            _runs.setdefault(prompt_id, []).append(record)
            _runs.move_to_end(prompt_id)
            while len(_runs) > KEPT_PROMPTS:
                _runs.popitem(last=False)
    server = _server()
    if server is not None and prompt_id is not None:
        server.send_sync(EVENT, record, getattr(server, "client_id", None))
    return record


def runs_of(prompt_id: str) -> list[dict]:
    with _lock:
        return list(_runs.get(prompt_id, []))


class WarningsToTheUI(logging.Handler):
    """Sends the pack's log warnings (bounds that select no step, a replaced schedule, a LinearAG file
    fitted at another cfg, ...) to the client that queued the prompt; web/guidance_schedules.js shows
    them as ComfyUI toasts. The log keeps them too."""

    def __init__(self):
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        server = _server()
        if server is None:
            return
        prompt_id, node = _executing()
        try:
            server.send_sync(WARNING_EVENT, {"message": record.getMessage(), "prompt_id": prompt_id, "node": node},
                             getattr(server, "client_id", None))
        except Exception:  # a warning must never break a prompt
            self.handleError(record)


def register_routes() -> None:
    """GET /guidance_schedules/runs on ComfyUI's server, and the pack's warnings to the UI (nothing where
    there is no server)."""
    server = _server()
    if server is None:
        return
    if not any(isinstance(h, WarningsToTheUI) for h in log.handlers):
        log.addHandler(WarningsToTheUI())
    from aiohttp import web

    @server.routes.get(ROUTE)
    async def guidance_runs(request):
        prompt_id = request.rel_url.query.get("prompt_id")
        if not prompt_id:
            return web.json_response({"error": "give the prompt's id: ?prompt_id=ID"}, status=400)
        return web.json_response(runs_of(prompt_id))
