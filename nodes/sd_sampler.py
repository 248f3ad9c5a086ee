"""LCM Sampler: VK_PIPELINE + VK_CONDITIONING (+ VK_CONTROL, IMAGE, MASK) → IMAGE.

The work is in models/sd/sampler.py (and the scheduler choice in models/sd/schedulers.py).
"""
from __future__ import annotations

from ..models.sd.sampler import generate
from ..models.sd.sampler_settings import (
    MAX_BATCH,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    SamplerSettings,
)
from ..models.sd.schedulers import SCHEDULER_NAMES
from ..models.sd.types import CONDITIONING_TYPE, CONTROL_TYPE, PIPELINE_TYPE
from .common import CATEGORY


class VisionKitLCMSampler:
    DESCRIPTION = (
        "Generates images with a VisionKit pipeline: text-to-image, image-to-image (connect an IMAGE; denoise sets how "
        "much changes) or inpainting (IMAGE + MASK: white = repaint; an inpainting checkpoint uses its mask channels, "
        "a normal one keeps the unmasked region at every step). The LCM scheduler makes 4–8 steps enough with an "
        "LCM-LoRA (Load LoRA) or an LCM checkpoint; the pipeline's own scheduler is there for comparison. ControlNets "
        "from the control chain act between their start and end percent. LoRAs on the pipeline apply for this run "
        "only. The same seed gives the same image on CPU and GPU (noise is drawn on the CPU).")
    CATEGORY = f"{CATEGORY}/generation"
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = (("The generated images (batch = image batch × batch_size), for Save Image, Preview Image, "
                        "VisionKit Upscale ..."),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE_TYPE, {"tooltip": "From VisionKit Load Pipeline (after any Load LoRA nodes, e.g. "
                                                        "an LCM-LoRA)."}),
                "conditioning": (CONDITIONING_TYPE, {"tooltip": "From VisionKit Prompt Encode on the same pipeline."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "The noise seed. One seed for the whole batch; the noise is drawn on the "
                                            "CPU, so results do not depend on the device."}),
                "steps": ("INT", {"default": 4, "min": 1, "max": MAX_STEPS, "tooltip":
                                  "Denoising steps: 4–8 with LCM; 20–30 with the other schedulers. Image-to-image "
                                  "runs steps × denoise of them."}),
                "guidance": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                       "tooltip": "Classifier-free guidance (cfg). LCM: 1–2. At 1 or below the "
                                                  "negative prompt is not used and each step is one UNet pass "
                                                  "(fastest). LCM checkpoints with a guidance embedding use it instead "
                                                  "of a second pass."}),
                "scheduler": (list(SCHEDULER_NAMES), {"default": "lcm", "tooltip":
                              "lcm: Latent Consistency (needs an LCM-LoRA or LCM checkpoint). 'pipeline default': the "
                              "pipeline's own scheduler (SD1.5: PNDM, SDXL: Euler), e.g. to compare with 25 steps."}),
                "width": ("INT", {"default": 512, "min": MIN_SIZE, "max": MAX_SIZE, "step": 8, "tooltip":
                                  "Text-to-image width in pixels, a multiple of 8 (ignored when an IMAGE is connected: "
                                  "the image's size is used)."}),
                "height": ("INT", {"default": 512, "min": MIN_SIZE, "max": MAX_SIZE, "step": 8, "tooltip":
                                   "Text-to-image height in pixels, a multiple of 8 (ignored with an IMAGE)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip":
                                       "Images per prompt (per input image for image-to-image / inpainting)."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                      "Image-to-image / inpainting only: how much of the image is repainted (0 = "
                                      "nothing, 1 = all; diffusers' strength). Text-to-image always denoises fully."}),
            },
            "optional": {
                "control": (CONTROL_TYPE, {"tooltip": "ControlNets (VisionKit Apply ControlNet, chained)."}),
                "image": ("IMAGE", {"tooltip": "Start from this image (image-to-image) or inpaint it with a MASK. A "
                                               "size that is not a multiple of 8 is padded and cropped back."}),
                "mask": ("MASK", {"tooltip": "Inpainting: white (≥ 0.5) = repaint, black = keep. Needs an IMAGE; one "
                                             "mask for all images or one per image; resized to the image."}),
            },
        }

    # No VALIDATE_INPUTS: ComfyUI would attach its message to every input it names (and skip its own min/max
    # checks for them). seed, steps, guidance, width, height, batch_size and denoise are range-checked by ComfyUI
    # at /prompt from INPUT_TYPES, scheduler by its list. What ComfyUI cannot check (a width or height that is not
    # a multiple of 8, NaN, a size that cannot fit in memory) is refused when the node runs: generate() checks
    # every setting (check_settings) before it samples, with a message naming the one input that is wrong.

    def sample(self, pipeline, conditioning, seed=0, steps=4, guidance=1.0, scheduler="lcm", width=512, height=512,
               batch_size=1, denoise=1.0, control=None, image=None, mask=None):
        settings = SamplerSettings(steps=int(steps), guidance=float(guidance), seed=int(seed), scheduler=scheduler,
                                   denoise=float(denoise), width=int(width), height=int(height),
                                   batch_size=int(batch_size))
        return (generate(pipeline, conditioning, settings, control=control, image=image, mask=mask),)
