"""What a sweep keeps on disk: runs.json and runs.csv (this sweep's runs and the folder's earlier ones), and the
contact sheet."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .grid import Axis, UsageError
from .runs import Run, RunState


def load_previous(out: Path) -> dict:
    """The runs recorded in the folder by earlier sweeps, by key; UsageError naming the file where it cannot be
    read (nothing in the folder is touched then)."""
    path = out / "runs.json"
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
        return {r["key"]: r for r in runs}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError, KeyError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__}: {e}); nothing was changed. Restore it, or move "
                         "it away to record this folder's runs afresh (the images stay where they are)") from None


def keep_previous(runs: list[Run], previous: dict, out: Path) -> int:
    """The runs that succeeded in an earlier sweep into the same folder, as they were (whichever server ran them);
    a run whose images were removed since is run again. Returns how many were."""
    gone = 0
    for run in runs:
        kept = previous.get(run.key)
        if kept and kept["status"] == "success":
            if not all((out / image).is_file() for image in kept["images"]):
                gone += 1
                continue
            run.restore(kept)
    return gone


def save(out: Path, axes: list[Axis], runs: list[Run], earlier: list[dict] = ()) -> None:
    """runs.json and runs.csv, written whole after every finished run (a new file, then renamed): this sweep's
    runs, then the folder's runs of earlier sweeps that are not in this grid (other settings, another workflow),
    as they were recorded: the folder accumulates."""
    rows = [{"key": r.key, "prompt_id": r.prompt_id, "status": str(r.status if r.finished else RunState.MISSING),
             "server": r.server if r.finished else "", "seed": r.seed,
             "settings": dict(zip([a.key for a in axes], r.settings)), "queued_at": r.queued_at, "seconds": r.seconds,
             "evaluations": evaluations(r)[0], "uncond_evaluations": evaluations(r)[1], "images": r.images,
             "message": r.message, "records": r.records} for r in runs]
    rows += list(earlier)
    tmp = out / "runs.json.tmp"
    tmp.write_text(json.dumps({"axes": [a.key for a in axes], "runs": rows}, indent=1))
    tmp.replace(out / "runs.json")
    keys = list(dict.fromkeys([a.key for a in axes] + [k for row in rows for k in row.get("settings", {})]))
    tmp = out / "runs.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt_id", "status", "server", "seed", *keys, "seconds", "evaluations",
                         "uncond_evaluations", "images", "message"])
        for row in rows:
            settings = row.get("settings", {})
            writer.writerow([row["prompt_id"], row["status"], row["server"], row["seed"],
                             *[settings.get(k, "") for k in keys],
                             "" if row["seconds"] is None else f"{row['seconds']:.3f}",
                             "" if row["evaluations"] is None else row["evaluations"],
                             "" if row["uncond_evaluations"] is None else row["uncond_evaluations"],
                             " ".join(row["images"]), row["message"]])
    tmp.replace(out / "runs.csv")


def evaluations(run: Run) -> tuple[int | None, int | None]:
    """Model evaluations of the run and, of those, with the unconditional pass: the pack's records,
    summed over the run's sampler nodes; None without them."""
    if not run.records:
        return None, None
    return sum(r["evaluations"] for r in run.records), sum(r["uncond_evaluations"] for r in run.records)


def contact_sheet(axes: list[Axis], runs: list[Run], out: Path, cell: int = 256) -> Path:
    """The first axis across; the other axes and the seeds down. Each cell: the run's first image scaled
    to the cell's width, and its evaluations (with the unconditional pass) and seconds, or its status."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default()
    across = axes[0].values if axes else (None,)
    down = sorted({(r.settings[1:], r.seed) for r in runs}, key=lambda d: ([str(v) for v in d[0]], d[1]))
    by_cell = {(r.settings[0] if axes else None, r.settings[1:], r.seed): r for r in runs}
    thumbs = {}
    for run in runs:
        if run.status is RunState.SUCCESS and run.images:
            with Image.open(out / run.images[0]) as image:
                w, h = image.size
                size = (cell - 8, max(1, round(h * (cell - 8) / w)))
                # nearest when enlarging: a small picture stays sharp
                thumbs[run.key] = image.convert("RGB").resize(size, Image.NEAREST if w < size[0] else Image.LANCZOS)
    label_w, head_h, foot_h = 170, 36, 30
    heights = [max([thumbs[r.key].height for r in (by_cell.get((v, rest, seed)) for v in across)
                    if r is not None and r.key in thumbs] or [60]) + 8 for rest, seed in down]
    sheet = Image.new("RGB", (label_w + cell * len(across), head_h + sum(h + foot_h for h in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    if axes:
        draw.text((label_w, 4), axes[0].key, fill="black", font=font)
    for i, value in enumerate(across):
        draw.text((label_w + i * cell + 6, 18), str(value), fill="black", font=font)
    y = head_h
    for (rest, seed), height in zip(down, heights):
        lines = [f"{a.key}={v}" for a, v in zip(axes[1:], rest)] + [f"seed {seed}"]
        draw.multiline_text((6, y + 6), "\n".join(lines), fill="black", font=font)
        for i, value in enumerate(across):
            run, x = by_cell.get((value, rest, seed)), label_w + i * cell
            if run is None:
                continue
            if run.key in thumbs:
                sheet.paste(thumbs[run.key], (x + 4, y + 4))
                evals, uncond = evaluations(run)
                text = (f"{evals} evals ({uncond} uncond)" if evals is not None else "no guidance record") + \
                    (f", {run.seconds:.1f} s" if run.seconds is not None else "")
            else:
                text = str(run.status) if run.status is not RunState.SUCCESS else "no image"
            draw.text((x + 4, y + height + 4), text, fill="black" if run.status is RunState.SUCCESS else (200, 0, 0),
                      font=font)
        y += height + foot_h
    path = out / "sheet.png"
    sheet.save(path)
    return path
