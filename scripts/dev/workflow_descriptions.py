"""The shipped workflows, one description each: a function that builds the graph (scripts/dev/workflow_graph.py)
with the catalogue's model files (models/core/catalog.py) and a note saying what it does and what it needs.
scripts/dev/build_workflows.py writes them out (the pack must be imported first: it does that)."""
from __future__ import annotations

from workflow_graph import Graph


def catalog_file(model_id: str) -> str:
    from visionkit_pack.models.core.catalog import CATALOG

    for m in CATALOG:
        if m.name == model_id:
            return m.file
    raise KeyError(f"{model_id!r} is not in models/core/catalog.py")


# ---------------------------------------------------------------- shared pieces
def models_line(*ids: str) -> str:
    from visionkit_pack.models.core.catalog import CATALOG
    from visionkit_pack.models.core.folders import FOLDERS

    by = {m.name: m for m in CATALOG}
    parts = []
    for i in ids:
        m = by[i]
        spec = FOLDERS[m.folder]
        where = f"models/{spec.folder}/" + (f"{spec.subdir}/" if spec.subdir else "")
        parts.append(f"• {m.file} → {where}" + ("  (non-commercial licence)" if m.non_commercial else ""))
    return "Models (README 'Models' table):\n" + "\n".join(parts)


def note_text(title: str, what: str, models: list[str], inputs: str = "", tips: str = "") -> str:
    text = f"{title}\n\n{what}\n\n{models_line(*models)}"
    if inputs:
        text += f"\n\nInput images: {inputs} (examples in the pack's workflows/inputs/; copy them to ComfyUI/input " \
                "or pick your own with the Load Image node)."
    if tips:
        text += f"\n\n{tips}"
    return text


def sd15_lcm(g: Graph, positive: str, negative: str = "", col: int = 0, band: int = 0):
    """Load Pipeline (SD1.5) → Load LoRA (LCM-LoRA) → Prompt Encode: (pipeline, conditioning)."""
    pipe = g.node("VisionKitPipelineLoader", model_name="checkpoints/" + catalog_file("sd15"), _col=col, _band=band)
    lcm = g.node("VisionKitLoraLoader", pipeline=pipe.out("pipeline"), lora_name=catalog_file("lcm-lora-sd15"),
                 strength_model=1.0, strength_clip=1.0, _title="Load LCM-LoRA", _col=col, _band=band)
    cond = g.node("VisionKitPromptEncode", pipeline=lcm.out("pipeline"), positive=positive, negative=negative,
                  _col=col + 1, _band=band)
    return lcm, cond


LCM_TIP = ("LCM: 4–8 steps, guidance 1–2 (at 1 the negative prompt is not used and each step is one UNet pass). "
           "Change the seed for another image.")


# ---------------------------------------------------------------- the workflows
def lcm_txt2img(g: Graph) -> None:
    g.note(note_text("LCM text to image + Real-ESRGAN x4",
                     "A 4-step image from a prompt with SD1.5 and the LCM-LoRA, then upscaled x4 by Real-ESRGAN "
                     "(512 → 2048 px) and saved.",
                     ["sd15", "lcm-lora-sd15", "realesrgan-x4plus"], tips=LCM_TIP))
    pipe, cond = sd15_lcm(g, "a lion resting in the savanna at sunset, golden light, detailed photo",
                          "blurry, low quality")
    img = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), seed=42, steps=4,
                 guidance=1.0, scheduler="lcm", width=512, height=512, batch_size=1, denoise=1.0, _col=2)
    g.node("PreviewImage", images=img.out(), _col=3)
    up_model = g.node("VisionKitUpscaleModelLoader", model_name=catalog_file("realesrgan-x4plus"), _col=2)
    up = g.node("VisionKitUpscale", upscale_model=up_model.out(), image=img.out(), outscale=0.0, tile_size=512,
                tile_pad=16, _col=3)
    g.node("SaveImage", images=up.out(), filename_prefix="visionkit_lcm_x4", _col=4)


