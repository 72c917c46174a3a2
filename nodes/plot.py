"""GuidanceSchedulePlot: the guidance weight each step got in the latest run, as an IMAGE."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..samplers.schedule import RunRecord
from .guidance import CATEGORY, history_of

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def render(record: RunRecord, title: str, width: int = 768, height: int = 432) -> Image.Image:
    """Line chart: x = step, y = guidance weight (1 where the unconditional pass was skipped)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 60, width - 20, 40, height - 50
    steps = sorted(record.weight)
    values = [w for s in steps for w in record.weight[s]] or [1.0]
    lo, hi = min(min(values), 1.0), max(max(values), 1.0)
    pad = (hi - lo) * 0.1 or 0.5
    lo, hi = lo - pad, hi + pad
    n = max(record.steps - 1, 1)

    def xy(step, w):
        return left + (right - left) * step / n, bottom - (bottom - top) * (w - lo) / (hi - lo)

    draw.text((left, 12), title, fill="black", font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for k in range(5):
        w = lo + (hi - lo) * k / 4
        _, y = xy(0, w)
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((6, y - 6), f"{w:.2f}", fill="black", font=font)
    for k in range(0, record.steps, max(record.steps // 10, 1)):
        x, _ = xy(k, lo)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x - 6, bottom + 8), str(k), fill="black", font=font)
    draw.text(((left + right) // 2 - 40, height - 22), "step (weight 1 = unguided)", fill="black", font=font)
    for b in range(record.batch_size):
        colour = COLOURS[b % len(COLOURS)]
        points = [xy(s, record.weight[s][b]) for s in steps if b < len(record.weight[s])]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        if record.batch_size > 1:
            draw.text((right - 70, top + 14 * b), f"sample {b}", fill=colour, font=font)
    return img


class GuidanceSchedulePlot:
    DESCRIPTION = ("Plots the guidance weight every step got in the latest run of a model or guider patched by this "
                   "pack (one line per sample). Connect the sampler's output latent so the plot is drawn after it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "plot"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "The sampler's output: orders the plot after sampling."})},
                "optional": {"model": ("MODEL", {"tooltip": "A model patched by a node of this pack (KSampler path)."}),
                             "guider": ("GUIDER", {"tooltip": "A guider of this pack (SamplerCustomAdvanced path)."})}}

    def plot(self, samples, model=None, guider=None):
        source = guider if guider is not None else model
        history = history_of(source) if source is not None else None
        if history is None:
            raise ValueError("GuidanceSchedulePlot: connect 'model' or 'guider' to a model or guider from this pack")
        if history.last is None:
            raise ValueError("GuidanceSchedulePlot: that model or guider has not sampled yet; connect the sampler's "
                             "output to 'samples'")
        image = np.asarray(render(history.last, history.describe), dtype=np.float32) / 255.0
        return (torch.from_numpy(image)[None],)
