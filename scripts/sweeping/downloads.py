"""A finished run, collected from the server that ran it: its status and message, its time, its images
(downloaded into the folder) and the pack's run records."""
from __future__ import annotations

import asyncio
from pathlib import Path

from .runs import Run
from .server import Server


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
    succeeded = status.get("status_str") == "success"
    message = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', 'interrupted')}"
                        for e in errors) or ("" if succeeded else "the server recorded no result")
    run.ran(succeeded, message, seconds_of(history), images, records)