def _controlnet(g: Graph, kind: str) -> None:
    if kind == "pose":
        g.note(note_text("ControlNet pose + LCM",
                         "Generates a person in the pose of an OpenPose skeleton image (coloured limbs on black), "
                         "with SD1.5, the OpenPose ControlNet and the LCM-LoRA in 4 steps.",
                         ["sd15", "lcm-lora-sd15", "controlnet-openpose-sd15"],
                         inputs="visionkit_pose.png (an OpenPose skeleton; any pose editor or OpenPose "
                                "preprocessor makes one)", tips=LCM_TIP))
        hint = g.node("LoadImage", image="visionkit_pose.png", _title="Pose skeleton", _col=0)
        cn_file, prompt, w, h = catalog_file("controlnet-openpose-sd15"), \
            "an astronaut waving, full body, studio photo", 384, 512
    else:
        g.note(note_text("ControlNet canny + LCM",
                         "Keeps the outlines of a picture and repaints everything else from the prompt: Canny "
                         "edges of the image steer SD1.5 through the canny ControlNet; LCM-LoRA, 4 steps.",
                         ["sd15", "lcm-lora-sd15", "controlnet-canny-sd15"], inputs="visionkit_house.png",
                         tips=LCM_TIP + " Lower the Canny thresholds for more edges."))
        photo = g.node("LoadImage", image="visionkit_house.png", _col=0)
        hint = g.node("VisionKitCannyEdges", image=photo.out("IMAGE"), low_threshold=100, high_threshold=200, _col=1)
        g.node("PreviewImage", images=hint.out(), _title="Edges", _col=2)
        cn_file, prompt, w, h = catalog_file("controlnet-canny-sd15"), \
            "a gingerbread house in a snowy forest, detailed photo", 768, 512
    pipe, cond = sd15_lcm(g, prompt, "blurry, low quality", col=0)
    cn = g.node("VisionKitControlNetLoader", controlnet_name=cn_file, _col=1)
    ctl = g.node("VisionKitControlNetApply", controlnet=cn.out(), image=hint.out(0), strength=1.0,
                 start_percent=0.0, end_percent=1.0, _col=2)
    img = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), control=ctl.out(), seed=7,
                 steps=4, guidance=1.0, scheduler="lcm", width=w, height=h, batch_size=1, denoise=1.0, _col=3)
    g.node("SaveImage", images=img.out(), filename_prefix=f"visionkit_controlnet_{kind}", _col=4)


def controlnet_pose(g: Graph) -> None:
    _controlnet(g, "pose")


def controlnet_canny(g: Graph) -> None:
    _controlnet(g, "canny")


def groundedsam_mask(g: Graph) -> None:
    g.note(note_text("Grounded SAM: text → boxes → mask",
                     "Grounding DINO finds what the prompt names (boxes, previewed), SAM cuts it out (mask "
                     "overlay, previewed); the mask is saved as a black-and-white image.",
                     ["grounding-dino-tiny-hf", "sam-b"], inputs="visionkit_lions.png",
                     tips="Several things at once: 'lion . tree'. Raise box_threshold when it finds too much. "
                          "The Grounded SAM node does both steps in one node."))
    img = g.node("LoadImage", image="visionkit_lions.png", _col=0)
    dino = g.node("VisionKitGroundingDINOLoader", model_name=catalog_file("grounding-dino-tiny-hf"), _col=0)
    det = g.node("VisionKitGroundingDINODetect", dino_model=dino.out(), image=img.out("IMAGE"), prompt="lion",
                 _col=1)
    g.node("PreviewImage", images=det.out("preview"), _title="Boxes", _col=2)
    sam = g.node("VisionKitSAMLoader", model_name=catalog_file("sam-b"), _col=1)
    seg = g.node("VisionKitSAMSegment", sam_model=sam.out(), image=img.out("IMAGE"), boxes=det.out("boxes"), _col=2)
    g.node("PreviewImage", images=seg.out("preview"), _title="Mask overlay", _col=3)
    m = g.node("MaskToImage", mask=seg.out("mask"), _col=3)
    g.node("SaveImage", images=m.out(), filename_prefix="visionkit_mask", _col=4)


