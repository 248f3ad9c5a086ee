"""Seeing: the engines that look at images. The modules of one capability share its name as a prefix
(`<capability>_<what the module holds>`); nothing here imports ComfyUI, nodes/ or another capability.

    sam                      Segment Anything: load a checkpoint (architecture from the weights), prompt → masks
    sam_everything           segment everything: segment-anything's automatic mask generator on the cached model
    boxes                    the VK_BOXES format and what nodes do with boxes (select, clamp, mask, draw)
    grounding_dino           Grounding DINO models: what a file or folder is, loading it into the cache
    grounding_dino_original  IDEA's original checkpoints: architecture from shapes, keys → transformers
    grounding_dino_detect    text prompt → boxes on a batch (the Detect node and Grounded SAM call it)
    clip_inputs              how texts and images become CLIP inputs: BPE tokenizers, preprocessing, ClipModelError
    clip_files               what a CLIP file is and the architecture it implies (open_clip / transformers)
    clip_model               the loaded CLIP model and its builders, through the cache (the loader node)
    clip_zero_shot           zero-shot labels and image ranking with a loaded CLIP model
    faces                    InsightFace face analysis: the face model value, Face, analyze, select, similarity
    faces_pack               an InsightFace pack folder: finding it, what each .onnx file is
    faces_networks           SCRFD detection, ArcFace alignment and embedding, gender/age on one image
    faces_draw               face preview and face mask pictures
    pose, pose_draw          ViTPose on person boxes → OpenPose skeletons for ControlNet openpose, and their drawing
    depth                    depth maps for ControlNet depth (Depth Anything V2, DPT)
    canny                    Canny edge maps for ControlNet
    caption                  BLIP captions
    image_similarity         DINOv2 whole-image similarity
    vit_labels               ViT image labels
    hf_folder                loading a transformers model folder offline (pose, depth, captions, similarity, labels)

"CLIP" is three things here, so no module is called just `clip`: what goes into the model (clip_inputs, which
the SD text encoders share), what a file holds (clip_files, whose `vision_head_width` the IP-Adapter encoder
uses), and the model and what it computes (clip_model, clip_zero_shot).
"""
