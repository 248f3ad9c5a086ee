"""The layer every capability stands on: where the pack runs (host), model folders and safe names (folders),
the shared model cache (cache; what a cached value weighs and where: memory) and its bridge into ComfyUI's
memory management (comfy_bridge), safe weight loading (weights), per-run patches (patching), ONNX sessions
(onnx_sessions), IMAGE/MASK conversions (imageops), the error base (errors), the model catalogue with its
download sources (catalog) and "what is this file" (identify).

Nothing here imports a capability package (perception, sd, upscale) or ComfyUI at module level."""
