"""Queue a grid of settings through the API of one or several ComfyUI servers and collect the results
side by side.

    python scripts/sweep.py workflows/api/guidance_interval_patch_sdxl.json --server http://127.0.0.1:8188 \\
        --set GuidanceIntervalPatch.sigma_hi=2.9,5.42 --set KSampler.cfg=7,10 --seeds 2 --out sweep

WORKFLOW is an API-format workflow (the files in workflows/api/, or the graph editor's "Export (API)").
Each --set NODE.INPUT=V1,V2,... is an axis; NODE is a node id or its title (_meta.title), INPUT one of
its widget inputs. The grid is the product of the axes times the seeds; the seeds go to every seed
input of the workflow (seed, noise_seed). The command checks that every server has the workflow's node
types and the list values it uses (checkpoint names...), hands the runs to the servers a few at a time
each, follows them over the websockets, downloads every output image from the server that made it and
writes, in DIR:
- runs.csv: one row per run: prompt_id, status, server, seed, one column per --set key, seconds (as the
  server measured it), evaluations and uncond_evaluations (model evaluations and of those, how many ran
  the unconditional pass, from the pack's run records; empty for a run without the pack's nodes), the
  image files, and the server's message for a run that failed;
- runs.json: the same with the pack's full run records (guided steps, weight per step and sample) and
  when each run was queued;
- sheet.png: a contact sheet, the first axis across, the other axes and the seeds down.
A server that stops answering gives its runs to the others; one that answers again is used again.
Running the same command again (with the same servers or others) queues only the runs that are missing
or failed and rebuilds the sheet from all of them; Ctrl-C takes the sweep's prompts off every server and
leaves every finished run recorded. The exit status is 0 when every run succeeded, 1 when some failed or
no server answered for --patience seconds, 2 for a usage error or a server that lacks what the workflow
uses, 130 after Ctrl-C.

Only the standard library and packages ComfyUI installs (aiohttp, Pillow, tqdm). The parts live in
scripts/sweeping/, one module per job (its __init__ lists them).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, where the sweeping package is

from sweeping.command import main, parse_servers, read_workflow  # noqa: E402
from sweeping.grid import GRID_LIMIT, Grid, UsageError, grid, parse_axis, parse_seeds  # noqa: E402
from sweeping.runs import Run, RunState  # noqa: E402

__all__ = ["main", "parse_servers", "read_workflow", "GRID_LIMIT", "Grid", "UsageError", "grid", "parse_axis",
           "parse_seeds", "Run", "RunState"]

if __name__ == "__main__":
    sys.exit(main())
