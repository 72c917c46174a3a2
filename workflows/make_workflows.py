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
    """Checkpoint, prompts and an empty 1024x1024 latent: the usual SDXL front end."""
    g.node("ckpt", "CheckpointLoaderSimple", (0, 200), ckpt_name=CHECKPOINT)
    g.node("pos", "CLIPTextEncode", (420, 80), text=POSITIVE, clip=("ckpt", 1), title="Positive prompt")
    g.node("neg", "CLIPTextEncode", (420, 330), text=NEGATIVE, clip=("ckpt", 1), title="Negative prompt")
    g.node("latent", "EmptyLatentImage", (420, 580), width=1024, height=1024, batch_size=batch_size)


def sdxl_back(g, samples, prefix, suffix="", y=200):
    g.node("decode" + suffix, "VAEDecode", (1500, y), samples=samples, vae=("ckpt", 2))
    g.node("save" + suffix, "SaveImage", (1740, y), images=("decode" + suffix, 0), filename_prefix=prefix)


def interval_patch(g):
    """Stock KSampler, guided only inside the paper's SDXL interval (0.28, 5.42]."""
    sdxl_front(g)
    g.node("interval", "GuidanceIntervalPatch", (420, 760), model=("ckpt", 0), sigma_hi=5.42, sigma_lo=0.28)
    g.node("sampler", "KSampler", (900, 200), model=("interval", 0), seed=0, steps=32, cfg=10.0,
           sampler_name="dpmpp_2m", scheduler="karras", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0)
    sdxl_back(g, ("sampler", 0), "guidance_schedules/interval")


