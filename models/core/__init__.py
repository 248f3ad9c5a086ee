"""The layer every capability stands on: where the pack runs (host), model folders and safe names (folders),
the shared model cache and its bridge into ComfyUI's memory management, safe weight loading, per-run patches,
IMAGE/MASK conversions, the error base, the model catalogue and "what is this file" (identify).

Nothing here imports a capability package (perception, sd, upscale) or ComfyUI at module level."""
