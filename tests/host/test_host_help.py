"""What a user sees of the pack in the editor beside the nodes themselves: a help page for every node (English,
and Chinese), the node names, inputs and tooltips in Chinese, Japanese and Korean (locales/, which ComfyUI
serves to the frontend), and display names and search words that find and tell apart every node.
benchmarks/frontend_check.py looks at the same in the real frontend."""
import json
import re
from pathlib import Path

import pytest

PACK = Path(__file__).resolve().parents[2]
HELP = PACK / "web" / "docs"
LANGUAGES = ("zh", "ja", "ko")


@pytest.fixture(scope="module")
def pack_nodes():
    from guidance_schedules.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    return NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS


def inputs_of(cls):
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def test_every_node_has_a_help_page_in_english_and_chinese(pack_nodes):
    classes, _ = pack_nodes
    for name, cls in classes.items():
        for page in (HELP / f"{name}.md", HELP / name / "zh.md"):
            assert page.is_file(), f"{name}: no help page {page.relative_to(PACK)}"
            text = page.read_text(encoding="utf-8")
            # the frontend resolves a picture against docs/ (not the page's folder): each must be there
            for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
                assert (HELP / picture).is_file(), f"{page.relative_to(PACK)}: picture {picture} is not in web/docs/"
            for input_name in inputs_of(cls):  # every input explained, by its name
                assert input_name in text or page.name == "zh.md", f"{name}.md does not explain {input_name}"
        if name != "GuidanceSchedulePlot":
            assert "arxiv.org" in (HELP / f"{name}.md").read_text(), f"{name}.md does not link the paper"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_node_input_and_tooltip_is_translated(pack_nodes, language):
    classes, _ = pack_nodes
    defs = json.loads((PACK / "locales" / language / "nodeDefs.json").read_text(encoding="utf-8"))
    assert set(defs) == set(classes)
    for name, cls in classes.items():
        entry = defs[name]
        assert entry["display_name"] and entry["description"], f"{language} {name}"
        for input_name, decl in inputs_of(cls).items():
            translated = entry["inputs"].get(input_name)
            assert translated and translated["name"], f"{language} {name}: input {input_name} untranslated"
            if len(decl) > 1 and decl[1].get("tooltip"):
                assert translated.get("tooltip"), f"{language} {name}: the tooltip of {input_name} untranslated"
        for index, tooltip in enumerate(getattr(cls, "OUTPUT_TOOLTIPS", None) or ()):
            assert entry["outputs"][str(index)]["tooltip"], f"{language} {name}: output {index} untranslated"
    categories = json.loads((PACK / "locales" / language / "main.json").read_text(encoding="utf-8"))["nodeCategories"]
    from guidance_schedules.nodes.method_nodes import CATEGORY
    assert CATEGORY.rsplit("/", 1)[1] in categories


def test_display_names_are_short_and_distinct(pack_nodes):
    """The node library truncates long names: each differs from the others within what it shows (about 25
    characters in a sidebar of its default width)."""
    _, names = pack_nodes
    assert len(set(names.values())) == len(names)
    for name, display in names.items():
        assert len(display) <= 25, f"{name}: {display!r} is {len(display)} characters"


@pytest.mark.parametrize("words", ["guidance schedules", "cfg"])
def test_the_packs_name_and_cfg_find_every_node(pack_nodes, words):
    classes, _ = pack_nodes
    for name, cls in classes.items():
        assert words in cls.SEARCH_ALIASES, f"{name}: searching {words!r} does not find it"


@pytest.mark.parametrize("method, nodes", [
    ("guidance interval", {"GuidanceIntervalPatch", "GuidanceIntervalGuider", "GuidanceSchedulePlot"}),
    ("adaptive guidance", {"AdaptiveGuidancePatch", "AdaptiveGuidanceGuider", "LinearAGCalibrate", "GuidanceSchedulePlot"}),
    ("annealing guidance", {"AnnealingGuidancePatch", "AnnealingGuidanceGuider", "AnnealingGuidanceTrain",
                            "GuidanceSchedulePlot"}),
])
def test_a_methods_name_finds_its_nodes(pack_nodes, method, nodes):
    classes, names = pack_nodes
    found = {n for n, cls in classes.items() if method in [a.lower() for a in cls.SEARCH_ALIASES]
             or method in names[n].lower()}
    assert found == nodes
