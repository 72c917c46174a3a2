"""Writes the example workflows: for each graph below, the UI format that the graph editor opens
(workflows/NAME.json) and its API-format twin that POST /prompt takes (workflows/api/NAME.json).

Both come from one description, with widget order read from the real nodes' INPUT_TYPES, so they
cannot drift apart. Run after changing a node's inputs:  COMFYUI_PATH=... python workflows/make_workflows.py
tests/test_host_workflows.py checks the files against a running ComfyUI.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACK_ROOT = HERE.parent
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

POSITIVE = "a photograph of an astronaut riding a horse on the moon, highly detailed, sharp focus"
NEGATIVE = "blurry, low quality, deformed"
CHECKPOINT = "sd_xl_base_1.0.safetensors"


def sdxl_front(g, batch_size=1):
    """Checkpoint, prompts and an empty 1024x1024 latent: the usual SDXL front end (columns 0 and 1)."""
    g.node("ckpt", "CheckpointLoaderSimple", 0, ckpt_name=CHECKPOINT)
    g.node("pos", "CLIPTextEncode", 1, text=POSITIVE, clip=("ckpt", 1), title="Positive prompt")
    g.node("neg", "CLIPTextEncode", 1, text=NEGATIVE, clip=("ckpt", 1), title="Negative prompt")
    g.node("latent", "EmptyLatentImage", 1, width=1024, height=1024, batch_size=batch_size)


def sdxl_back(g, samples, prefix, suffix="", band=0):
    g.node("decode" + suffix, "VAEDecode", 4, samples=samples, vae=("ckpt", 2), band=band)
    g.node("save" + suffix, "SaveImage", 5, images=("decode" + suffix, 0), filename_prefix=prefix, band=band)


def plot(g, samples, source, suffix="", band=0):
    """The Guidance Schedule Plot of the run that made `samples` (source: ("model", ...) or ("guider", ...))."""
    g.node("plot" + suffix, "GuidanceSchedulePlot", 4, samples=samples, band=band, **{source[0]: source[1]})
    g.node("preview" + suffix, "PreviewImage", 5, images=("plot" + suffix, 0), band=band)


def interval_patch(g):
    """Stock KSampler, guided only inside the paper's SDXL interval (0.28, 5.42]."""
    sdxl_front(g)
    g.node("interval", "GuidanceIntervalPatch", 2, model=("ckpt", 0), sigma_hi=5.42, sigma_lo=0.28)
    g.node("sampler", "KSampler", 3, model=("interval", 0), seed=0, steps=32, cfg=10.0,
           sampler_name="dpmpp_2m", scheduler="karras", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0)
    sdxl_back(g, ("sampler", 0), "guidance_schedules/interval")


def custom_sampler_inputs(g, sampler, sigmas_node, **sigmas):
    g.node("noise", "RandomNoise", 2, noise_seed=0)
    g.node("ksampler", "KSamplerSelect", 2, sampler_name=sampler)
    g.node("sigmas", sigmas_node, 2, **sigmas)


