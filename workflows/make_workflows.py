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


def sdxl_back(g, samples, prefix, suffix="", column=3):
    """Decode under the sampler, the saved image in the next column."""
    g.node("decode" + suffix, "VAEDecode", column, samples=samples, vae=("ckpt", 2))
    g.node("save" + suffix, "SaveImage", column + 1, images=("decode" + suffix, 0), filename_prefix=prefix)


def plot(g, samples, source):
    """The Guidance Schedule Plot of the run that made `samples` (source: ("model", ...) or ("guider", ...)):
    under the decode, its picture under the saved image."""
    g.node("plot", "GuidanceSchedulePlot", 3, samples=samples, **{source[0]: source[1]})
    g.node("preview", "PreviewImage", 4, images=("plot", 0))


CHECKPOINT_NEEDED = (f"Needs: {CHECKPOINT} (Stability AI's SDXL base 1.0) in ComfyUI/models/checkpoints/; another SDXL "
                     "checkpoint works too: pick it in Load Checkpoint.")


def interval_patch(g):
    """Stock KSampler, guided only inside the paper's SDXL interval (0.28, 5.42]."""
    sdxl_front(g)
    g.node("interval", "GuidanceIntervalPatch", 2, model=("ckpt", 0), sigma_hi=5.42, sigma_lo=0.28)
    g.node("sampler", "KSampler", 3, model=("interval", 0), seed=0, steps=32, cfg=10.0,
           sampler_name="dpmpp_2m", scheduler="karras", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0)
    sdxl_back(g, ("sampler", 0), "guidance_schedules/interval")
    plot(g, ("sampler", 0), ("model", ("interval", 0)))
    g.note("Guidance interval on a stock KSampler. CFG is applied only while the noise level (sigma) is inside "
           "(sigma_lo, sigma_hi]; at the other steps the negative prompt's model pass is skipped, so the render "
           "is faster and keeps more variety. The paper's SDXL setting (0.28, 5.42] guides about a third of the "
           f"steps.\n\n{CHECKPOINT_NEEDED}\n\nTry: sigma_hi and sigma_lo on Guidance Interval (a wider interval "
           "guides more steps), cfg on the KSampler (the paper uses higher cfg inside the interval). The plot shows "
           "which steps were guided.")


def custom_sampler_inputs(g, sampler, sigmas_node, column=2, **sigmas):
    g.node("noise", "RandomNoise", column, noise_seed=0)
    g.node("ksampler", "KSamplerSelect", column, sampler_name=sampler)
    g.node("sigmas", sigmas_node, column, **sigmas)


