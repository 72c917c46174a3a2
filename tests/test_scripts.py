"""The converter command line, as the README gives it."""
import subprocess
import sys
from pathlib import Path

import reference
from sweep_support import sweep_module

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


def readme_sweep_commands():
    """The README's sweep commands, as typed, each as its arguments."""
    import re
    import shlex
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    return [shlex.split(c.replace("\\\n", " "))[2:] for c in re.findall(r"```bash\n(python scripts/sweep.py .*?)```", readme, re.S)]


def readme_grid(argv):
    """What the command's arguments make of its workflow (no server needed for this part)."""
    import json
    sweep = sweep_module()
    workflow = json.loads((Path(__file__).resolve().parents[1] / argv[0]).read_text())
    axes = [sweep.parse_axis(workflow, argv[i + 1]) for i, a in enumerate(argv) if a == "--set"]
    seeds = sweep.parse_seeds(argv[argv.index("--seeds") + 1])
    servers = sweep.parse_servers([argv[i + 1] for i, a in enumerate(argv) if a == "--server"])
    return workflow, sweep.grid(workflow, axes, seeds), servers


def test_the_readmes_sweep_commands_fit_the_shipped_workflows():
    """The README's sweep commands, as typed: each workflow exists, each --set names a node and input of it,
    the grid has the size the command asks for, the servers are addresses the command takes."""
    one, several = readme_sweep_commands()
    workflow, runs, servers = readme_grid(one)
    assert len(runs) == 2 * 2 * 2 and len({r.key for r in runs}) == 8 and servers == ["http://127.0.0.1:8188"]
    sampler = next(n for n in workflow.values() if n["class_type"] == "KSampler")["inputs"]
    assert {r.prompt["6"]["inputs"]["seed"] for r in runs} == {0, 1} and "seed" in sampler
    workflow, runs, servers = readme_grid(several)
    assert len(runs) == 3 * 2 * 8 and len({r.key for r in runs}) == 48
    assert servers == ["http://gpu-box:8188", "http://gpu-box:8189", "https://comfy.example.org/gpu2"]


def test_the_readmes_converter_command_works_as_typed_on_a_fresh_comfyui(tmp_path):
    """In ComfyUI/custom_nodes/<pack>, with the official checkpoint.pt downloaded there and no
    models/guidance_schedulers yet (a fresh ComfyUI), the README's command writes the file."""
    import re
    import shlex
    import shutil
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    command = re.search(r"```bash\n(python scripts/convert_annealing_checkpoint.py [^\n]*)\n```", readme).group(1)
    pack = tmp_path / "ComfyUI" / "custom_nodes" / "comfyui-guidance-schedules"
    for part in ("scripts", "samplers"):
        shutil.copytree(root / part, pack / part)
    shutil.copy(root / "standalone.py", pack / "standalone.py")
    (tmp_path / "ComfyUI" / "models").mkdir()
    shutil.copy(reference.CHECKPOINT, pack / "checkpoint.pt")
    argv = shlex.split(command)
    done = subprocess.run([sys.executable, *argv[1:]], cwd=pack, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "ComfyUI" / "models" / "guidance_schedulers" / "annealing_sdxl.safetensors"
    assert written.stat().st_size > 100_000