def interval_guider(g):
    """The paper's SDXL setup: 32 Heun steps on a Karras grid 14.61 -> 0.03 with rho 3, w = 16 on (0.28, 5.42]."""
    sdxl_front(g)
    g.node("guider", "GuidanceIntervalGuider", 2, model=("ckpt", 0), positive=("pos", 0),
           negative=("neg", 0), cfg=16.0, sigma_hi=5.42, sigma_lo=0.28)
    custom_sampler_inputs(g, "heun", "KarrasScheduler", steps=32, sigma_max=14.61, sigma_min=0.03, rho=3.0)
    g.node("sample", "SamplerCustomAdvanced", 3, noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/interval")


def interval_perpneg(g):
    """ComfyUI's PerpNegGuider fed the interval patch: guided steps are Perp-Neg's own (the positive, the negative
    and the empty prompt), the others run the positive pass alone."""
    sdxl_front(g)
    g.node("empty", "CLIPTextEncode", 1, text="", clip=("ckpt", 1), title="Empty prompt")
    g.node("interval", "GuidanceIntervalPatch", 2, model=("ckpt", 0), sigma_hi=5.42, sigma_lo=0.28)
    g.node("guider", "PerpNegGuider", 2, model=("interval", 0), positive=("pos", 0), negative=("neg", 0),
           empty_conditioning=("empty", 0), cfg=10.0, neg_scale=1.0)
    custom_sampler_inputs(g, "dpmpp_2m", "BasicScheduler", model=("ckpt", 0), scheduler="karras", steps=32,
                          denoise=1.0)
    g.node("sample", "SamplerCustomAdvanced", 3, noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/interval_perpneg")
    plot(g, ("sample", 0), ("model", ("interval", 0)))


# Adaptive Guidance and its LinearAG calibration use the same sampler, grid and cfg (euler, 30 karras
# steps, cfg 7), so the file the calibration example writes is the one the AG examples can use.
AG_SAMPLER, AG_STEPS, AG_CFG = "euler", 30, 7.0


def adaptive_patch(g):
    """Stock KSampler; each image stops being guided once its predictions agree."""
    sdxl_front(g)
    g.node("adaptive", "AdaptiveGuidancePatch", 2, model=("ckpt", 0), threshold=0.995, linear_ag="none")
    g.node("sampler", "KSampler", 3, model=("adaptive", 0), seed=0, steps=AG_STEPS, cfg=AG_CFG,
           sampler_name=AG_SAMPLER, scheduler="karras", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0)
    sdxl_back(g, ("sampler", 0), "guidance_schedules/adaptive")
    plot(g, ("sampler", 0), ("model", ("adaptive", 0)))


def adaptive_guider(g):
    sdxl_front(g)
    g.node("guider", "AdaptiveGuidanceGuider", 2, model=("ckpt", 0), positive=("pos", 0),
           negative=("neg", 0), cfg=AG_CFG, threshold=0.995, linear_ag="none")
    custom_sampler_inputs(g, AG_SAMPLER, "BasicScheduler", model=("ckpt", 0), scheduler="karras", steps=AG_STEPS,
                          denoise=1.0)
    g.node("sample", "SamplerCustomAdvanced", 3, noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/adaptive")
    plot(g, ("sample", 0), ("guider", ("guider", 0)))


def linear_ag_calibration(g):
    """Fit LinearAG coefficients for SDXL + euler + 30 karras steps at cfg 7, the AG examples' settings
    (8 runs x batch 4 = 32 trajectories). Then pick the file in the AG nodes' linear_ag input."""
    sdxl_front(g, batch_size=4)
    g.node("ksampler", "KSamplerSelect", 2, sampler_name=AG_SAMPLER)
    g.node("sigmas", "BasicScheduler", 2, model=("ckpt", 0), scheduler="karras", steps=AG_STEPS, denoise=1.0)
    g.node("calibrate", "LinearAGCalibrate", 3, model=("ckpt", 0), positive=("pos", 0), negative=("neg", 0),
           cfg=AG_CFG, sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0), runs=8, seed=0,
           name="sdxl_euler_30")


ANNEALING_SCHEDULER = "annealing_sdxl.safetensors"  # the converted official network (see weights/README.md)


def annealing_patch(g):
    """Stock KSampler with the paper's sampler: DDIM with CFG++ re-noising = euler_cfg_pp, 50 steps."""
    sdxl_front(g)
    g.node("annealing", "AnnealingGuidancePatch", 2, model=("ckpt", 0), scheduler=ANNEALING_SCHEDULER,
           **{"lambda": 0.4})
    g.node("sampler", "KSampler", 3, model=("annealing", 0), seed=0, steps=50, cfg=1.0,
           sampler_name="euler_cfg_pp", scheduler="ddim_uniform", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0, title="KSampler (cfg unused: the network picks the scale)")
    sdxl_back(g, ("sampler", 0), "guidance_schedules/annealing")
    plot(g, ("sampler", 0), ("model", ("annealing", 0)))


def annealing_guider(g, lambdas=(0.4,)):
    sdxl_front(g)
    custom_sampler_inputs(g, "euler_cfg_pp", "BasicScheduler", model=("ckpt", 0), scheduler="ddim_uniform", steps=50,
                          denoise=1.0)
    for i, lam in enumerate(lambdas):
        band, k = (i + 1, f"_{i}") if len(lambdas) > 1 else (0, "")
        if len(lambdas) > 1:
            g.band(band, f"lambda {lam}")
        g.node("guider" + k, "AnnealingGuidanceGuider", 2, model=("ckpt", 0), positive=("pos", 0),
               negative=("neg", 0), scheduler=ANNEALING_SCHEDULER, title=f"Annealing guidance, lambda {lam}",
               band=band, **{"lambda": lam})
        g.node("sample" + k, "SamplerCustomAdvanced", 3, noise=("noise", 0), guider=("guider" + k, 0),
               sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0), band=band)
        sdxl_back(g, ("sample" + k, 0), f"guidance_schedules/annealing_lambda_{lam}", k, band)
        plot(g, ("sample" + k, 0), ("guider", ("guider" + k, 0)), k, band)


TRAINING_FOLDER = "annealing_training"  # input/annealing_training: the images, each with its caption NAME.txt


def annealing_training(g):
    """A captioned image folder -> VAE Encode and CLIP Text Encode (ComfyUI maps both over the list) -> the
    network's training -> the loss graph. The folder loader is ComfyUI 0.8's."""
    g.node("ckpt", "CheckpointLoaderSimple", 0, ckpt_name=CHECKPOINT)
    g.node("data", "LoadImageTextDataSetFromFolder", 0, folder=TRAINING_FOLDER, title="Training images and captions")
    g.node("resize", "ImageScale", 1, image=("data", 0), upscale_method="lanczos", width=1024, height=1024,
           crop="center", title="One size for all (1024 x 1024)")
    g.node("pos", "CLIPTextEncode", 1, text=("data", 1), clip=("ckpt", 1), title="Captions")
    g.node("neg", "CLIPTextEncode", 1, text="", clip=("ckpt", 1), title="Null prompt (empty)")
    g.node("encode", "VAEEncode", 2, pixels=("resize", 0), vae=("ckpt", 2))
    g.node("train", "AnnealingGuidanceTrain", 3, model=("ckpt", 0), latents=("encode", 0), positive=("pos", 0),
           negative=("neg", 0), name="sdxl_annealing_mine")
    g.node("loss", "LossGraphNode", 4, loss=("train", 1), filename_prefix="guidance_schedules/annealing_training_loss")


# Nodes an example needs that older ComfyUI lacks: tests/host/test_host_workflows.py checks the rest of the
# example there, and the README says which version the example needs.
WAN_POSITIVE = ("a red fox running through fresh snow in a pine forest at dawn, the camera tracking beside it, soft "
                "golden light, cinematic")
WAN_NEGATIVE = "static, blurry, low quality, distorted, deformed, subtitles, watermark"


def interval_wan22(g):
    """Wan 2.2 text to video (14B) as ComfyUI's own template wires it: two experts, the high-noise one for the first
    10 of 20 steps and the low-noise one for the rest, two KSamplerAdvanced over one step range; the guidance
    interval on both (its bounds are sigmas, so one setting carries across the two samplers)."""
    g.node("high", "UNETLoader", 0, unet_name="wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
           weight_dtype="default", title="High-noise expert")
    g.node("low", "UNETLoader", 0, unet_name="wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
           weight_dtype="default", title="Low-noise expert")
    g.node("clip", "CLIPLoader", 0, clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")
    g.node("vae", "VAELoader", 0, vae_name="wan_2.1_vae.safetensors")
    g.node("pos", "CLIPTextEncode", 1, text=WAN_POSITIVE, clip=("clip", 0), title="Positive prompt")
    g.node("neg", "CLIPTextEncode", 1, text=WAN_NEGATIVE, clip=("clip", 0), title="Negative prompt")
    g.node("latent", "EmptyHunyuanLatentVideo", 1, width=640, height=640, length=81, batch_size=1)
    g.node("shift_high", "ModelSamplingSD3", 1, model=("high", 0), shift=5.0)
    g.node("shift_low", "ModelSamplingSD3", 1, model=("low", 0), shift=5.0)
    g.node("interval_high", "GuidanceIntervalPatch", 2, model=("shift_high", 0), sigma_hi=5.42, sigma_lo=0.28,
           title="Guidance interval (high-noise expert)")
    g.node("interval_low", "GuidanceIntervalPatch", 2, model=("shift_low", 0), sigma_hi=5.42, sigma_lo=0.28,
           title="Guidance interval (low-noise expert)")
    common = dict(noise_seed=0, steps=20, cfg=3.5, sampler_name="euler", scheduler="simple", positive=("pos", 0),
                  negative=("neg", 0))
    g.node("sampler_high", "KSamplerAdvanced", 3, model=("interval_high", 0), add_noise="enable",
           latent_image=("latent", 0), start_at_step=0, end_at_step=10, return_with_leftover_noise="enable",
           title="KSampler (high-noise expert, steps 0-10)", **common)
    g.node("sampler_low", "KSamplerAdvanced", 3, model=("interval_low", 0), add_noise="disable",
           latent_image=("sampler_high", 0), start_at_step=10, end_at_step=10000, return_with_leftover_noise="disable",
           title="KSampler (low-noise expert, steps 10-20)", **common)
    g.node("decode", "VAEDecode", 4, samples=("sampler_low", 0), vae=("vae", 0))
    # an animated WEBP: the same inputs on every ComfyUI the pack supports (SaveVideo's changed)
    g.node("save", "SaveAnimatedWEBP", 5, images=("decode", 0), filename_prefix="guidance_schedules/wan22",
           fps=16.0, lossless=False, quality=90, method="default")


NEEDS_NEWER_COMFYUI = {"annealing_guidance_training_sdxl": {"LoadImageTextDataSetFromFolder": "0.8"}}

# API name (workflows/api/NAME.json, for scripts) -> (title, graph). The graph editor's template browser
# shows a UI workflow's file name as its title and workflows/TITLE.jpg as its picture, so the UI files are
# named by their titles; each records its API twin in extra.guidance_schedules.api.
WORKFLOWS = {
    "guidance_interval_patch_sdxl": ("Guidance interval with KSampler (SDXL)", interval_patch),
    "guidance_interval_guider_sdxl": ("Guidance interval as in the paper (SDXL, SamplerCustomAdvanced)", interval_guider),
    "guidance_interval_perpneg_sdxl": ("Guidance interval with Perp-Neg (SDXL, PerpNegGuider)", interval_perpneg),
    "adaptive_guidance_patch_sdxl": ("Adaptive Guidance with KSampler (SDXL)", adaptive_patch),
    "adaptive_guidance_guider_sdxl": ("Adaptive Guidance with SamplerCustomAdvanced (SDXL)", adaptive_guider),
    "linear_ag_calibration_sdxl": ("Adaptive Guidance, LinearAG calibration (SDXL)", linear_ag_calibration),
    "annealing_guidance_patch_sdxl": ("Annealing guidance with KSampler (SDXL)", annealing_patch),
    "annealing_guidance_guider_sdxl": ("Annealing guidance with SamplerCustomAdvanced (SDXL)", annealing_guider),
    "annealing_guidance_lambda_sweep_sdxl": ("Annealing guidance, three lambdas side by side (SDXL)",
                                             lambda g: annealing_guider(g, (0.05, 0.4, 0.8))),
    "annealing_guidance_training_sdxl": ("Annealing guidance, train a network for your model (SDXL)",
                                         annealing_training),
    "guidance_interval_wan22_t2v": ("Guidance interval on Wan 2.2 text to video (two experts, KSamplerAdvanced)",
                                    interval_wan22),
}


# Layout: every node sits in a column (x) and a band (a horizontal strip, one per lambda in the sweep);
# within a band a column stacks its nodes top to bottom. Heights are what the graph editor draws for the
# node's slots and widgets, plus room for the picture of nodes that show one, so nothing overlaps even
# after a run (tests/host/test_host_workflows.py checks the files).
COLUMN_WIDTH, COLUMN_GAP, ROW_GAP, BAND_GAP, TITLE_HEIGHT = 360, 70, 50, 90, 30
SLOT_HEIGHT, WIDGET_HEIGHT = 20, 24
PICTURE_HEIGHT = {"SaveImage": 420, "PreviewImage": 240, "LossGraphNode": 300}  # an SDXL image, a plot


class Graph:
    def __init__(self, node_classes):
        self.classes = node_classes
        self.nodes = {}  # key -> (id, class_type, (column, band), values, title)
        self.band_titles = {}

    def node(self, key, class_type, column, title=None, band=0, **values):
        self.nodes[key] = (len(self.nodes) + 1, class_type, (column, band), values, title)

    def band(self, band, title):
        """Draw a group box titled `title` around the nodes of `band`."""
        self.band_titles[band] = title

    def height_of(self, class_type, values):
        inputs = self.inputs_of(class_type)
        slots = sum(1 for name, _, is_widget, _ in inputs if not is_widget or isinstance(values.get(name), tuple))
        widgets = sum(1 + bool(o.get("control_after_generate")) for name, _, is_widget, o in inputs
                      if is_widget and not isinstance(values.get(name), tuple))
        outputs = len(self.outputs_of(class_type)[0])
        return max(slots, outputs) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 30 + PICTURE_HEIGHT.get(class_type, 0)

    def layout(self):
        """{key: (pos, size)} and the bands' boxes {band: [x, y, w, h]}."""
        heights = {k: self.height_of(c, v) for k, (_, c, _, v, _) in self.nodes.items()}
        placed, boxes, y_band = {}, {}, 0
        for band in sorted({b for _, _, (_, b), _, _ in self.nodes.values()}):
            members = [k for k, (_, _, (_, b), _, _) in self.nodes.items() if b == band]
            y_band += TITLE_HEIGHT + (40 if band in self.band_titles else 0)
            bottom = y_band
            for column in sorted({self.nodes[k][2][0] for k in members}):
                y = y_band
                for k in (k for k in members if self.nodes[k][2][0] == column):
                    x = column * (COLUMN_WIDTH + COLUMN_GAP)
                    placed[k] = ([x, y], [COLUMN_WIDTH, heights[k]])
                    y += heights[k] + TITLE_HEIGHT + ROW_GAP
                bottom = max(bottom, y - ROW_GAP)
            if band in self.band_titles:
                xs = [placed[k][0][0] for k in members]
                boxes[band] = [min(xs) - 20, y_band - TITLE_HEIGHT - 50, max(xs) + COLUMN_WIDTH + 40 - min(xs),
                               bottom - y_band + TITLE_HEIGHT + 70]
            y_band = bottom + BAND_GAP
        return placed, boxes

    def inputs_of(self, class_type):
        spec = self.classes[class_type].INPUT_TYPES()
        merged = {**spec.get("required", {}), **spec.get("optional", {})}
        out = []
        for name, decl in merged.items():
            kind = decl[0] if isinstance(decl[0], (list, tuple)) else str(getattr(decl[0], "value", decl[0]))
            options = decl[1] if len(decl) > 1 else {}
            is_widget = isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES
            out.append((name, "COMBO" if isinstance(kind, (list, tuple)) else kind, is_widget, options))
        return out

    def outputs_of(self, class_type):
        cls = self.classes[class_type]
        kinds = [str(getattr(t, "value", t)) for t in cls.RETURN_TYPES]
        names = list(getattr(cls, "RETURN_NAMES", None) or kinds)
        return kinds, names

    def api(self):
        prompt = {}
        for key, (nid, class_type, _, values, title) in self.nodes.items():
            inputs = {}
            for name, _, is_widget, options in self.inputs_of(class_type):
                if name not in values:
                    if is_widget and "default" in options:  # what the graph editor queues for an untouched widget
                        inputs[name] = options["default"]
                    continue
                v = values[name]
                inputs[name] = [str(self.nodes[v[0]][0]), v[1]] if isinstance(v, tuple) else v
            prompt[str(nid)] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title or class_type}}
        return prompt

    def ui(self):
        links, ui_nodes = [], []
        by_id = {}
        placed, boxes = self.layout()
        for key, (nid, class_type, _, values, title) in self.nodes.items():
            kinds, names = self.outputs_of(class_type)
            pos, size = placed[key]
            node = {"id": nid, "type": class_type, "pos": pos, "size": size, "flags": {},
                    "order": nid - 1, "mode": 0, "inputs": [],
                    "outputs": [{"name": n, "type": k, "links": [], "slot_index": i} for i, (k, n) in enumerate(zip(kinds, names))],
                    "properties": {"Node name for S&R": class_type}, "widgets_values": []}
            if title:
                node["title"] = title
            by_id[nid] = node
            ui_nodes.append(node)
        for key, (nid, class_type, _, values, _) in self.nodes.items():
            node = by_id[nid]
            for name, kind, is_widget, options in self.inputs_of(class_type):
                v = values.get(name)
                if isinstance(v, tuple):
                    src_id = self.nodes[v[0]][0]
                    link_id = len(links) + 1
                    links.append([link_id, src_id, v[1], nid, len(node["inputs"]), kind])
                    node["inputs"].append({"name": name, "type": kind, "link": link_id})
                    by_id[src_id]["outputs"][v[1]]["links"].append(link_id)
                elif is_widget:
                    node["widgets_values"].append(options.get("default") if v is None else v)
                    if options.get("control_after_generate"):
                        node["widgets_values"].append("fixed")
        return {"last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
                "groups": [{"title": self.band_titles[b], "bounding": box, "color": "#3f789e", "font_size": 24}
                           for b, box in boxes.items()],
                "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}}, "version": 0.4}


def load_node_classes():
    sys.path.insert(0, str(PACK_ROOT))
    import standalone
    root = standalone.import_comfyui()
    import nodes
    # ComfyUI's comfy/ folder lands first on sys.path on some versions (its older extras import model_management
    # from there), where its utils.py hides the root's utils package that nodes_images.py (SaveAnimatedWEBP)
    # imports through server.py: that package is made importable under its name first
    if (root / "utils" / "__init__.py").is_file():
        import importlib.util
        spec = importlib.util.spec_from_file_location("utils", root / "utils" / "__init__.py",
                                                      submodule_search_locations=[str(root / "utils")])
        package = importlib.util.module_from_spec(spec)
        sys.modules["utils"] = package
        spec.loader.exec_module(package)
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    from guidance_schedules.nodes import NODE_CLASS_MAPPINGS
    return {**nodes.NODE_CLASS_MAPPINGS, **NODE_CLASS_MAPPINGS}


def main():
    classes = load_node_classes()
    for name, (title, build) in WORKFLOWS.items():
        g = Graph(classes)
        build(g)
        ui = g.ui()
        ui["extra"]["guidance_schedules"] = {"api": f"api/{name}.json"}
        if name in NEEDS_NEWER_COMFYUI:
            ui["extra"]["guidance_schedules"]["needs_comfyui"] = NEEDS_NEWER_COMFYUI[name]
        (HERE / f"{title}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (HERE / "api" / f"{name}.json").write_text(json.dumps(g.api(), indent=2) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
