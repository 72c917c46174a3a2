"""CI must run exactly the test command the README gives (a new user types the README's), on every
host tree the README says the pack is tested on."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_tests_section():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]


def test_ci_runs_the_readme_test_command():
    block = re.search(r"```bash\n(.*?)```", readme_tests_section(), re.S)
    assert block, "README's Tests section has no bash block"
    readme_commands = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert readme_commands == [c for c in ci_commands if "pytest" in c and "pip" not in c]


def test_ci_tests_on_the_host_versions_the_readme_names():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    trees = re.search(r"^TREES=\((.*)\)$", ci, re.M).group(1).split()
    assert trees == ["comfyui-0.3.64", "comfyui-0.8.0", "comfyui-0.33.0"]
    section = readme_tests_section()
    for tree in trees:
        assert "v" + tree.removeprefix("comfyui-") in section