def text_guided_edit(g: Graph) -> None:
    g.note(note_text("Text-guided edit: turn the left lion into a dog",
                     "Grounding DINO finds the lions and keeps the left-most box; SAM masks that lion (grown by "
                     "12 px); SD1.5 + LCM-LoRA repaints the mask from the prompt; the result is pasted into the "
                     "original through the mask, so nothing outside it changes.",
                     ["grounding-dino-tiny-hf", "sam-b", "sd15", "lcm-lora-sd15"], inputs="visionkit_lions.png",
                     tips="Edit another object: change the detection prompt and position (right-most, largest, "
                          "…) and the prompt of the new content. " + LCM_TIP))
    img = g.node("LoadImage", image="visionkit_lions.png", _col=0)
    dino = g.node("VisionKitGroundingDINOLoader", model_name=catalog_file("grounding-dino-tiny-hf"), _col=1)
    sam = g.node("VisionKitSAMLoader", model_name=catalog_file("sam-b"), _col=1)
    det = g.node("VisionKitGroundingDINODetect", dino_model=dino.out(), image=img.out("IMAGE"), prompt="lion",
                 position="left-most", _title="Find the left lion", _col=2)
    seg = g.node("VisionKitSAMSegment", sam_model=sam.out(), image=img.out("IMAGE"), boxes=det.out("boxes"),
                 dilation=12, feather=4, _col=3)
    g.node("PreviewImage", images=seg.out("preview"), _title="Mask", _col=4)
    pipe, cond = sd15_lcm(g, "a dog sitting in the savanna, detailed photo", "", col=2, band=1)
    gen = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), image=img.out("IMAGE"),
                 mask=seg.out("mask"), seed=3, steps=6, guidance=1.0, scheduler="lcm", width=512, height=512,
                 batch_size=1, denoise=1.0, _col=4, _band=1)
    paste = g.node("ImageCompositeMasked", destination=img.out("IMAGE"), source=gen.out(), mask=seg.out("mask"),
                   x=0, y=0, resize_source=False, _title="Paste into the original", _col=5, _band=1)
    g.node("SaveImage", images=paste.out(), filename_prefix="visionkit_edit", _col=6, _band=1)


def upscale(g: Graph) -> None:
    g.note(note_text("Real-ESRGAN x4 upscale",
                     "Upscales an image x4 in 256 px tiles (each tile reads 16 px of context, so there are no "
                     "seams) and saves it.",
                     ["realesrgan-x4plus"], inputs="visionkit_house.png",
                     tips="outscale resizes the result to any factor (e.g. 2); a bigger tile is faster and "
                          "needs more memory, 0 = the whole image at once."))
    img = g.node("LoadImage", image="visionkit_house.png", _col=0)
    model = g.node("VisionKitUpscaleModelLoader", model_name=catalog_file("realesrgan-x4plus"), _col=1)
    up = g.node("VisionKitUpscale", upscale_model=model.out(), image=img.out("IMAGE"), outscale=0.0,
                tile_size=256, tile_pad=16, _col=2)
    g.node("SaveImage", images=up.out(), filename_prefix="visionkit_x4", _col=3)


def clip_zero_shot(g: Graph) -> None:
    g.note(note_text("CLIP zero-shot: which text fits the image",
                     "CLIP ranks the candidate texts (one per line) for the image; the table with each text's "
                     "probability shows on the node.",
                     ["clip-b32"], inputs="visionkit_lions.png",
                     tips="The template wraps every text ('a photo of {}.'); several template lines are averaged."))
    img = g.node("LoadImage", image="visionkit_lions.png", _col=0)
    clip = g.node("VisionKitCLIPLoader", model_name=catalog_file("clip-b32"), _col=1)
    g.node("VisionKitCLIPZeroShot", clip_model=clip.out(), image=img.out("IMAGE"),
           labels="two lions\na dog\na house\na person\na bowl of fruit", template="a photo of {}.", show_top=5,
           _size=[420, 420], _col=2)


def ipadapter_style_transfer(g: Graph) -> None:
    g.note(note_text("IP-Adapter style transfer",
                     "Carries the style of a reference image (colours, brush, texture) onto a new prompt: "
                     "IP-Adapter in InstantStyle's 'style only' mode feeds the reference to the style layers of "
                     "SD1.5, the prompt decides the content; LCM-LoRA, 4 steps.",
                     ["sd15", "lcm-lora-sd15", "ipadapter-sd15", "clip-vision-h"], inputs="visionkit_style.png",
                     tips="weight sets how strongly the style shows (0.5–1); 'standard' mode also copies the "
                          "reference's content. " + LCM_TIP))
    ref = g.node("LoadImage", image="visionkit_style.png", _title="Style reference", _col=0)
    ipa = g.node("VisionKitIPAdapterLoader", ipadapter_name=catalog_file("ipadapter-sd15"),
                 clip_vision_name=catalog_file("clip-vision-h"), _col=1)
    style = g.node("VisionKitIPAdapterApply", ipadapter=ipa.out(), image=ref.out("IMAGE"), weight=0.8,
                   start_percent=0.0, end_percent=1.0, mode="style only", combine="average", _col=2)
    pipe, cond = sd15_lcm(g, "a cat sitting on a windowsill", "blurry, low quality", col=1, band=1)
    img = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), control=style.out(), seed=11,
                 steps=4, guidance=1.0, scheduler="lcm", width=512, height=512, batch_size=1, denoise=1.0,
                 _col=3, _band=1)
    g.node("SaveImage", images=img.out(), filename_prefix="visionkit_style", _col=4, _band=1)


