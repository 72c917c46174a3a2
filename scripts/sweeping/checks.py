"""Before anything is queued: every server answers and has what the grid's prompts use (node types, and the
choices of list inputs such as checkpoint names)."""
from __future__ import annotations

import asyncio
from urllib.parse import quote

from .server import Server, ServerGone


def combo_choices(spec) -> list | None:
    """The choices of a combo input as /object_info describes it, in either of ComfyUI's forms
    ([[choices], {...}] or ["COMBO", {"options": [choices]}]); None for any other input."""
    if not isinstance(spec, list) or not spec:
        return None
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(spec[0], list):
        choices = spec[0]
    elif spec[0] == "COMBO" and "remote" not in options:
        choices = options.get("options", [])
    else:
        return None
    return choices if all(isinstance(c, (str, int, float)) for c in choices) else None


def lacking(node_info: dict, prompts: list[dict]) -> list[str]:
    """What one server lacks to run the grid: node types it does not have, and the values the prompts give to
    a list input (a checkpoint's, a LoRA's, a sampler's name) that are not among its choices."""
    missing, seen = [], set()
    for prompt in prompts:
        for nid, node in prompt.items():
            info = node_info.get(node["class_type"])
            if not info:
                if node["class_type"] not in seen:
                    missing.append(f"node type {node['class_type']} (node {nid}): install the same custom nodes there")
                    seen.add(node["class_type"])
                continue
            specs = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
            for name, value in node.get("inputs", {}).items():
                choices = combo_choices(specs.get(name))
                if choices is None or isinstance(value, list) or value in choices or (nid, name, value) in seen:
                    continue
                seen.add((nid, name, value))
                missing.append(f"{name} {value!r} (node {nid}, {node['class_type']}): "
                               + (f"it has {len(choices)} others" if choices else "it has none"))
    return missing


async def check_servers(servers: list[Server], prompts: list[dict]) -> list[str]:
    """Every server answers and has what the prompts use; one line per problem, naming the server."""
    classes = sorted({node["class_type"] for prompt in prompts for node in prompt.values()})

    async def node_info(server: Server, node_class: str) -> dict:
        try:
            return await server.get_json(f"/object_info/{quote(node_class, safe='')}")
        except ServerGone as e:
            if "HTTP 404" in str(e):  # a name no route matches (one with a '/'): no such node there either
                return {}
            raise

    async def check(server: Server) -> list[str]:
        try:
            await server.queue_ids()  # a ComfyUI answers here
            infos = await asyncio.gather(*(node_info(server, c) for c in classes))
        except ServerGone as e:
            return [f"{server.url} does not answer ({e})"]
        return [f"{server.url} has no {what}" for what in lacking({k: v for i in infos for k, v in i.items()}, prompts)]

    return [line for lines in await asyncio.gather(*(check(s) for s in servers)) for line in lines]
