"""Issue 20's perception nodes vs the bare library call on the same cached model and input: BLIP captions vs
`model.generate`, DINOv2 similarity vs `Dinov2Model` + cosine, ViT labels vs the classifier + softmax, and SAM
Segment Everything vs `SamAutomaticMaskGenerator.generate` (goal: not slower; ≤ 1.05× allows for the noise of one
run on a shared machine).

    .venv/bin/python bench/vision_bench.py [--quick|--smoke] [--device cuda]

Real-size architectures with random (seeded) weights, built from config objects here, saved in the real folder
layout and read by the pack's own loaders (nothing is downloaded): BLIP base (ViT-B/16 at 384 px, BERT-base
decoder; its vocabulary is the tests' tiny BERT vocabulary, 105 tokens instead of 30524, since no tokenizer files
are fetched), DINOv2 base (ViT-B/14, 224 px crop), ViT-B/16 with 1000 labels, SAM vit_b. The library side calls
the same model object the pack cached (so both run the same weights in the same memory), with the same processor
settings; each side runs N times interleaved, the minimum counts. --smoke uses the tests' tiny models.
"""
from __future__ import annotations

import sys

import harness
import measure
from harness import Row, fresh_cache, goal_row, register

SAM_VIT_B = (768, 12, 12, (2, 5, 8, 11))
SAM_TINY = (32, 2, 2, (1,))