def instantid_portrait(g: Graph) -> None:
    g.note(note_text("InstantID portrait",
                     "An identity-preserving portrait from one face photo: InsightFace finds the face and its "
                     "identity embedding, InstantID feeds it to SDXL (image tokens + IdentityNet on the face's "
                     "keypoints); LCM-LoRA SDXL, 6 steps. Face Similarity reads out how alike the photo's face and "
                     "the result's face are (ArcFace cosine, 1 = same).",
                     ["sdxl", "lcm-lora-sdxl", "instantid", "instantid-controlnet", "antelopev2"],
                     inputs="visionkit_face.png (a drawing; use a clear, front-facing photo)",
                     tips="InsightFace's antelopev2 and InstantID are for non-commercial research only. More "
                          "likeness: raise ip_weight / controlnet_strength; more freedom: lower them. A pose image "
                          "(pose_image input) takes the keypoints from another face."))
    face = g.node("LoadImage", image="visionkit_face.png", _title="Face photo", _col=0)
    fa = g.node("VisionKitFaceAnalysisLoader", pack_name=catalog_file("antelopev2"), provider="auto", det_size=640,
                det_thresh=0.5, _col=1)
    iid = g.node("VisionKitInstantIDLoader", instantid_name=catalog_file("instantid"),
                 controlnet_name=catalog_file("instantid-controlnet"), _col=1)
    apply = g.node("VisionKitInstantIDApply", instantid=iid.out(), face_model=fa.out(), face_image=face.out("IMAGE"),
                   ip_weight=0.8, controlnet_strength=0.8, start_percent=0.0, end_percent=1.0, _col=2)
    g.node("PreviewImage", images=apply.out("keypoints"), _title="Face keypoints", _col=3)
    pipe = g.node("VisionKitPipelineLoader", model_name="checkpoints/" + catalog_file("sdxl"), _col=1, _band=1)
    lcm = g.node("VisionKitLoraLoader", pipeline=pipe.out(), lora_name=catalog_file("lcm-lora-sdxl"),
                 strength_model=1.0, strength_clip=1.0, _title="Load LCM-LoRA (SDXL)", _col=1, _band=1)
    cond = g.node("VisionKitPromptEncode", pipeline=lcm.out(), positive="portrait photo of a person as an astronaut, "
                  "studio light, detailed face", negative="blurry, deformed, low quality", _col=2, _band=1)
    img = g.node("VisionKitLCMSampler", pipeline=lcm.out(), conditioning=cond.out(), control=apply.out("control"),
                 seed=21, steps=6, guidance=1.5, scheduler="lcm", width=1024, height=1024, batch_size=1, denoise=1.0,
                 _col=3, _band=1)
    g.node("SaveImage", images=img.out(), filename_prefix="visionkit_instantid", _col=4, _band=1)
    g.node("VisionKitFaceSimilarity", face_model=fa.out(), image_a=face.out("IMAGE"), image_b=img.out(),
           selection="largest", combine="mean", if_no_face="score 0", index=0, _title="Face similarity (photo vs "
           "result)", _col=4)


