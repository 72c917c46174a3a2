"""comfyui-guidance-schedules: classifier-free guidance that is applied only where it helps.

ComfyUI loads this package from custom_nodes/ and registers the mappings below.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"  # web/guidance_schedules.js: the pack's warnings and results in the frontend

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