def interval_guider(g):
    """The paper's SDXL setup: 32 Heun steps on a Karras grid 14.61 -> 0.03 with rho 3, w = 16 on (0.28, 5.42]."""
    sdxl_front(g)
    g.node("guider", "GuidanceIntervalGuider", 2, model=("ckpt", 0), positive=("pos", 0),
           negative=("neg", 0), cfg=16.0, sigma_hi=5.42, sigma_lo=0.28)
    custom_sampler_inputs(g, "heun", "KarrasScheduler", steps=32, sigma_max=14.61, sigma_min=0.03, rho=3.0)
    g.node("sample", "SamplerCustomAdvanced", 3, noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/interval")
    g.note("The guidance interval exactly as the paper ran SDXL: 32 Heun steps on a Karras noise schedule "
           "(14.61 to 0.03, rho 3), cfg 16 inside (0.28, 5.42], no guidance outside it.\n\n"
           f"{CHECKPOINT_NEEDED}\n\nTry: sigma_hi, sigma_lo and cfg on Guidance Interval Guider; the Karras "
           "scheduler's steps.")


def interval_perpneg(g):
    """ComfyUI's PerpNegGuider fed the interval patch: guided steps are Perp-Neg's own (the positive, the negative
    and the empty prompt), the others run the positive pass alone."""
    sdxl_front(g)
    g.node("empty", "CLIPTextEncode", 1, text="", clip=("ckpt", 1), title="Empty prompt")
    g.node("interval", "GuidanceIntervalPatch", 2, model=("ckpt", 0), sigma_hi=5.42, sigma_lo=0.28)
    g.node("guider", "PerpNegGuider", 2, model=("interval", 0), positive=("pos", 0), negative=("neg", 0),
           empty_conditioning=("empty", 0), cfg=10.0, neg_scale=1.0)
    custom_sampler_inputs(g, "dpmpp_2m", "BasicScheduler", column=0, model=("ckpt", 0), scheduler="karras",
                          steps=32, denoise=1.0)
    g.node("sample", "SamplerCustomAdvanced", 3, noise=("noise", 0), guider=("guider", 0),
           sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
    sdxl_back(g, ("sample", 0), "guidance_schedules/interval_perpneg")
    plot(g, ("sample", 0), ("model", ("interval", 0)))
    g.note("ComfyUI's Perp-Neg guider with the guidance interval: inside (0.28, 5.42] a step runs Perp-Neg's three "
           "passes (positive, negative, empty prompt), outside it the positive pass alone. The plot shows which "
           f"steps were guided.\n\n{CHECKPOINT_NEEDED}\n\nTry: sigma_hi and sigma_lo on Guidance Interval; "
           "cfg and neg_scale on PerpNegGuider.", column=1)


# Adaptive Guidance and its LinearAG calibration use the same sampler, grid and cfg (euler, 30 karras
# steps, cfg 7), so the file the calibration example writes is the one the AG examples can use.
AG_SAMPLER, AG_STEPS, AG_CFG = "euler", 30, 7.0
AG_TRY = ("Try: threshold (lower stops guidance sooner and saves more; 0.99 to 0.999 is the useful range); "
          "linear_ag, once the calibration example has written a file for these settings.")


def adaptive_patch(g):
    """Stock KSampler; each image stops being guided once its predictions agree."""
    sdxl_front(g)
    g.node("adaptive", "AdaptiveGuidancePatch", 2, model=("ckpt", 0), threshold=0.995, linear_ag="none")
    g.node("sampler", "KSampler", 3, model=("adaptive", 0), seed=0, steps=AG_STEPS, cfg=AG_CFG,
           sampler_name=AG_SAMPLER, scheduler="karras", positive=("pos", 0), negative=("neg", 0),
           latent_image=("latent", 0), denoise=1.0)
    sdxl_back(g, ("sampler", 0), "guidance_schedules/adaptive")
    plot(g, ("sampler", 0), ("model", ("adaptive", 0)))
    g.note("Adaptive Guidance on a stock KSampler: each image is guided until its positive and negative "
           "predictions agree (their cosine similarity reaches the threshold), then the negative pass stops for "
           f"the remaining steps. The plot shows where it stopped.\n\n{CHECKPOINT_NEEDED}\n\n{AG_TRY}")


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
    g.note("Adaptive Guidance as a guider for SamplerCustomAdvanced: guided until the positive and negative "
           "predictions agree (cosine similarity at the threshold), unguided after. The plot shows where each "
           f"image stopped.\n\n{CHECKPOINT_NEEDED}\n\n{AG_TRY}")


def linear_ag_calibration(g):
    """Fit LinearAG coefficients for SDXL + euler + 30 karras steps at cfg 7, the AG examples' settings
    (8 runs x batch 4 = 32 trajectories). Then pick the file in the AG nodes' linear_ag input."""
    sdxl_front(g, batch_size=4)
    g.node("ksampler", "KSamplerSelect", 2, sampler_name=AG_SAMPLER)
    g.node("sigmas", "BasicScheduler", 2, model=("ckpt", 0), scheduler="karras", steps=AG_STEPS, denoise=1.0)
    g.node("calibrate", "LinearAGCalibrate", 3, model=("ckpt", 0), positive=("pos", 0), negative=("neg", 0),
           cfg=AG_CFG, sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0), runs=8, seed=0,
           name="sdxl_euler_30")
    g.note("LinearAG calibration: runs full CFG 8 times (batch 4) and fits, per step, how the negative prediction "
           "follows from the positive ones. The file it writes (models/linear_ag/sdxl_euler_30.safetensors) then "
           "appears in the linear_ag input of the Adaptive Guidance nodes, which use it to estimate the negative "
           f"pass instead of skipping it. About 8 full renders.\n\n{CHECKPOINT_NEEDED}\n\nTry: runs (more runs, a "
           "closer fit). Keep sampler, steps, scheduler and cfg equal to the renders that will use the file (the "
           "Adaptive Guidance examples' settings: euler, 30 karras steps, cfg 7).")


ANNEALING_SCHEDULER = "annealing_sdxl.safetensors"  # the converted official network (see weights/README.md)
ANNEALING_NETWORK = ("The network: the authors' SDXL network is not shipped (its repository has no licence). "
                     "Download checkpoint.pt from github.com/annealing-guidance/annealing-guidance "
                     "(src/model/checkpoints/) into ComfyUI/models/guidance_schedulers/, or convert it to "
                     "annealing_sdxl.safetensors with the pack's scripts/convert_annealing_checkpoint.py.")


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
    g.note("Annealing guidance: a small network picks the guidance scale at every step; the KSampler's cfg is not "
           "used. Sampler euler_cfg_pp with ddim_uniform is the paper's (DDIM with CFG++).\n\n"
           f"{CHECKPOINT_NEEDED}\n\n{ANNEALING_NETWORK}\n\nTry: lambda (0.05 to 0.8; higher follows the "
           "prompt more closely, lower gives more natural images).")


def annealing_guider(g, lambdas=(0.4,)):
    sdxl_front(g)
    several = len(lambdas) > 1
    custom_sampler_inputs(g, "euler_cfg_pp", "BasicScheduler", column=0 if several else 2, model=("ckpt", 0),
                          scheduler="ddim_uniform", steps=50, denoise=1.0)
    for i, lam in enumerate(lambdas):
        # one column per lambda when there are several (guider, sampler, decode and image stacked), so that
        # the three images sit side by side
        k, column = (f"_{i}", 2 + i) if several else ("", None)
        g.node("guider" + k, "AnnealingGuidanceGuider", column or 2, model=("ckpt", 0), positive=("pos", 0),
               negative=("neg", 0), scheduler=ANNEALING_SCHEDULER, title=f"Annealing guidance, lambda {lam}",
               **{"lambda": lam})
        g.node("sample" + k, "SamplerCustomAdvanced", column or 3, noise=("noise", 0), guider=("guider" + k, 0),
               sampler=("ksampler", 0), sigmas=("sigmas", 0), latent_image=("latent", 0))
        if several:
            g.node("decode" + k, "VAEDecode", column, samples=("sample" + k, 0), vae=("ckpt", 2))
            g.node("save" + k, "SaveImage", column, images=("decode" + k, 0),
                   filename_prefix=f"guidance_schedules/annealing_lambda_{lam}")
        else:
            sdxl_back(g, ("sample", 0), f"guidance_schedules/annealing_lambda_{lam}")
            plot(g, ("sample", 0), ("guider", ("guider", 0)))
    if several:
        g.note(f"Annealing guidance at lambda {', '.join(map(str, lambdas))}, same seed, side by side: lambda "
               "trades prompt alignment (higher) against image quality (lower).\n\n"
               f"{CHECKPOINT_NEEDED}\n\n{ANNEALING_NETWORK}\n\nTry: the lambda of each guider; the seed on "
               "RandomNoise.", column=1)
    else:
        g.note("Annealing guidance as a guider for SamplerCustomAdvanced: a small network picks the guidance "
               "scale at every step (no cfg input); sampler euler_cfg_pp is the paper's DDIM with CFG++.\n\n"
               f"{CHECKPOINT_NEEDED}\n\n{ANNEALING_NETWORK}\n\nTry: lambda (0.05 to 0.8).")


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
    g.note("Trains an annealing guidance network for your own model: images with captions go in, a network file "
           "comes out (models/guidance_schedulers/sdxl_annealing_mine.safetensors), which the annealing nodes then "
           "list. Needs ComfyUI 0.8 or newer (the folder loader).\n\nPut the images and one caption per image "
           f"(NAME.txt beside NAME.png) in ComfyUI/input/{TRAINING_FOLDER}/. {CHECKPOINT_NEEDED}\n\nTry: name; "
           "steps and training_images on the trainer. A run can be stopped and queued again: it resumes.",
           column=2)


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
    g.node("shift_high", "ModelSamplingSD3", 2, model=("high", 0), shift=5.0)
    g.node("shift_low", "ModelSamplingSD3", 2, model=("low", 0), shift=5.0)
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
    g.node("save", "SaveAnimatedWEBP", 4, images=("decode", 0), filename_prefix="guidance_schedules/wan22",
           fps=16.0, lossless=False, quality=90, method="default")
    g.note("Wan 2.2 text to video with the guidance interval on both experts (ComfyUI's own two-sampler Wan 2.2 "
           "wiring). The bounds are noise levels, so one setting serves both samplers: at (0.28, 5.42] the "
           "high-noise expert runs unguided and 11 of the 40 model passes are saved.\n\nNeeds, as in ComfyUI's "
           "Wan 2.2 template: wan2.2_t2v_high_noise_14B_fp8_scaled and wan2.2_t2v_low_noise_14B_fp8_scaled in "
           "models/diffusion_models/, "
           "umt5_xxl_fp8_e4m3fn_scaled in models/text_encoders/, wan_2.1_vae in models/vae/.\n\nTry: sigma_hi "
           "and sigma_lo on both Guidance Interval nodes (keep them equal).", column=4)


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


# Layout: every node sits in a column (x); a column stacks its nodes top to bottom. Heights are what the graph
# editor draws for the node's slots and widgets, plus room for the picture of nodes that show one, so nothing
# overlaps even after a run (tests/host/test_host_workflows.py checks the files). Five columns of 320 px and
# no column taller than about 1,000 px: the editor opens a template fitted to the window, and at 1600 x 900 that
# is a zoom at which it still draws the nodes' text (benchmarks/frontend_check.py looks).
COLUMN_WIDTH, COLUMN_GAP, ROW_GAP, TITLE_HEIGHT = 320, 40, 30, 30
SLOT_HEIGHT, WIDGET_HEIGHT = 20, 24
PICTURE_HEIGHT = {"SaveImage": 300, "PreviewImage": 220, "LossGraphNode": 300}  # an SDXL image, a plot
NOTE = "Note"  # the editor's own text node: in the UI file only, never queued
NOTE_HEIGHT = 270


class Graph:
    def __init__(self, node_classes):
        self.classes = node_classes
        self.nodes = {}  # key -> (id, class_type, column, values, title)

    def node(self, key, class_type, column, title=None, **values):
        self.nodes[key] = (len(self.nodes) + 1, class_type, column, values, title)

    def note(self, text, column=0):
        """What the example shows, what it needs and what to change, for a user who opened it without the
        README. Added last, so that the API twin's node ids stay those of the queued nodes."""
        self.node("note", NOTE, column, title="Read me", text=text)

    def height_of(self, class_type, values):
        if class_type == NOTE:
            return NOTE_HEIGHT
        inputs = self.inputs_of(class_type)
        slots = sum(1 for name, _, is_widget, _ in inputs if not is_widget or isinstance(values.get(name), tuple))
        widgets = sum(1 + bool(o.get("control_after_generate")) for name, _, is_widget, o in inputs
                      if is_widget and not isinstance(values.get(name), tuple))
        outputs = len(self.outputs_of(class_type)[0])
        return max(slots, outputs) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 30 + PICTURE_HEIGHT.get(class_type, 0)

    def layout(self):
        """{key: (pos, size)}."""
        placed = {}
        for column in sorted({c for _, _, c, _, _ in self.nodes.values()}):
            y = TITLE_HEIGHT
            for k, (_, class_type, c, values, _) in self.nodes.items():
                if c == column:
                    height = self.height_of(class_type, values)
                    placed[k] = ([column * (COLUMN_WIDTH + COLUMN_GAP), y], [COLUMN_WIDTH, height])
                    y += height + TITLE_HEIGHT + ROW_GAP
        return placed

    def inputs_of(self, class_type):
        if class_type == NOTE:
            return [("text", "STRING", True, {})]
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
        if class_type == NOTE:
            return [], []
        cls = self.classes[class_type]
        kinds = [str(getattr(t, "value", t)) for t in cls.RETURN_TYPES]
        names = list(getattr(cls, "RETURN_NAMES", None) or kinds)
        return kinds, names

    def api(self):
        prompt = {}
        for key, (nid, class_type, _, values, title) in self.nodes.items():
            if class_type == NOTE:
                continue
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
        placed = self.layout()
        for key, (nid, class_type, _, values, title) in self.nodes.items():
            kinds, names = self.outputs_of(class_type)
            pos, size = placed[key]
            node = {"id": nid, "type": class_type, "pos": pos, "size": size, "flags": {},
                    "order": nid - 1, "mode": 0, "inputs": [],
                    "outputs": [{"name": n, "type": k, "links": [], "slot_index": i} for i, (k, n) in enumerate(zip(kinds, names))],
                    "properties": {"Node name for S&R": class_type}, "widgets_values": []}
            if title:
                node["title"] = title
            if class_type == NOTE:  # as the editor saves one: a pale yellow text box
                node.update(properties={"text": ""}, color="#432", bgcolor="#653")
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
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [40, 40]}}, "version": 0.4}


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