def clothes_swap(g: Graph) -> None:
    g.note(note_text("Clothes swap",
                     "Grounded SAM masks the shirt ('shirt' → box → mask, grown by 8 px); SD1.5 + LCM-LoRA "
                     "repaints it from the prompt, and an IP-Adapter shows the garment to copy (only inside the "
                     "mask); the result is pasted into the original through the mask.",
                     ["grounding-dino-tiny-hf", "sam-b", "sd15", "lcm-lora-sd15", "ipadapter-sd15", "clip-vision-h"],
                     inputs="visionkit_person.png, visionkit_garment.png (the garment reference)",
                     tips="No reference: bypass 'Apply IP-Adapter' (select it, Ctrl+B); the prompt alone then "
                          "decides. Other clothes: change the Grounded SAM prompt ('trousers', 'jacket'). "
                          + LCM_TIP))
    person = g.node("LoadImage", image="visionkit_person.png", _title="Person", _col=0)
    dino = g.node("VisionKitGroundingDINOLoader", model_name=catalog_file("grounding-dino-tiny-hf"), _col=1)
    sam = g.node("VisionKitSAMLoader", model_name=catalog_file("sam-b"), _col=1)
    gsam = g.node("VisionKitGroundedSAM", image=person.out("IMAGE"), dino_model=dino.out(), sam_model=sam.out(),
                  prompt="shirt", position="largest", best_only=False, dilation=8, feather=4, _col=2)
    g.node("PreviewImage", images=gsam.out("preview"), _title="Shirt mask", _col=3)
    garment = g.node("LoadImage", image="visionkit_garment.png", _title="Garment reference", _col=2, _band=1)
    ipa = g.node("VisionKitIPAdapterLoader", ipadapter_name=catalog_file("ipadapter-sd15"),
                 clip_vision_name=catalog_file("clip-vision-h"), _col=2, _band=1)
    ref = g.node("VisionKitIPAdapterApply", ipadapter=ipa.out(), image=garment.out("IMAGE"), attn_mask=gsam.out("mask"),
                 weight=0.7, start_percent=0.0, end_percent=1.0, mode="standard", combine="average", _col=3, _band=1)
    pipe, cond = sd15_lcm(g, "a green and white striped shirt", "", col=0, band=2)
    gen = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), control=ref.out(),
                 image=person.out("IMAGE"), mask=gsam.out("mask"), seed=5, steps=6, guidance=1.0, scheduler="lcm",
                 width=512, height=512, batch_size=1, denoise=1.0, _col=4, _band=2)
    paste = g.node("ImageCompositeMasked", destination=person.out("IMAGE"), source=gen.out(), mask=gsam.out("mask"),
                   x=0, y=0, resize_source=False, _title="Paste into the original", _col=5, _band=2)
    g.node("SaveImage", images=paste.out(), filename_prefix="visionkit_clothes", _col=6, _band=2)


# ---------------------------------------------------------------- issue 20: captions, segment everything, similarity
def caption_img2img(g: Graph) -> None:
    g.note(note_text("Caption → prompt → LCM image-to-image",
                     "BLIP describes the photo in words (the caption shows on its node); that caption is the "
                     "prompt of an SD1.5 + LCM-LoRA image-to-image pass, which repaints the photo (denoise 0.6) "
                     "in the spirit of its own description.",
                     ["blip-base", "sd15", "lcm-lora-sd15"], inputs="visionkit_house.png",
                     tips="A prefix such as 'a watercolor painting of' steers the caption (BLIP continues it). "
                          "Lower denoise keeps more of the photo. " + LCM_TIP))
    photo = g.node("LoadImage", image="visionkit_house.png", _col=0)
    blip = g.node("VisionKitCaptionLoader", model_name=catalog_file("blip-base"), _col=0)
    cap = g.node("VisionKitCaption", caption_model=blip.out(), image=photo.out("IMAGE"), prefix="", max_tokens=30,
                 num_beams=3, _size=[360, 200], _col=1)
    pipe = g.node("VisionKitPipelineLoader", model_name="checkpoints/" + catalog_file("sd15"), _col=1, _band=1)
    lcm = g.node("VisionKitLoraLoader", pipeline=pipe.out("pipeline"), lora_name=catalog_file("lcm-lora-sd15"),
                 strength_model=1.0, strength_clip=1.0, _title="Load LCM-LoRA", _col=1, _band=1)
    cond = g.node("VisionKitPromptEncode", pipeline=lcm.out("pipeline"), positive=cap.out("caption"),
                  negative="blurry, low quality", _col=2, _band=1)
    img = g.node("VisionKitLCMSampler", pipeline=lcm.out(), conditioning=cond.out(), image=photo.out("IMAGE"),
                 seed=17, steps=4, guidance=1.0, scheduler="lcm", width=512, height=512, batch_size=1, denoise=0.6,
                 _col=3, _band=1)
    g.node("SaveImage", images=img.out(), filename_prefix="visionkit_caption_img2img", _col=4, _band=1)


