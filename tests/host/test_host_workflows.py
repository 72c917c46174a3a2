"""Every shipped workflow is valid against the nodes a running ComfyUI registers: node types exist,
input names, links and widget values are valid, and each UI workflow matches its API twin."""
import json
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # the editor's text nodes: saved in the UI file, never queued


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


def input_specs(info, class_type):
    spec = info[class_type]["input"]
    return {**spec.get("required", {}), **spec.get("optional", {})}


def combo_options(decl):
    if isinstance(decl[0], list):
        return decl[0]
    if decl[0] == "COMBO":
        return decl[1].get("options", [])
    return None


def is_widget(decl):
    return combo_options(decl) is not None or decl[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")


def check_widget_value(where, decl, value):
    options = combo_options(decl)
    if options is not None:
        if value in options:
            return
        if where.endswith("LoadImageTextDataSetFromFolder.folder"):  # the folders of this machine's input/
            assert isinstance(value, str) and value and "/" not in value, f"{where}: {value!r} is not a folder name"
            return
        # A model-file combo lists the files of this machine: for those, a model file name is all we can check.
        from guidance_schedules.nodes.annealing import NO_NETWORK
        # (VAELoader also lists "pixel_space", a built-in entry of no file, beside its files)
        is_file_combo = all("." in str(o) or o == "pixel_space" for o in options) or options == [NO_NETWORK]
        assert is_file_combo and isinstance(value, str) and value.endswith(MODEL_FILES), \
            f"{where}: {value!r} not among {options[:8]}"
        return
    kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
    if kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
        assert opts.get("min", -float("inf")) <= value <= opts.get("max", float("inf")), f"{where}: {value} out of range"
        if kind == "INT":
            assert float(value).is_integer(), f"{where}: {value} is not an integer"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a boolean"


def newer_nodes(ui, info):
    """The node types this example needs that this ComfyUI lacks: only those its file declares (with the
    version that has them), each checked where the host has it."""
    needs = ui["extra"]["guidance_schedules"].get("needs_comfyui", {})
    missing = {n["type"] for n in ui["nodes"] if n["type"] not in info and n["type"] not in FRONTEND_ONLY}
    assert missing <= set(needs), f"unknown node types {sorted(missing - set(needs))}"
    return missing


def ui_to_api(ui, info):
    """The API prompt the graph editor would queue for this UI workflow (checking it on the way). Nodes of a
    newer ComfyUI that this one lacks are left out, with the links from them."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    newer = newer_nodes(ui, info)
    prompt = {}
    for node in ui["nodes"]:
        class_type = node["type"]
        if class_type in newer or class_type in FRONTEND_ONLY:
            continue
        specs = input_specs(info, class_type)
        inputs = {}
        for slot, inp in enumerate(node.get("inputs", [])):
            assert inp["name"] in specs, f"node {node['id']} {class_type}: no input named {inp['name']}"
            if inp.get("link") is None:
                continue
            link_id, src, src_slot, dst, dst_slot, kind = links[inp["link"]]
            assert (dst, dst_slot) == (node["id"], slot), f"link {link_id} does not end at {class_type}.{inp['name']}"
            if nodes[src]["type"] in newer:
                inputs[inp["name"]] = [str(src), src_slot]
                continue
            src_type = info[nodes[src]["type"]]["output"][src_slot]
            assert src_type == kind == specs[inp["name"]][0], f"link {link_id}: {src_type} -> {inp['name']} ({kind})"
            inputs[inp["name"]] = [str(src), src_slot]
        values = list(node.get("widgets_values", []))
        optional = info[class_type]["input"].get("optional", {})
        for name, decl in specs.items():
            if not is_widget(decl) or name in inputs:
                continue
            if not values and name in optional:  # an optional widget a newer ComfyUI added: the editor fills its default
                continue
            assert values, f"node {node['id']} {class_type}: no widget value for {name}"
            value = values.pop(0)
            check_widget_value(f"node {node['id']} {class_type}.{name}", decl, value)
            inputs[name] = value
            if len(decl) > 1 and decl[1].get("control_after_generate"):
                assert values and values.pop(0) in CONTROL_VALUES, f"node {node['id']}: {name} lacks its control value"
        assert not values, f"node {node['id']} {class_type}: extra widget values {values}"
        for name, decl in info[class_type]["input"].get("required", {}).items():
            assert name in inputs, f"node {node['id']} {class_type}: required input {name} is missing"
        prompt[str(node["id"])] = {"class_type": class_type, "inputs": inputs}
    return prompt


def check_api(prompt, info, newer=frozenset()):
    for nid, node in prompt.items():
        class_type = node["class_type"]
        if class_type in newer:
            continue
        assert class_type in info, f"{nid}: unknown node type {class_type}"
        specs = input_specs(info, class_type)
        for name, value in node["inputs"].items():
            assert name in specs, f"{nid} {class_type}: no input named {name}"
            if isinstance(value, list):
                src = prompt[value[0]]
                if src["class_type"] in newer:
                    continue
                assert info[src["class_type"]]["output"][value[1]] == specs[name][0], f"{nid}.{name}: wrong type"
            else:
                check_widget_value(f"{nid} {class_type}.{name}", specs[name], value)
        for name in info[class_type]["input"].get("required", {}):
            assert name in node["inputs"], f"{nid} {class_type}: required input {name} is missing"


def api_twin(path):
    """The API-format twin a UI workflow names (workflows/api/, for scripts and the sweep)."""
    return WORKFLOWS / json.loads(path.read_text())["extra"]["guidance_schedules"]["api"]


def test_there_is_a_ui_and_an_api_workflow_for_each_node(object_info):
    used = set()
    for path in UI_FILES:
        used |= {n["type"] for n in json.loads(path.read_text())["nodes"]}
        assert api_twin(path).is_file(), f"{path.name} has no API twin"
    from guidance_schedules.nodes import NODE_CLASS_MAPPINGS
    assert set(NODE_CLASS_MAPPINGS) <= used


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_is_valid_and_matches_its_api_twin(path, object_info):
    ui = json.loads(path.read_text())
    ui_prompt = ui_to_api(ui, object_info)
    api = json.loads(api_twin(path).read_text())
    newer = newer_nodes(ui, object_info)
    check_api(api, object_info, newer)
    assert ui_prompt == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()
                         if v["class_type"] not in newer}


def test_the_server_offers_the_ui_workflows_as_templates(comfy_server):
    templates = comfy_server.get("/workflow_templates")
    assert sorted(templates["comfyui-guidance-schedules"]) == sorted(p.stem for p in UI_FILES)


# What the graph editor draws for a node (LiteGraph: a 30 px title bar above `pos`, 20 px a slot row,
# about 20 px a widget) and the room a node that shows a picture needs after a run.
TITLE, SLOT, WIDGET = 30, 20, 20
PICTURE = {"SaveImage": 300, "PreviewImage": 200}


def drawn_box(node):
    slots = max(len(node.get("inputs", [])), len(node.get("outputs", [])))
    least = slots * SLOT + len(node.get("widgets_values", [])) * WIDGET + 10 + PICTURE.get(node["type"], 0)
    width, height = node["size"]
    assert height >= least, f"node {node['id']} {node['type']}: {height} px high, needs {least}"
    x, y = node["pos"]
    return x, y - TITLE, x + width, y + height


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_no_two_nodes_of_an_example_overlap(path):
    nodes = json.loads(path.read_text())["nodes"]
    boxes = [(n["id"], n["type"], drawn_box(n)) for n in nodes]
    for i, (a_id, a_type, a) in enumerate(boxes):
        for b_id, b_type, b in boxes[i + 1:]:
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, f"{path.name}: node {a_id} ({a_type}) overlaps node {b_id} ({b_type})"


# The editor opens a template fitted to its window: at three quarters of the window's width or height
# (LiteGraph's fitToBounds), which on a 1600 x 900 screen leaves about 1600 x 760 px of canvas. Below a zoom of
# 0.6 it draws nodes without their text (LiteGraph's low-quality threshold).
WINDOW, FIT, TEXT_ZOOM = (1600, 760), 0.75, 0.6


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_an_example_opens_at_a_zoom_where_the_editor_draws_text(path):
    boxes = [drawn_box(n) for n in json.loads(path.read_text())["nodes"]]
    width = max(b[2] for b in boxes) - min(b[0] for b in boxes)
    height = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    zoom = FIT * min(WINDOW[0] / width, WINDOW[1] / height)
    assert zoom >= TEXT_ZOOM, f"{path.name}: {width} x {height} px opens at {zoom:.2f} on a 1600 x 900 screen"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_an_example_says_what_it_shows_and_what_it_needs(path):
    """A note in the graph: what the example shows, the files it needs and where they go, what to change."""
    ui = json.loads(path.read_text())
    notes = [n["widgets_values"][0] for n in ui["nodes"] if n["type"] in FRONTEND_ONLY]
    assert len(notes) == 1, f"{path.name}: {len(notes)} notes"
    loaded = [v for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY for v in n.get("widgets_values", [])
              if isinstance(v, str) and v.endswith(MODEL_FILES) and "guidance_schedules" not in v]
    for name in loaded:  # every model file the example loads, named with the folder it goes in
        stem = name.rsplit(".", 1)[0]
        assert stem in notes[0], f"{path.name}: the note does not name {name}"
    assert "models/" in notes[0] and "Try:" in notes[0], f"{path.name}: the note lacks where files go or what to try"
    if any(n["type"].startswith("Annealing") and n["type"] != "AnnealingGuidanceTrain" for n in ui["nodes"]):
        assert "github.com/annealing-guidance" in notes[0], f"{path.name}: the note does not say where the network is"


def test_the_calibration_example_makes_a_file_the_adaptive_examples_can_use():
    """Same sampler, step count, scheduler and cfg: the file one writes is refused by the other otherwise."""
    def settings(name):
        api = json.loads((WORKFLOWS / "api" / name).read_text())
        by_type = {n["class_type"]: n["inputs"] for n in api.values()}
        sampler = by_type.get("KSampler") or {**by_type["KSamplerSelect"], **by_type["BasicScheduler"]}
        cfg = (by_type.get("KSampler") or by_type.get("AdaptiveGuidanceGuider") or by_type["LinearAGCalibrate"])["cfg"]
        return sampler["sampler_name"], sampler["steps"], sampler["scheduler"], cfg
    calibration = settings("linear_ag_calibration_sdxl.json")
    assert settings("adaptive_guidance_patch_sdxl.json") == calibration
    assert settings("adaptive_guidance_guider_sdxl.json") == calibration


def test_every_template_has_a_readable_title_and_a_picture_made_by_the_pack():
    """The template browser shows a UI file's name as its title and NAME.jpg beside it as its picture."""
    from PIL import Image
    for path in UI_FILES:
        assert "_" not in path.stem and " " in path.stem, f"{path.name}: not a title a person reads"
        picture = path.with_suffix(".jpg")
        assert picture.is_file(), f"{path.name} has no picture"
        with Image.open(picture) as image:
            assert image.format == "JPEG" and image.width >= 300


def test_the_frontend_lists_every_template_in_reading_order():
    """web/guidance_schedules.js orders the pack's templates by its TEMPLATE_ORDER (the server's glob is
    unsorted); that list must name each UI workflow once, or a new example would sort last unnoticed."""
    import re
    script = (WORKFLOWS.parent / "web" / "guidance_schedules.js").read_text()
    listed = re.search(r"const TEMPLATE_ORDER = \[(.*?)\];", script, re.S).group(1)
    order = re.findall(r'"([^"]+)"', listed)
    assert sorted(order) == sorted(p.stem for p in UI_FILES)
    assert len(order) == len(set(order))
    assert order[0].startswith("Guidance interval") and "calibration" not in order[0]


# --- the image examples run as a user queues them, with only the weights stood in ------------------------------
# The test pack's tiny model (tests/helper_pack) stands in for the checkpoint's MODEL and its text encoder's
# CONDITIONING, and its latent-to-image for the VAE's decoding; every other node, setting and link is the example's
# own (its sampler, scheduler, steps, the pack's node, the plot, SaveImage), on a small latent. The examples that
# need more weights than a checkpoint are not here: annealing's (the SDXL network refuses another model),
# the trainer's and the calibration's (files written; their own API tests: test_host_annealing_training.py,
# test_host_adaptive.py) and Wan 2.2's (three model files; its sampling: test_host_every_model.py).
API = WORKFLOWS / "api"
IMAGE_EXAMPLES = {  # the API workflow -> the method its run record names
    "guidance_interval_patch_sdxl": "interval", "guidance_interval_guider_sdxl": "interval",
    "guidance_interval_perpneg_sdxl": "interval", "adaptive_guidance_patch_sdxl": "adaptive",
    "adaptive_guidance_guider_sdxl": "adaptive"}
QUICK_START = "guidance_interval_patch_sdxl"  # the README's Quick start: "Guidance interval with KSampler (SDXL)"


def with_weights_stood_in(prompt: dict) -> dict:
    prompt = json.loads(json.dumps(prompt))
    (checkpoint,) = [k for k, v in prompt.items() if v["class_type"] == "CheckpointLoaderSimple"]
    prompt[checkpoint] = {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}}
    # the tiny model's positive and negative conditioning for the example's prompts (an empty prompt: the negative)
    texts = {k: [checkpoint, 1 if v["_meta"]["title"] == "Positive prompt" else 2]
             for k, v in prompt.items() if v["class_type"] == "CLIPTextEncode"}
    for k in texts:
        del prompt[k]
    for node in prompt.values():
        node["inputs"] = {name: texts.get(value[0], value) if isinstance(value, list) and value[1] == 0 else value
                          for name, value in node["inputs"].items()}
        if node["class_type"] == "VAEDecode":
            node.update(class_type="GSTestLatentToImage", inputs={"samples": node["inputs"]["samples"]})
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
    return prompt


