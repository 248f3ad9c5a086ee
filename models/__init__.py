"""VisionKit's engines: plain Python and torch, no ComfyUI import at module level, so they run standalone too.

    core/        what every capability stands on: host, folders, cache (+ its ComfyUI bridge), weights, patching,
                 image ops, errors, identify ("what is this file"), the model catalogue
    perception/  seeing: SAM, boxes, Grounding DINO, CLIP zero-shot, faces, pose, depth, edges, captions, similarity
    sd/          generating on SD1.5 / SDXL: pipeline, prompt, LCM sampler, LoRA, ControlNet, IP-Adapter, InstantID
    upscale/     upscale models through spandrel and the tile engine

core imports no capability; capabilities meet only at the seams tests/test_layers.py declares; nodes/ (the
ComfyUI classes) import engines, never the other way round.
"""
