"""VisionKit: perception, identity, control and fast generation nodes for ComfyUI, on one model cache.

Importing the pack is cheap: no diffusers, transformers, segment_anything, basicsr, realesrgan,
insightface, onnxruntime or open_clip here; each engine in models/ imports its library when it first
loads a model. Relative imports only: users choose the folder name.
"""
from .models import folders as _folders
from .models import host as _host

_host.register_comfy_folders(_folders.FOLDERS.values())

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes import routes as _routes  # noqa: E402

WEB_DIRECTORY = "./web"

from .models import errors as _errors  # noqa: E402

_errors.shorten_error_names(__name__)  # ComfyUI shows "visionkit.UpscaleModelError", not the folder's path

if _host.in_comfyui():
    _routes.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
