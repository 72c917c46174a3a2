"""The README's example of scripts/sweep.py: a grid over the guidance interval on the digits bed, queued
through a real ComfyUI server (main.py --cpu, started here with the pack and the test helper pack),
so that the contact sheet shows real differences.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/sweep_example.py OUT_DIR   # about a minute on 2 CPU cores

Writes OUT_DIR/sweep_digits.png (the sheet; the README's picture is made with OUT_DIR docs) and prints runs.csv;
nothing else is written outside the temporary folder it removes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT))  # standalone.py, which tests/host_support.py imports
from comfy_server import ComfyServer  # noqa: E402  (tests/: the server the host tests start)

WORKFLOW = {
    "1": {"class_type": "GSTestDigitsBed", "inputs": {"digits": "0123456789", "variant": "labelnoise30"},
          "_meta": {"title": "Digits bed"}},
    "2": {"class_type": "GuidanceIntervalGuider", "inputs": {
        "model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "cfg": 3.0, "sigma_hi": 1000.0, "sigma_lo": 0.0},
        "_meta": {"title": "Interval"}},
    "3": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "4": {"class_type": "KarrasScheduler", "inputs": {"steps": 32, "sigma_max": 20.0, "sigma_min": 0.005, "rho": 7.0}},
    "5": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
    "6": {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["5", 0], "guider": ["2", 0], "sampler": ["3", 0], "sigmas": ["4", 0], "latent_image": ["1", 3]}},
    "7": {"class_type": "GSTestDigitsSheet", "inputs": {"samples": ["6", 0]}},
    "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "digits_sweep"}},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder the sheet goes to (made if missing)")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gs-sweep-example-"))
    try:
        (work / "workflow.json").write_text(json.dumps(WORKFLOW, indent=1))
        server = ComfyServer()
        try:
            subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), str(work / "workflow.json"),
                            "--server", server.url, "--set", "Interval.sigma_hi=1000,5.42,2",
                            "--set", "Interval.cfg=2,3,4", "--seeds", "2", "--out", str(work / "out")], check=True)
        finally:
            server.stop()
        shutil.copy(work / "out" / "sheet.png", out / "sweep_digits.png")
        print((work / "out" / "runs.csv").read_text())
        print("wrote", out / "sweep_digits.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