def interval_guider(g):
    """The paper's SDXL setup: 32 Heun steps on a Karras grid 14.61 -> 0.03 with rho 3, w = 16 on (0.28, 5.42]."""
    sdxl_front(g)
    g.node("guider", "GuidanceIntervalGuider", (900, 80), model=("ckpt", 0), positive=("pos", 0),
           negative=("neg", 0), cfg=16.0, sigma_hi=5.42, sigma_lo=0.28)
    g.node("noise", "RandomNoise", (900, 360), noise_seed=0)
    g.node("ksampler", "KSamplerSelect", (900, 500), sampler_name="heun")
    g.node("sigmas", "KarrasScheduler", (900, 620), steps=32, sigma_max=14.61, sigma_min=0.03, rho=3.0)
    g.node("sample", "SamplerCustomAdvanced", (1200, 200), noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/interval")


def adaptive_patch(g):
    """Stock KSampler; each image stops being guided once its predictions agree."""
    sdxl_front(g)
    g.node("adaptive", "AdaptiveGuidancePatch", (420, 760), model=("ckpt", 0), threshold=0.995,
           linear_ag="none")
    g.node("sampler", "KSampler", (900, 200), model=("adaptive", 0), seed=0, steps=30, cfg=7.0,
           sampler_name="dpmpp_2m", scheduler="karras", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0)
    g.node("plot", "GuidanceSchedulePlot", (1200, 560), samples=("sampler", 0), model=("adaptive", 0))
    g.node("preview", "PreviewImage", (1500, 560), images=("plot", 0))
    sdxl_back(g, ("sampler", 0), "guidance_schedules/adaptive")


def adaptive_guider(g):
    sdxl_front(g)
    g.node("guider", "AdaptiveGuidanceGuider", (900, 80), model=("ckpt", 0), positive=("pos", 0),
           negative=("neg", 0), cfg=7.0, threshold=0.995, linear_ag="none")
    g.node("noise", "RandomNoise", (900, 360), noise_seed=0)
    g.node("ksampler", "KSamplerSelect", (900, 500), sampler_name="euler")
    g.node("sigmas", "BasicScheduler", (900, 620), model=("ckpt", 0), scheduler="karras", steps=30, denoise=1.0)
    g.node("sample", "SamplerCustomAdvanced", (1200, 200), noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    g.node("plot", "GuidanceSchedulePlot", (1200, 560), samples=("sample", 0), guider=("guider", 0))
    g.node("preview", "PreviewImage", (1500, 560), images=("plot", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/adaptive")


def linear_ag_calibration(g):
    """Fit LinearAG coefficients for SDXL + euler + 30 karras steps (8 runs x batch 4 = 32 trajectories).
    Then pick the file in the AG nodes' linear_ag input, with the same sampler and steps."""
    sdxl_front(g, batch_size=4)
    g.node("ksampler", "KSamplerSelect", (900, 360), sampler_name="euler")
    g.node("sigmas", "BasicScheduler", (900, 480), model=("ckpt", 0), scheduler="karras", steps=30, denoise=1.0)
    g.node("calibrate", "LinearAGCalibrate", (1250, 200), model=("ckpt", 0), positive=("pos", 0), negative=("neg", 0),
           cfg=7.0, sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0), runs=8, seed=0,
           name="sdxl_euler_30")


ANNEALING_SCHEDULER = "annealing_sdxl.safetensors"  # the converted official network (see weights/README.md)


def annealing_patch(g):
    """Stock KSampler with the paper's sampler: DDIM with CFG++ re-noising = euler_cfg_pp, 50 steps."""
    sdxl_front(g)
    g.node("annealing", "AnnealingGuidancePatch", (420, 760), model=("ckpt", 0), scheduler=ANNEALING_SCHEDULER,
           **{"lambda": 0.4})
    g.node("sampler", "KSampler", (900, 200), model=("annealing", 0), seed=0, steps=50, cfg=1.0,
           sampler_name="euler_cfg_pp", scheduler="ddim_uniform", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0, title="KSampler (cfg unused: the scheduler picks the scale)")
    g.node("plot", "GuidanceSchedulePlot", (1200, 560), samples=("sampler", 0), model=("annealing", 0))
    g.node("preview", "PreviewImage", (1500, 560), images=("plot", 0))
    sdxl_back(g, ("sampler", 0), "guidance_schedules/annealing")


def annealing_guider(g, lambdas=(0.4,)):
    sdxl_front(g)
    g.node("noise", "RandomNoise", (900, 20), noise_seed=0)
    g.node("ksampler", "KSamplerSelect", (900, 160), sampler_name="euler_cfg_pp")
    g.node("sigmas", "BasicScheduler", (900, 280), model=("ckpt", 0), scheduler="ddim_uniform", steps=50, denoise=1.0)
    for i, lam in enumerate(lambdas):
        y, k = 420 + 460 * i, f"_{i}" if len(lambdas) > 1 else ""
        g.node("guider" + k, "AnnealingGuidanceGuider", (900, y), model=("ckpt", 0), positive=("pos", 0),
               negative=("neg", 0), scheduler=ANNEALING_SCHEDULER, title=f"Annealing guidance, lambda {lam}",
               **{"lambda": lam})
        g.node("sample" + k, "SamplerCustomAdvanced", (1200, y), noise=("noise", 0), guider=("guider" + k, 0),
               sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
        g.node("plot" + k, "GuidanceSchedulePlot", (1500, y + 200), samples=("sample" + k, 0), guider=("guider" + k, 0))
        g.node("preview" + k, "PreviewImage", (1740, y + 200), images=("plot" + k, 0))
        sdxl_back(g, ("sample" + k, 0), f"guidance_schedules/annealing_lambda_{lam}", k, y)


WORKFLOWS = {
    "guidance_interval_patch_sdxl": interval_patch,
    "guidance_interval_guider_sdxl": interval_guider,
    "adaptive_guidance_patch_sdxl": adaptive_patch,
    "adaptive_guidance_guider_sdxl": adaptive_guider,
    "linear_ag_calibration_sdxl": linear_ag_calibration,
    "annealing_guidance_patch_sdxl": annealing_patch,
    "annealing_guidance_guider_sdxl": annealing_guider,
    "annealing_guidance_lambda_sweep_sdxl": lambda g: annealing_guider(g, (0.05, 0.4, 0.8)),
}


class Graph:
    def __init__(self, node_classes):
        self.classes = node_classes
        self.nodes = {}  # key -> (id, class_type, pos, values, title)

    def node(self, key, class_type, pos, title=None, **values):
        self.nodes[key] = (len(self.nodes) + 1, class_type, pos, values, title)

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
            for name, _, is_widget, _ in self.inputs_of(class_type):
                if name not in values:
                    continue
                v = values[name]
                inputs[name] = [str(self.nodes[v[0]][0]), v[1]] if isinstance(v, tuple) else v
            prompt[str(nid)] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title or class_type}}
        return prompt

    def ui(self):
        links, ui_nodes = [], []
        by_id = {}
        for key, (nid, class_type, pos, values, title) in self.nodes.items():
            kinds, names = self.outputs_of(class_type)
            node = {"id": nid, "type": class_type, "pos": list(pos), "size": [320, 130], "flags": {},
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
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def load_node_classes():
    sys.path.insert(0, str(PACK_ROOT))
    import standalone
    standalone.import_comfyui()
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    from guidance_schedules.nodes import NODE_CLASS_MAPPINGS
    return {**nodes.NODE_CLASS_MAPPINGS, **NODE_CLASS_MAPPINGS}


def main():
    classes = load_node_classes()
    for name, build in WORKFLOWS.items():
        g = Graph(classes)
        build(g)
        (HERE / f"{name}.json").write_text(json.dumps(g.ui(), indent=2) + "\n")
        (HERE / "api" / f"{name}.json").write_text(json.dumps(g.api(), indent=2) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
