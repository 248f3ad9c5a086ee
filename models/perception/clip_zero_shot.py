"""CLIP zero-shot classification (images against labels) and ranking (images against one text).

Labels and templates are text, one per line; a label's text embedding is the mean over its prompt
templates (CLIP's prompt ensembling). Images go through the model in chunks, one full-size image at a time
through the resize. The model comes from the shared cache (clip_model.clip_spec); nothing here changes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core import host
from ..core.cache import ModelSpec, get_cache
from ..core.errors import VisionKitError
from .clip_inputs import preprocess_images
from .clip_model import ClipModel


class ClipInputError(VisionKitError):
    """Bad labels, templates or texts for a CLIP node; the message says how to fix them."""


# ================================================================ labels and templates
_SEPARATORS = ",;|"


def parse_lines(text: str, what: str = "labels") -> list[str]:
    """One entry per line; blank lines and lines of only separators (, ; |) dropped; separators at the ends
    of a line stripped ("cat," → "cat"); duplicates dropped (the first one kept)."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ClipInputError(f"{what} must be text (one per line), not {type(text).__name__}")
    out: dict[str, None] = {}
    for line in text.splitlines():
        s = line.strip().strip(_SEPARATORS + " \t").strip()
        if s:
            out.setdefault(s, None)
    return list(out)


def parse_labels(text: str) -> list[str]:
    labels = parse_lines(text, "labels")
    if not labels:
        raise ClipInputError("no labels were given: write the candidate texts one per line (e.g. 'cat', 'dog', "
                             "'a car'); blank lines and lines of only , ; | are ignored")
    return labels


def parse_templates(text: str) -> list[str]:
    """Prompt templates, one per line, each with {} where the label goes; none = the label as it is.
    Several templates are an ensemble: a label's text embedding is the mean over its templates."""
    templates = parse_lines(text, "template")
    for t in templates:
        if "{}" not in t:
            raise ClipInputError(f"template {t!r} has no {{}} where the label goes; write e.g. 'a photo of {{}}.' "
                                 "(one template per line), or leave it empty to use the labels as they are")
    return templates


def apply_templates(labels: list[str], templates: list[str]) -> list[list[str]]:
    """The prompts of each label (one per template; the label itself when there is no template)."""
    if not templates:
        return [[label] for label in labels]
    return [[t.replace("{}", label) for t in templates] for label in labels]


# ================================================================ inference
IMAGE_CHUNK_CPU = 8
IMAGE_CHUNK_CUDA = 64
TEXT_CHUNK = 256


def image_chunk(model: ClipModel) -> int:
    device, _ = model.device_dtype()
    return IMAGE_CHUNK_CUDA if device.type == "cuda" else IMAGE_CHUNK_CPU


def image_features(model: ClipModel, images, progress=None):
    """Normalised image embeddings (B, D) of an IMAGE batch, in chunks, with a progress bar (ComfyUI's on the
    node; `progress(done, total)` is called too when given)."""
    import torch

    from ..core.imageops import check_image

    images = check_image(images)
    device, dtype = model.device_dtype()
    n = images.shape[0]
    bar = host.Progress(n, progress)
    step = image_chunk(model)
    feats = []
    for i in range(0, n, step):
        host.throw_if_cancelled()
        # one image at a time through the resize (memory: one full-size image), then one network call
        px = torch.cat([preprocess_images(images[j:j + 1], model.preprocess, device=device, dtype=dtype)
                        for j in range(i, min(i + step, n))])
        feats.append(model.encode_pixels(px))
        bar.update(min(step, n - i))
    return torch.cat(feats)


def text_features(model: ClipModel, prompts: list[list[str]]):
    """Normalised text embeddings (L, D): per label the mean of its prompts' embeddings, renormalised."""
    import torch

    flat = [p for group in prompts for p in group]
    chunks = [model.encode_texts(flat[i:i + TEXT_CHUNK]) for i in range(0, len(flat), TEXT_CHUNK)]
    f = torch.cat(chunks)
    out, i = [], 0
    for group in prompts:
        g = f[i:i + len(group)].mean(dim=0)
        out.append(g / g.norm())
        i += len(group)
    return torch.stack(out)


@dataclass
class ZeroShotResult:
    labels: list[str]
    logits: object  # (B, L) float32
    probs: object  # (B, L)
    similarity: object  # (B, L) cosine similarity
    per_image: list = field(default_factory=list)  # [{"image", "best", "probability", "labels": [...]}]


def zero_shot(spec: ModelSpec, images, labels_text: str, template_text: str = "", progress=None) -> ZeroShotResult:
    """Zero-shot classification: for each image, the probability of each label (softmax over labels)."""
    import torch

    from ..core.imageops import check_image

    labels = parse_labels(labels_text)
    templates = parse_templates(template_text)
    images = check_image(images)
    with get_cache().use(spec) as model:
        tf = text_features(model, apply_templates(labels, templates))
        imf = image_features(model, images, progress)
        sim = imf @ tf.to(imf.device).T
        logits = model.logit_scale().to(sim.device) * sim
        bias = model.logit_bias()
        if bias is not None:
            logits = logits + bias.to(sim.device)
    probs = torch.softmax(logits, dim=-1)
    sim, logits, probs = sim.cpu(), logits.cpu(), probs.cpu()
    res = ZeroShotResult(labels, logits, probs, sim)
    for b in range(probs.shape[0]):
        order = sorted(range(len(labels)), key=lambda j: (-float(probs[b, j]), j))
        rows = [{"label": labels[j], "probability": float(probs[b, j]), "similarity": float(sim[b, j]),
                 "logit": float(logits[b, j])} for j in order]
        res.per_image.append({"image": b, "best": rows[0]["label"], "probability": rows[0]["probability"],
                              "labels": rows})
    return res


@dataclass
class RankResult:
    order: list[int]  # image indexes, best first
    similarity: object  # (B,) cosine similarity of each image to the text
    logits: object  # (B,)
    probs: object  # (B,) softmax over the images: "which image is the text about"
    rows: list = field(default_factory=list)


def rank_images(spec: ModelSpec, images, text: str, template_text: str = "", progress=None) -> RankResult:
    """Rank a batch of images against one text (its templates averaged), best match first (ties: lower index)."""
    import torch

    from ..core.imageops import check_image

    if not isinstance(text, str) or not text.strip():
        raise ClipInputError("the text to rank the images against is empty; describe what you look for, "
                             "e.g. 'a red car at night'")
    templates = parse_templates(template_text)
    images = check_image(images)
    prompt = " ".join(text.split())
    with get_cache().use(spec) as model:
        tf = text_features(model, apply_templates([prompt], templates))[0]
        imf = image_features(model, images, progress)
        sim = imf @ tf.to(imf.device)
        logits = model.logit_scale().to(sim.device) * sim
    probs = torch.softmax(logits, dim=0)
    sim, logits, probs = sim.cpu(), logits.cpu(), probs.cpu()
    order = sorted(range(sim.shape[0]), key=lambda i: (-float(sim[i]), i))
    rows = [{"rank": r, "index": i, "similarity": float(sim[i]), "probability": float(probs[i]),
             "logit": float(logits[i])} for r, i in enumerate(order)]
    return RankResult(order, sim, logits, probs, rows)
