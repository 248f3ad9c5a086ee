"""Node registry: every VisionKit node class, its public ID and its display name.

IDs are public and stable (saved workflows refer to them): never rename one without an alias here.
"""
from __future__ import annotations

from .cache_info import VisionKitModelCacheInfo

# issue 20: captions, image similarity, segment everything, image labels
from .caption import VisionKitCaption, VisionKitCaptionLoader  # noqa: E402
from .clip import VisionKitCLIPLoader, VisionKitCLIPRankImages, VisionKitCLIPZeroShot
from .depth import VisionKitDepthEstimate, VisionKitDepthLoader  # issue 20
from .faces import (
                               VisionKitFaceAnalysisLoader,
                               VisionKitFaceDetect,
                               VisionKitFaceSimilarity,
)
from .grounded_sam import VisionKitGroundedSAM
from .grounding_dino import VisionKitGroundingDINODetect, VisionKitGroundingDINOLoader
from .image_similarity import (  # noqa: E402
                               VisionKitImageSimilarity,
                               VisionKitImageSimilarityLoader,
                               VisionKitRankSimilarImages,
)
from .instantid import VisionKitInstantIDApply, VisionKitInstantIDLoader
from .ip_adapter import VisionKitIPAdapterApply, VisionKitIPAdapterLoader
from .pose import VisionKitPoseEstimate, VisionKitPoseLoader  # issue 20
from .sam import VisionKitSAMLoader, VisionKitSAMSegment
from .sam_everything import VisionKitSAMSegmentEverything  # noqa: E402
from .sd_controlnet import (
                               VisionKitCannyEdges,
                               VisionKitControlNetApply,
                               VisionKitControlNetLoader,
)
from .sd_loaders import VisionKitPipelineLoader
from .sd_lora import VisionKitLoraLoader
from .sd_prompt import VisionKitPromptEncode
from .sd_sampler import VisionKitLCMSampler
from .upscale import VisionKitUpscale, VisionKitUpscaleModelLoader
from .vit_labels import VisionKitImageLabels, VisionKitImageLabelsLoader  # noqa: E402

_NODES = [
    # (class, display name)
    (VisionKitPipelineLoader, "Load Pipeline (SD1.5 / SDXL)"),
    (VisionKitUpscaleModelLoader, "Load Upscale Model"),
    (VisionKitUpscale, "Upscale Image"),
    (VisionKitSAMLoader, "Load SAM Model"),
    (VisionKitSAMSegment, "SAM Segment"),
    (VisionKitGroundingDINOLoader, "Load Grounding DINO Model"),
    (VisionKitGroundingDINODetect, "Grounding DINO Detect"),
    (VisionKitGroundedSAM, "Grounded SAM (Text to Mask)"),
    (VisionKitCLIPLoader, "Load CLIP Model"),
    (VisionKitCLIPZeroShot, "CLIP Zero-Shot Classify"),
    (VisionKitCLIPRankImages, "CLIP Rank Images"),
    (VisionKitPromptEncode, "Prompt Encode (CLIP)"),
    (VisionKitLoraLoader, "Load LoRA"),
    (VisionKitControlNetLoader, "Load ControlNet"),
    (VisionKitControlNetApply, "Apply ControlNet"),
    (VisionKitCannyEdges, "Canny Edges"),
    (VisionKitIPAdapterLoader, "Load IP-Adapter"),
    (VisionKitIPAdapterApply, "Apply IP-Adapter"),
    (VisionKitInstantIDLoader, "Load InstantID"),
    (VisionKitInstantIDApply, "Apply InstantID"),
    (VisionKitLCMSampler, "LCM Sampler"),
    (VisionKitFaceAnalysisLoader, "Load Face Analysis (InsightFace)"),
    (VisionKitFaceDetect, "Face Detect"),
    (VisionKitFaceSimilarity, "Face Similarity"),
    (VisionKitModelCacheInfo, "Model Cache Info"),
    # issue 20: captions, image similarity, segment everything, image labels
    (VisionKitCaptionLoader, "Load Caption Model (BLIP)"),
    (VisionKitCaption, "Caption Image (BLIP)"),
    (VisionKitImageSimilarityLoader, "Load Image Similarity Model (DINOv2)"),
    (VisionKitImageSimilarity, "Image Similarity (DINOv2)"),
    (VisionKitRankSimilarImages, "Rank Similar Images (DINOv2)"),
    (VisionKitSAMSegmentEverything, "SAM Segment Everything"),
    (VisionKitImageLabelsLoader, "Load Image Labels Model (ViT)"),
    (VisionKitImageLabels, "Image Labels (ViT)"),
    # issue 20: pose and depth
    (VisionKitPoseLoader, "Load Pose Model (ViTPose)"),
    (VisionKitPoseEstimate, "Pose From Photo (OpenPose)"),
    (VisionKitDepthLoader, "Load Depth Model"),
    (VisionKitDepthEstimate, "Depth Map"),
]

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: f"VisionKit {name}" if not name.startswith("VisionKit") else name
                              for cls, name in _NODES}

from ..models.core import identify as _identify  # noqa: E402

_identify.set_loader_names(NODE_DISPLAY_NAME_MAPPINGS)  # "wrong file" advice names each loader as the canvas does