def segment_everything(g: Graph) -> None:
    g.note(note_text("Segment everything (SAM masks preview)",
                     "SAM's automatic mask generator prompts the image with a 32×32 grid of points and keeps the "
                     "good, distinct masks: every mask comes out as a MASK batch sorted by area (largest first), "
                     "with a coloured overlay and the masks themselves previewed.",
                     ["sam-b"], inputs="visionkit_lions.png",
                     tips="Fewer, larger masks: raise pred_iou_thresh / stability_score_thresh or min_mask_region_area; "
                          "points_per_side 16 is 4× faster. max_masks keeps only the largest ones."))
    img = g.node("LoadImage", image="visionkit_lions.png", _col=0)
    sam = g.node("VisionKitSAMLoader", model_name=catalog_file("sam-b"), _col=0)
    seg = g.node("VisionKitSAMSegmentEverything", sam_model=sam.out(), image=img.out("IMAGE"), _col=1)
    g.node("PreviewImage", images=seg.out("preview"), _title="Masks in colours", _col=2)
    m = g.node("MaskToImage", mask=seg.out("masks"), _col=2)
    g.node("PreviewImage", images=m.out(), _title="Every mask, largest first", _col=3)


def most_similar_image(g: Graph) -> None:
    g.note(note_text("Most similar image (DINOv2 ranking)",
                     "DINOv2 embeds a reference picture and a batch of candidates; the candidates come out sorted "
                     "by cosine similarity to the reference (best first, ranking shown on the node), and Image "
                     "Similarity reads out how alike the reference and the best match are.",
                     ["dinov2-base"], inputs="visionkit_lions.png (reference), visionkit_candidates.png (the "
                                             "candidates: one PNG with two frames)",
                     tips="Load Image gives every frame of a multi-frame file (animated PNG / WebP / GIF, TIFF pages) "
                          "as one batch: put more candidates there, or feed any batch (generated images, a batch "
                          "loader). top_k keeps only the best ones."))
    ref = g.node("LoadImage", image="visionkit_lions.png", _title="Reference", _col=0)
    batch = g.node("LoadImage", image="visionkit_candidates.png", _title="Candidates (one frame each)", _col=0)
    dino = g.node("VisionKitImageSimilarityLoader", model_name=catalog_file("dinov2-base"), _col=1)
    rank = g.node("VisionKitRankSimilarImages", similarity_model=dino.out(), reference=ref.out("IMAGE"),
                  images=batch.out("IMAGE"), pooling="cls", top_k=0, _size=[360, 200], _col=2)
    g.node("PreviewImage", images=rank.out("sorted_images"), _title="Most similar first", _col=3)
    g.node("VisionKitImageSimilarity", similarity_model=dino.out(), image_a=ref.out("IMAGE"),
           image_b=rank.out("sorted_images"), pooling="cls", combine="max", _title="Best match similarity",
           _size=[360, 160], _col=3)


# ---------------------------------------------------------------- issue 20: pose and depth workflows
def pose_from_photo(g: Graph) -> None:
    g.note(note_text("Pose change from a person photo",
                     "Grounding DINO finds the people ('person' → boxes), ViTPose finds each one's body keypoints "
                     "and draws them as an OpenPose skeleton (previewed, with the keypoints as JSON); the skeleton "
                     "steers SD1.5 through the OpenPose ControlNet, LCM-LoRA, 4 steps: a new person in the photo's "
                     "pose.",
                     ["grounding-dino-tiny-hf", "vitpose-base", "sd15", "lcm-lora-sd15", "controlnet-openpose-sd15"],
                     inputs="visionkit_person.png (use a photo of people: the drawing only shows the steps)",
                     tips="No Grounding DINO: leave the Pose node's boxes input unconnected and the whole image is "
                          "one person. Raise threshold to drop unsure points. " + LCM_TIP))
    img = g.node("LoadImage", image="visionkit_person.png", _title="Person photo", _col=0)
    dino = g.node("VisionKitGroundingDINOLoader", model_name=catalog_file("grounding-dino-tiny-hf"), _col=0)
    det = g.node("VisionKitGroundingDINODetect", dino_model=dino.out(), image=img.out("IMAGE"), prompt="person",
                 _title="Find the people", _col=1)
    vp = g.node("VisionKitPoseLoader", model_name=catalog_file("vitpose-base"), _col=1)
    pose = g.node("VisionKitPoseEstimate", pose_model=vp.out(), image=img.out("IMAGE"), threshold=0.3,
                  boxes=det.out("boxes"), _col=2)
    g.node("PreviewImage", images=pose.out("preview"), _title="Pose over the photo", _col=3)
    pipe, cond = sd15_lcm(g, "an astronaut on the moon, full body, detailed photo", "blurry, low quality", col=1,
                          band=1)
    cn = g.node("VisionKitControlNetLoader", controlnet_name=catalog_file("controlnet-openpose-sd15"), _col=2, _band=1)
    ctl = g.node("VisionKitControlNetApply", controlnet=cn.out(), image=pose.out("pose_image"), strength=1.0,
                 start_percent=0.0, end_percent=1.0, _col=3, _band=1)
    out = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), control=ctl.out(), seed=9,
                 steps=4, guidance=1.0, scheduler="lcm", width=384, height=512, batch_size=1, denoise=1.0, _col=4,
                 _band=1)
    g.node("SaveImage", images=out.out(), filename_prefix="visionkit_pose_change", _col=5, _band=1)


