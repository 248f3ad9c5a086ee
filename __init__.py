"""VisionKit: perception, identity, control and fast generation nodes for ComfyUI, on one model cache.

Importing the pack is cheap: no diffusers, transformers, segment_anything, basicsr, realesrgan,
insightface, onnxruntime or open_clip here; each engine in models/ imports its library when it first
loads a model. Relative imports only: users choose the folder name.
"""
from .models.core import folders as _folders
from .models.core import host as _host

_host.register_comfy_folders(_folders.FOLDERS.values())

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes import routes as _routes  # noqa: E402

WEB_DIRECTORY = "./web"


if _host.in_comfyui():
    _routes.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
