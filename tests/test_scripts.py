"""The converter command line, as the README gives it."""
import subprocess
import sys
from pathlib import Path

import reference

reference.require_reference()
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_annealing_checkpoint.py"


def test_convert_command_writes_once_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "annealing_sdxl.safetensors"
    first = subprocess.run([sys.executable, str(SCRIPT), str(reference.CHECKPOINT), str(out)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert out.stat().st_size > 100_000
    before = out.read_bytes()
    again = subprocess.run([sys.executable, str(SCRIPT), str(reference.CHECKPOINT), str(out)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr
    assert out.read_bytes() == before