def depth_restyle(g: Graph) -> None:
    g.note(note_text("Depth-guided restyle",
                     "Depth Anything V2 turns the picture into a depth map (near = bright, previewed); the depth "
                     "ControlNet keeps its layout while an IP-Adapter ('style only') takes colours and texture from "
                     "the style reference; SD1.5 + LCM-LoRA, 4 steps.",
                     ["depth-anything-v2-small", "sd15", "lcm-lora-sd15", "controlnet-depth-sd15", "ipadapter-sd15",
                      "clip-vision-h"],
                     inputs="visionkit_house.png (the layout), visionkit_style.png (the style reference)",
                     tips="Lower the ControlNet strength for freer shapes, raise the IP-Adapter weight for more "
                          "style. " + LCM_TIP))
    img = g.node("LoadImage", image="visionkit_house.png", _title="Picture (layout)", _col=0)
    dm = g.node("VisionKitDepthLoader", model_name=catalog_file("depth-anything-v2-small"), _col=0)
    depth = g.node("VisionKitDepthEstimate", depth_model=dm.out(), image=img.out("IMAGE"), resolution=0, _col=1)
    g.node("PreviewImage", images=depth.out("depth_image"), _title="Depth", _col=2)
    cn = g.node("VisionKitControlNetLoader", controlnet_name=catalog_file("controlnet-depth-sd15"), _col=1, _band=1)
    ctl = g.node("VisionKitControlNetApply", controlnet=cn.out(), image=depth.out("depth_image"), strength=1.0,
                 start_percent=0.0, end_percent=1.0, _col=2, _band=1)
    ref = g.node("LoadImage", image="visionkit_style.png", _title="Style reference", _col=0, _band=2)
    ipa = g.node("VisionKitIPAdapterLoader", ipadapter_name=catalog_file("ipadapter-sd15"),
                 clip_vision_name=catalog_file("clip-vision-h"), _col=1, _band=2)
    style = g.node("VisionKitIPAdapterApply", ipadapter=ipa.out(), image=ref.out("IMAGE"), control=ctl.out(),
                   weight=0.8, start_percent=0.0, end_percent=1.0, mode="style only", combine="average", _col=3,
                   _band=1)
    pipe, cond = sd15_lcm(g, "a cosy cottage, oil painting", "blurry, low quality", col=2, band=2)
    out = g.node("VisionKitLCMSampler", pipeline=pipe.out(), conditioning=cond.out(), control=style.out(), seed=13,
                 steps=4, guidance=1.0, scheduler="lcm", width=768, height=512, batch_size=1, denoise=1.0, _col=4,
                 _band=1)
    g.node("SaveImage", images=out.out(), filename_prefix="visionkit_depth_restyle", _col=5, _band=1)


ISSUE20_POSE_DEPTH_WORKFLOWS = (pose_from_photo, depth_restyle)
ISSUE20_WORKFLOWS = (caption_img2img, segment_everything, most_similar_image)

WORKFLOWS = {f.__name__: f for f in (lcm_txt2img, controlnet_pose, controlnet_canny, ipadapter_style_transfer,
                                      instantid_portrait, groundedsam_mask, text_guided_edit, clothes_swap, upscale,
                                      clip_zero_shot) + ISSUE20_WORKFLOWS
                                     + ISSUE20_POSE_DEPTH_WORKFLOWS}
