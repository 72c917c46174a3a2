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


NODE_CLASS_MAPPINGS = {"GSTestTinyModel": GSTestTinyModel}
