"""The pack's nodes: their menu category, and the node pair every guidance method is made of.

A method is a `GuidanceMethod` (its inputs and how they make a schedule); `SchedulePatchNode` (MODEL ->
MODEL, for the stock KSampler) and `ScheduleGuiderNode` (-> GUIDER, for SamplerCustomAdvanced) turn it into
its two nodes. The guider is a plain CFGGuider over a model patched by the mechanism (nodes/guidance.py), so
both paths run the same code. A value flows one way: the node's inputs -> the method's schedule factory
(samplers/) -> patch_model -> at each run the schedule the driver asks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import comfy.samplers

from .files import input_file_state
from .guidance import Schedule, check_cfg, patch_model, plain_value_errors


def _host_sampling_category() -> str:
    """The KSampler's own menu category ('sampling' up to ComfyUI 0.8, 'model/sampling' in newer ones)."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py (this pack's own nodes/ is only imported relatively)
    category = getattr(getattr(comfy_nodes, "KSampler", None), "CATEGORY", None)
    return category if isinstance(category, str) and category else "sampling"


CATEGORY = f"{_host_sampling_category()}/guidance schedules"  # every node of the pack, beside the KSampler


def search_aliases(*words: str) -> list[str]:
    """The words a user types into the node search that should find a node of the pack: the pack's name and "cfg"
    for every node (frontends that read SEARCH_ALIASES), then the node's own."""
    return ["guidance schedules", "guidance", "cfg", "classifier-free guidance", *words]


class ScheduleGuider(comfy.samplers.CFGGuider):
    """The GUIDER the pack's guider nodes output: stock CFGGuider behaviour over a patched model."""

    def __init__(self, model, positive, negative, cfg):
        super().__init__(model)
        self.set_conds(positive, negative)
        self.set_cfg(check_cfg(cfg))


# --- the node pair of a method ---------------------------------------------------------------------

@dataclass(frozen=True)
class GuidanceMethod:
    """What a method's two nodes are made of: a MODEL patch for the KSampler and a GUIDER for
    SamplerCustomAdvanced, with the same inputs and the same schedule."""

    key: str  # "interval": the method's name in the API's run records
    title: str  # "Guidance interval (Kynkaeaenniemi et al. 2024)"
    summary: str  # what it does, for both nodes' descriptions
    inputs: Callable[[], dict]  # the method's own inputs, by name, as INPUT_TYPES gives them
    schedule: Callable[..., Schedule]  # the inputs' values -> the schedule (its factory and log name)
    optional_inputs: Callable[[], dict] = dict
    cfg_tooltip: str | None = None  # the guider's cfg input; None: the method sets the scale, the guider has none
    patch_note: str = ""  # what the patch's description adds (what becomes of the KSampler's cfg)
    file_input: tuple[str, str] | None = None  # (input, model folder) where an input names a file the node reads
    model_tooltip: str = "The model to sample with this guidance."


def _settings(names: list[str], args: tuple, kwargs: dict) -> dict:
    """Input values by name; ComfyUI passes keywords, Python callers may pass them in input order."""
    if len(args) > len(names):
        raise TypeError(f"too many inputs: {args!r}")
    return {**dict(zip(names, args)), **kwargs}


class _MethodNode:
    METHOD: GuidanceMethod
    CATEGORY = CATEGORY

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        method = cls.__dict__.get("METHOD")
        if method is None:
            return
        cls.DESCRIPTION = cls.describe(method)
        # words a user types into the node search (frontends that read SEARCH_ALIASES; the display names
        # carry the main ones for those that do not)
        cls.SEARCH_ALIASES = search_aliases(method.key, method.title.split(" (")[0].lower())
        if method.file_input is not None:
            # ComfyUI re-runs a node whose IS_CHANGED value changed: the file replaced or removed under its name
            name, folder = method.file_input
            cls.IS_CHANGED = classmethod(lambda node_cls, **inputs: input_file_state(folder, inputs.get(name)))


class SchedulePatchNode(_MethodNode):
    """MODEL -> MODEL: the method for the stock KSampler."""

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @staticmethod
    def describe(m: GuidanceMethod) -> str:
        return f"{m.title} for the stock KSampler: {m.summary} {m.patch_note}".strip()

    @classmethod
    def INPUT_TYPES(cls):
        m = cls.METHOD
        return {"required": {"model": ("MODEL", {"tooltip": m.model_tooltip}), **m.inputs()},
                "optional": m.optional_inputs()}

    def patch(self, model, *args, **kwargs):
        m = self.METHOD
        settings = _settings([*m.inputs(), *m.optional_inputs()], args, kwargs)
        with plain_value_errors():
            schedule = m.schedule(**settings)
        return (patch_model(model, replace(schedule, method=m.key, settings=settings)),)


class ScheduleGuiderNode(_MethodNode):
    """-> GUIDER: the method for SamplerCustomAdvanced (a CFGGuider over the patched model)."""

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @staticmethod
    def describe(m: GuidanceMethod) -> str:
        return f"{m.title} as a GUIDER for SamplerCustomAdvanced: {m.summary}"

    @classmethod
    def INPUT_TYPES(cls):
        m = cls.METHOD
        inputs = {"model": ("MODEL", {"tooltip": m.model_tooltip}), "positive": ("CONDITIONING",),
                  "negative": ("CONDITIONING",)}
        if m.cfg_tooltip:
            inputs["cfg"] = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                       "tooltip": m.cfg_tooltip})
        return {"required": {**inputs, **m.inputs()}, "optional": m.optional_inputs()}

    def get_guider(self, model, positive, negative, *args, **kwargs):
        m = self.METHOD
        names = (["cfg"] if m.cfg_tooltip else []) + [*m.inputs(), *m.optional_inputs()]
        settings = _settings(names, args, kwargs)
        # without a cfg input the method sets the scale; 1 only matters for ComfyUI's cfg == 1 shortcut
        cfg = settings.pop("cfg", 1.0)
        with plain_value_errors():
            schedule = m.schedule(**settings)
        return (ScheduleGuider(patch_model(model, replace(schedule, method=m.key, settings=settings)), positive, negative,
                               cfg),)