def sampling_node(prompt: dict) -> dict:
    (node,) = [v for v in prompt.values() if v["class_type"] in ("KSampler", "SamplerCustomAdvanced")]
    return node


@pytest.mark.parametrize("name", IMAGE_EXAMPLES)
def test_an_image_example_runs_to_its_image_and_plot_with_only_the_weights_stood_in(comfy_server, name):
    example = json.loads((API / f"{name}.json").read_text())
    history = comfy_server.run_prompt(with_weights_stood_in(example))
    assert history["status"]["status_str"] == "success", history["status"]
    for node_id, node in example.items():
        if node["class_type"] in ("SaveImage", "PreviewImage"):  # the image, and the plot where the example has one
            (image,) = history["outputs"][node_id]["images"]
            assert (comfy_server.base / image["type"] / image["subfolder"] / image["filename"]).is_file(), image
            if node["class_type"] == "SaveImage":
                assert image["filename"].startswith(node["inputs"]["filename_prefix"].rsplit("/", 1)[-1])
    prompt_id = history["prompt"][1]
    records = comfy_server.get(f"/guidance_schedules/runs?prompt_id={prompt_id}")
    assert [record["method"] for record in records] == [IMAGE_EXAMPLES[name]]


def test_the_quick_start_skips_the_negative_pass_where_its_sigma_is_outside_the_interval(comfy_server):
    """The Quick start's KSampler (dpmpp_2m, karras, 32 steps: one model evaluation per step, at the step's
    sigma) runs the negative pass exactly at the steps whose sigma is in (sigma_lo, sigma_hi], counted on the
    sigmas ComfyUI itself makes for the model."""
    import comfy.samplers
    import tiny_models
    example = json.loads((API / f"{QUICK_START}.json").read_text())
    sampler = sampling_node(example)["inputs"]
    (patch,) = [v["inputs"] for v in example.values() if v["class_type"] == "GuidanceIntervalPatch"]
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m", "karras")
    sigmas = comfy.samplers.calculate_sigmas(tiny_models.build_model("eps").get_model_object("model_sampling"),
                                             "karras", sampler["steps"]).tolist()
    guided = sum(patch["sigma_lo"] < s <= patch["sigma_hi"] for s in sigmas[:-1])
    assert 0 < guided < sampler["steps"]
    history = comfy_server.run_prompt(with_weights_stood_in(example))
    assert history["status"]["status_str"] == "success", history["status"]
    (record,) = comfy_server.get(f"/guidance_schedules/runs?prompt_id={history['prompt'][1]}")
    assert (record["evaluations"], record["uncond_evaluations"]) == (sampler["steps"], guided)
