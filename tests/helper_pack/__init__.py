"""Test-only ComfyUI node pack: a tiny MODEL and its CONDITIONING, so that the server test can
queue real prompts without downloading weights. Never installed for users."""
from .tiny_models import (MODEL_TYPES, build_conditioning, build_configured_model, build_faulty_model, build_model,
                          latent_shape_of)


class GSTestTinyModel:
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "positive", "negative")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_type": (list(MODEL_TYPES),)}}

    def build(self, model_type):
        return build_model(model_type), build_conditioning(1), build_conditioning(2)


class GSTestLatentToImage:
    """A tiny model's latent as a small picture (its first three channels, squashed to [0, 1] and scaled
    up), so that test prompts save real images without a VAE."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def convert(self, samples):
        import torch
        x = samples["samples"][:, :3].float()
        image = torch.nn.functional.interpolate(torch.sigmoid(x), scale_factor=8, mode="nearest")
        return (image.permute(0, 2, 3, 1).contiguous(),)


def _beds():
    """The pack's test beds (benchmarks/beds), importable from the pack's root."""
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.append(root)
    from benchmarks.beds import comfy_models, digits
    return comfy_models, digits


class GSTestDigitsBed:
    """The digits bed (benchmarks/beds/digits.py) as a MODEL, with one sample per requested digit: its
    class conditioning, the null class as negative, and an empty 1 x 8 x 8 latent for the batch."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("model", "positive", "negative", "latent")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"digits": ("STRING", {"default": "0123456789"}),
                             "variant": (["labelnoise30", "early"],)}}

    def build(self, digits, variant):
        import torch
        comfy_models, bed = _beds()
        labels = [int(c) for c in digits if c.isdigit()]
        n = bed.NULL_CLASS + 1
        return (comfy_models.digits_model(variant), comfy_models.class_conditioning(labels, n),
                comfy_models.class_conditioning(None, n), {"samples": torch.zeros(len(labels), 1, 8, 8)})


class GSTestDigitsSheet:
    """A batch of digits-bed samples as one picture: the digits side by side, scaled up, grey levels."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def draw(self, samples):
        import torch
        x = ((samples["samples"][:, 0].float() + 1) / 2).clamp(0, 1)  # the bed's pixels live in [-1, 1]
        x = torch.nn.functional.interpolate(x[:, None], scale_factor=6, mode="nearest")[:, 0]
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=1.0)  # a white frame around each digit
        per_row = min(len(x), 5)
        x = torch.cat([x, torch.ones(-len(x) % per_row, *x.shape[1:])])
        rows = [torch.cat(list(x[i:i + per_row]), dim=1) for i in range(0, len(x), per_row)]
        picture = torch.cat(rows, dim=0)
        return (picture[None, :, :, None].expand(-1, -1, -1, 3).contiguous(),)


class GSTestFaultyModel:
    """The tiny model with a fault: its predictions NaN, or without gradient."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"fault": (["returns_nan", "no_gradient"],)}}

    def build(self, fault):
        return build_faulty_model(fault), build_conditioning(1), build_conditioning(2)


class GSTestLatent:
    """A tiny model's latent of any batch size, zero included (EmptyLatentImage takes 1 at least), all zeros or
    holding a NaN."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"batch_size": ("INT", {"default": 1, "min": 0, "max": 64}),
                             "fill": (["zeros", "nan"],)}}

    def build(self, batch_size, fill):
        import torch
        samples = torch.zeros(batch_size, 4, 8, 8)
        if fill == "nan" and batch_size:
            samples[0, 0, 0, 0] = float("nan")
        return ({"samples": samples},)


class GSTestConfiguredModel:
    """A stand-in model of any configuration ComfyUI supports (a comfy.supported_models class by name: WAN21_T2V,
    StableAudio, ...): that configuration's model sampling and latent format, a network of any latent rank, and
    an empty latent of its shape (batch 2, a little above zero)."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"configuration": ("STRING", {"default": "WAN21_T2V"})}}

    def build(self, configuration):
        import torch
        model = build_configured_model(configuration)
        return model, build_conditioning(1), build_conditioning(2), {"samples": torch.full(latent_shape_of(model, 2), 0.1)}


class GSTestWait:
    """Passes a latent on after `seconds` (times the server's GS_TEST_WAIT_FACTOR, so that a benchmark can make
    one server slower than the others), then for as long as the file `hold_while_exists` exists: time that
    stands in for a GPU's and costs no CPU, and a gate that a test opens and closes."""
    CATEGORY = "_for_testing/guidance_schedules"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "wait"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 600.0}),
                             "hold_while_exists": ("STRING", {"default": ""})}}

    def wait(self, samples, seconds, hold_while_exists):
        import os
        import time
        import comfy.model_management
        until = time.monotonic() + seconds * float(os.environ.get("GS_TEST_WAIT_FACTOR", "1"))
        give_up = time.monotonic() + 600
        while time.monotonic() < until or (hold_while_exists and os.path.exists(hold_while_exists)
                                           and time.monotonic() < give_up):
            comfy.model_management.throw_exception_if_processing_interrupted()  # an interrupt ends the wait
            time.sleep(0.02)
        return (samples,)


ODD_NAME = "GSTestWait (odd? name #1|x)"
NODE_CLASS_MAPPINGS = {"GSTestFaultyModel": GSTestFaultyModel, "GSTestLatent": GSTestLatent,
                       "GSTestTinyModel": GSTestTinyModel, "GSTestLatentToImage": GSTestLatentToImage,
                       "GSTestDigitsBed": GSTestDigitsBed, "GSTestDigitsSheet": GSTestDigitsSheet,
                       "GSTestWait": GSTestWait, "GSTestConfiguredModel": GSTestConfiguredModel,
                       # the same node under a name such as custom nodes have, which a URL must quote
                       ODD_NAME: GSTestWait}
