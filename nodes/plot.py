"""GuidanceSchedulePlot: the guidance weight each step got in the run that made a LATENT, as an IMAGE."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..samplers.schedule import RunRecord
from .guidance import history_of
from .method_nodes import CATEGORY, search_aliases

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
GREY = (150, 150, 150)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten apart) covering [lo, hi]."""
    span = max(hi - lo, 1e-9)
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [round(first, 10)]
    while ticks[-1] < hi - step * 1e-9 or len(ticks) < 2:  # the last tick at or above hi
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def render(record: RunRecord, title: str, width: int = 800, height: int = 450) -> Image.Image:
    """Weight per step, one line per sample: filled dots where the sample was guided, hollow grey dots at
    weight 1 where it was not (no unconditional pass of its own), diamonds where LinearAG estimated the
    unconditional prediction. Axes labelled, round ticks, the legend beside the plot."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    legend_w = 170
    left, right, top, bottom = 70, width - legend_w - 20, 44, height - 56
    steps = sorted(record.weight)
    values = [w for s in steps for w in record.weight[s]] + [1.0]
    y_ticks = nice_ticks(min(values), max(values))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        y_ticks = nice_ticks(y_lo, y_hi)
    last_step = max(record.steps - 1, 1)
    x_ticks = [t for t in nice_ticks(0, last_step, count=min(record.steps, 11)) if float(t).is_integer() and 0 <= t <= last_step]

    def xy(step, w):
        return (left + (right - left) * step / last_step,
                bottom - (bottom - top) * (w - y_lo) / (y_hi - y_lo))

    draw.text((left, 12), title, fill="black", font=font)
    for t in y_ticks:
        _, y = xy(0, t)
        draw.line([(left, y), (right, y)], fill=(235, 235, 235))
        draw.line([(left - 5, y), (left, y)], fill="black")
        label = _label(t)
        draw.text((left - 8 - draw.textlength(label, font=font), y - 6), label, fill="black", font=font)
    for t in x_ticks:
        x, _ = xy(t, y_lo)
        draw.line([(x, bottom), (x, bottom + 5)], fill="black")
        label = str(int(t))
        draw.text((x - draw.textlength(label, font=font) / 2, bottom + 8), label, fill="black", font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    draw.text(((left + right) / 2 - 12, height - 30), "step", fill="black", font=font)
    # the y label, written sideways
    label = "guidance weight"
    sideways = Image.new("RGB", (int(draw.textlength(label, font=font)) + 4, 14), "white")
    ImageDraw.Draw(sideways).text((2, 1), label, fill="black", font=font)
    sideways = sideways.rotate(90, expand=True)
    img.paste(sideways, (8, int((top + bottom) / 2 - sideways.height / 2)))

    for b in range(record.batch_size):
        colour = COLOURS[b % len(COLOURS)]
        points = [(s, record.weight[s][b], record.guided[s][b]) for s in steps if b < len(record.weight[s])]
        if len(points) > 1:
            draw.line([xy(s, w) for s, w, _ in points], fill=colour, width=2)
        for s, w, guided in points:
            x, y = xy(s, w)
            if not guided:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=GREY, fill="white", width=1)
            elif s in record.estimated:
                draw.polygon([(x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)], outline=colour, fill="white")
            else:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)

    # legend, beside the plot: samples, then what the marks mean
    lx, ly = right + 20, top
    if record.batch_size > 1:
        for b in range(min(record.batch_size, len(COLOURS))):
            colour = COLOURS[b % len(COLOURS)]
            draw.line([(lx, ly + 6), (lx + 18, ly + 6)], fill=colour, width=3)
            draw.text((lx + 24, ly), f"sample {b}", fill="black", font=font)
            ly += 16
        if record.batch_size > len(COLOURS):
            draw.text((lx, ly), f"(+{record.batch_size - len(COLOURS)} more, colours repeat)", fill="black", font=font)
            ly += 16
        ly += 8
    draw.ellipse([lx + 6, ly + 3, lx + 12, ly + 9], fill=COLOURS[0])
    draw.text((lx + 24, ly), "guided", fill="black", font=font)
    ly += 16
    draw.ellipse([lx + 6, ly + 3, lx + 12, ly + 9], outline=GREY, fill="white")
    draw.text((lx + 24, ly), "unguided: weight 1,", fill="black", font=font)
    draw.text((lx + 24, ly + 12), "no unconditional pass", fill="black", font=font)
    ly += 30
    if record.estimated:
        draw.polygon([(lx + 9, ly + 1), (lx + 14, ly + 6), (lx + 9, ly + 11), (lx + 4, ly + 6)], outline=COLOURS[0],
                     fill="white")
        draw.text((lx + 24, ly), "estimated (LinearAG)", fill="black", font=font)
    return img


class GuidanceSchedulePlot:
    DESCRIPTION = ("Plots the guidance weight every step got in the run that made 'samples' (one line per sample), "
                   "for a model or guider of this pack. Connect the sampler's output to 'samples' and its model "
                   "(KSampler) or guider (SamplerCustomAdvanced) to 'model' or 'guider'.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "plot"
    SEARCH_ALIASES = search_aliases("guidance interval", "adaptive guidance", "annealing guidance", "guidance plot",
                                    "cfg schedule", "guidance weight")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "The output of the sampler whose run to plot."})},
                "optional": {"model": ("MODEL", {"tooltip": "The patched model that sampler used (KSampler path)."}),
                             "guider": ("GUIDER", {"tooltip": "The guider that sampler used (SamplerCustomAdvanced)."})}}

    def plot(self, samples, model=None, guider=None):
        source, which = (guider, "guider") if guider is not None else (model, "model")
        history = history_of(source) if source is not None else None
        if history is None:
            raise ValueError("GuidanceSchedulePlot: connect 'model' or 'guider' to a model or guider from this pack")
        latent = samples.get("samples") if isinstance(samples, dict) else None
        record = history.run_that_made(latent) if isinstance(latent, torch.Tensor) else None
        if record is None:
            if not history.runs:
                raise ValueError(f"GuidanceSchedulePlot: the {which} connected here has not sampled yet: connect it "
                                 "to the sampler whose output goes to 'samples'")
            raise ValueError(f"GuidanceSchedulePlot: 'samples' was not made with the {which} connected here: connect "
                             f"the {which} that the sampler giving 'samples' uses (a sampler wired to another model "
                             "or guider made it)")
        image = np.asarray(render(record, history.describe), dtype=np.float32) / 255.0
        return (torch.from_numpy(image)[None],)