def _image(h: int, w: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round().div(255).permute(0, 2, 3, 1).contiguous()


def _write_real_size(root, ctx) -> dict:
    """BLIP base, DINOv2 base and ViT-B/16 folders with random weights (real-size configs) under root."""
    import torch
    from transformers import (
        BertTokenizer,
        BitImageProcessor,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        Dinov2Config,
        Dinov2Model,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    tiny_blip = ctx.tiny_models() / "blip" / "tiny-blip"
    tok = BertTokenizer.from_pretrained(str(tiny_blip), local_files_only=True)
    torch.manual_seed(0)
    blip = BlipForConditionalGeneration(BlipConfig(text_config={"vocab_size": len(tok), "bos_token_id": len(tok) - 1,
                                                                "sep_token_id": 102, "pad_token_id": 0})).eval()
    d = root / "blip" / "blip-base-random"
    blip.save_pretrained(str(d))
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tok).save_pretrained(str(d))
    del blip
    torch.manual_seed(1)
    dino = Dinov2Model(Dinov2Config(patch_size=14, image_size=518)).eval()
    d = root / "dinov2" / "dinov2-base-random"
    dino.save_pretrained(str(d))
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(str(d))
    del dino
    torch.manual_seed(2)
    vit = ViTForImageClassification(ViTConfig(num_labels=1000)).eval()
    d = root / "vit" / "vit-base-random"
    vit.save_pretrained(str(d))
    ViTImageProcessor().save_pretrained(str(d))
    del vit
    return {"blip": "blip-base-random", "dinov2": "dinov2-base-random", "vit": "vit-base-random"}


@register("vision", "captions, image similarity, labels, segment everything: node vs bare library call")
def bench(ctx) -> list[Row]:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    pack = harness.import_pack()
    N = pack.NODE_CLASS_MAPPINGS
    rounds = ctx.pick(3, 2, 1)
    if ctx.smoke:
        root = ctx.tiny_models()
        names = {"blip": "tiny-blip", "dinov2": "tiny-dinov2", "vit": "tiny-vit"}
        size_note = "tiny test models (numbers mean nothing)"
    else:
        root = ctx.tmp / "vision-models"
        ctx.log("writing real-size BLIP base, DINOv2 base, ViT-B/16 folders (random weights)")
        names = _write_real_size(root, ctx)
        size_note = "real-size architectures, random weights"
    img = _image(*ctx.pick((480, 640), (480, 640), (48, 64)))
    rows = []
    with harness.env(VISIONKIT_MODELS_DIR=root), fresh_cache() as cache:
        rows.append(_caption_row(ctx, N, cache, names["blip"], img, rounds, size_note))
        rows.append(_similarity_row(ctx, N, cache, names["dinov2"], img, rounds, size_note))
        rows.append(_labels_row(ctx, N, cache, names["vit"], img, rounds, size_note))
    rows.append(_everything_row(ctx, N, rounds))
    return rows


def _pil(img):
    from PIL import Image

    return Image.fromarray((img[0].numpy() * 255).round().astype("uint8"))


def _caption_row(ctx, N, cache, name, img, rounds, size_note) -> Row:
    import torch

    (spec,) = N["VisionKitCaptionLoader"]().load(name, "auto")
    node = N["VisionKitCaption"]()
    tokens, beams = ctx.pick(20, 12, 5), 3
    with cache.use(spec) as b:
        dev, dt = b.device_dtype()

        def library():
            inputs = b.processor(images=_pil(img), return_tensors="pt").to(dev)
            inputs["pixel_values"] = inputs["pixel_values"].to(dt)
            with torch.inference_mode():
                ids = b.model.generate(**inputs, max_new_tokens=tokens, num_beams=beams, do_sample=False)
            return b.processor.decode(ids[0], skip_special_tokens=True)

        times, outs = measure.interleaved({"library": library,
                                           "node": lambda: node.caption(spec, img, "", tokens, beams)},
                                          rounds, ctx.sync)
    same = outs["node"]["result"][0] == outs["library"].strip()
    lib, nd = min(times["library"]), min(times["node"])
    return goal_row("Caption node vs BLIP generate (beam 3)", nd / lib, "<=", 1.05, "×",
                    f"node {nd:.2f} s, processor + generate + decode {lib:.2f} s, {tokens} new tokens, "
                    f"min of {rounds} interleaved; same caption: {same}; {size_note}", extra_ok=same)


def _similarity_row(ctx, N, cache, name, img, rounds, size_note) -> Row:
    import torch

    (spec,) = N["VisionKitImageSimilarityLoader"]().load(name, "auto")
    node = N["VisionKitImageSimilarity"]()
    other = _image(img.shape[1], img.shape[2], seed=1)
    with cache.use(spec) as b:
        dev, dt = b.device_dtype()

        def library():
            feats = []
            for x in (img, other):
                px = b.processor(images=_pil(x), return_tensors="pt")["pixel_values"].to(dev, dt)
                with torch.inference_mode():
                    feats.append(b.model(pixel_values=px).pooler_output[0].float())
            return float(torch.nn.functional.cosine_similarity(feats[0], feats[1], dim=0))

        times, outs = measure.interleaved({"library": library,
                                           "node": lambda: node.compare(spec, img, other, "cls", "mean")},
                                          rounds + 2, ctx.sync)
    same = abs(outs["node"]["result"][0] - outs["library"]) < 1e-4
    lib, nd = min(times["library"]), min(times["node"])
    return goal_row("Image Similarity node vs Dinov2Model + cosine", nd / lib, "<=", 1.05, "×",
                    f"node {nd * 1000:.0f} ms, library {lib * 1000:.0f} ms (two images), min of {rounds + 2} "
                    f"interleaved; same value: {same}; {size_note}", extra_ok=same)


def _labels_row(ctx, N, cache, name, img, rounds, size_note) -> Row:
    import torch

    (spec,) = N["VisionKitImageLabelsLoader"]().load(name, "auto")
    node = N["VisionKitImageLabels"]()
    with cache.use(spec) as b:
        dev, dt = b.device_dtype()

        def library():
            px = b.processor(images=_pil(img), return_tensors="pt")["pixel_values"].to(dev, dt)
            with torch.inference_mode():
                probs = b.model(pixel_values=px).logits[0].float().softmax(-1)
            top = probs.topk(5)
            return [b.model.config.id2label[int(i)] for i in top.indices]

        times, outs = measure.interleaved({"library": library, "node": lambda: node.label(spec, img, 5)},
                                          rounds + 2, ctx.sync)
    import json

    same = [x["label"] for x in json.loads(outs["node"]["result"][2])[0]["labels"]] == outs["library"]
    lib, nd = min(times["library"]), min(times["node"])
    return goal_row("Image Labels node vs ViT classifier + softmax", nd / lib, "<=", 1.05, "×",
                    f"node {nd * 1000:.0f} ms, library {lib * 1000:.0f} ms, min of {rounds + 2} interleaved; "
                    f"same top 5: {same}; {size_note}", extra_ok=same)


def _everything_row(ctx, N, rounds) -> Row:
    import torch
    from sam_bench import write_weights
    from segment_anything import SamAutomaticMaskGenerator
    from visionkit_pack.models.perception.sam_everything import Settings

    dims = SAM_TINY if ctx.smoke else SAM_VIT_B
    root = ctx.tmp / "sam-everything"
    name = "sam_vit_b_random.pth"
    write_weights(root / "sams" / name, dims)
    pps = ctx.pick(8, 4, 2)
    settings = Settings(points_per_side=pps, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    img = _image(*ctx.pick((384, 512), (384, 512), (48, 64)))
    rgb = (img[0] * 255).round().to(torch.uint8).numpy()
    node = N["VisionKitSAMSegmentEverything"]()
    with harness.env(VISIONKIT_MODELS_DIR=root), fresh_cache() as cache:
        (spec,) = N["VisionKitSAMLoader"]().load(name)
        with cache.use(spec) as sam:
            def library():
                with torch.inference_mode():
                    return SamAutomaticMaskGenerator(sam, **settings.generator_kwargs()).generate(rgb)

            def run_node():
                return node.run(spec, img, pps, 0.0, 0.0)

            times, outs = measure.interleaved({"library": library, "node": run_node}, rounds, ctx.sync)
    n_lib, n_node = len(outs["library"]), outs["node"][3]
    lib, nd = min(times["library"]), min(times["node"])
    return goal_row("SAM Segment Everything node vs SamAutomaticMaskGenerator", nd / lib, "<=", 1.05, "×",
                    f"node {nd:.2f} s (incl. sorting, overlay, MASK batch), generate() {lib:.2f} s; {pps}×{pps} "
                    f"points, {n_node} masks (library {n_lib}); image {img.shape[2]}×{img.shape[1]}, "
                    f"{'tiny encoder' if ctx.smoke else 'vit_b'} random weights; min of {rounds} interleaved",
                    extra_ok=n_lib == n_node)


if __name__ == "__main__":
    sys.exit(harness.main_single("vision"))
