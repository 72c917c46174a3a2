"""Test-only ComfyUI node pack: a tiny MODEL and its CONDITIONING, so that the server test can
queue real prompts without downloading weights. Never installed for users."""
from .tiny_models import MODEL_TYPES, build_conditioning, build_model


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


NODE_CLASS_MAPPINGS = {"GSTestTinyModel": GSTestTinyModel, "GSTestLatentToImage": GSTestLatentToImage}
