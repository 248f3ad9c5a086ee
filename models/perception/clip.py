"""CLIP (image + text towers): zero-shot classification and image–text similarity, through the shared cache.

What a file in `clip_models` may be:
- an open_clip checkpoint (.safetensors / .bin / .pt / .pth; the training `epoch_N.pt` layout and
  `module.` prefixes included). Its architecture is read from the tensors: ViT (width, layers, patch and
  image size, MLP ratio, layer scale, pre-LN), ModifiedResNet (RN50-style), text tower (width, layers,
  context length, projection) and the embed dim. Attention heads are not in the tensors: the text tower
  uses 64-wide heads (every open_clip CLIP does), the vision tower the head width of open_clip's shipped
  config of the same width (80 for ViT-H, 104 for bigG, …; 64 otherwise). An `open_clip_config.json`
  (what open_clip's hub repos ship: {"model_cfg", "preprocess_cfg"}) or `<file stem>.json` next to the
  file replaces the guesses. Models are built with open_clip's own classes; nothing touches a hub.
- a transformers CLIPModel folder (config.json + weights; tokenizer and preprocessor_config.json files
  are used when present), or a single .safetensors file with transformers key names (its CLIPConfig is
  inferred the same way).
The activation is not in the weights either: OpenAI-trained weights use QuickGELU, LAION-trained ones
GELU. `activation="auto"` takes it from the config when there is one, else from the file name ("openai"
or "quickgelu" → QuickGELU), else the library's default (open_clip: GELU; transformers: QuickGELU).

Tokenizer: open_clip checkpoints use open_clip's SimpleTokenizer (offline: the BPE file ships inside
open_clip). transformers models use their folder's tokenizer files, else a CLIPTokenizer built in
memory from that same BPE file (the ids equal open_clip's).

Preprocessing is done here on torch tensors, as the libraries do on PIL images: resize the shortest
side (bicubic, antialiased, 8-bit passes, as PIL) to the model's size, centre crop, normalise with the
model's mean/std. open_clip rounds the crop offset, transformers floors it; both are followed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core import host
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.weights import WeightsError, load_state_dict
from .clip_arch import (  # noqa: F401  (re-exported: clip is the CLIP API)
    _count,
    _has,
    _hf_heads,
    _map_hf_keys,
    _name_says_quickgelu,
    _norm,
    _ratio,
    _read_json,
    _shipped_open_clip_configs,
    _strip_prefixes,
    _torchscript_archive,
    _vision_head_width,
    classify_state_dict,
    describe_foreign,
    describe_open_clip,
    infer_hf_config,
    infer_open_clip_config,
    matching_open_clip_name,
    open_clip_sidecar,
)
from .clip_base import (  # noqa: F401  (re-exported: clip is the CLIP API)
    ACTIVATIONS,
    BPE_VOCAB,
    DTYPES,
    OPENAI_MEAN,
    OPENAI_STD,
    ClipInputError,
    ClipModelError,
    Preprocess,
    _bytes_to_unicode,
    _crop_or_pad,
    _hf_bpe_tokenizer,
    _hf_folder_tokenizer,
    _HFTokenizer,
    _OpenClipTokenizer,
    _resize_like_pil,
    _resized_shortest,
    bpe_path,
    bpe_vocab_and_merges,
    log,
    preprocess_images,
)


# ================================================================ the loaded model
class ClipModel:
    """A loaded CLIP model: the torch module, its tokenizer and preprocessing. Never changed by a run."""

    def __init__(self, family: str, module, tokenizer, preprocess: Preprocess, context_length: int,
                 description: str):
        self.family = family  # "open_clip" | "transformers"
        self.module = module
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.context_length = context_length
        self.description = description

    def vk_modules(self):
        return [self.module]

    def device_dtype(self):
        import torch

        for p in self.module.parameters():
            return p.device, p.dtype
        return torch.device("cpu"), torch.float32

    def tokenize(self, texts: list[str]):
        return self.tokenizer(list(texts))

    def logit_scale(self):
        return self.module.logit_scale.detach().float().exp()

    def logit_bias(self):
        b = getattr(self.module, "logit_bias", None)
        return None if b is None else b.detach().float()

    def encode_pixels(self, pixels):
        """Normalised float32 image embeddings of a preprocessed pixel tensor (B, 3, h, w)."""
        import torch

        device, dtype = self.device_dtype()
        with torch.inference_mode():
            x = pixels.to(device=device, dtype=dtype)
            if self.family == "open_clip":
                f = self.module.encode_image(x)
            else:
                out = self.module.vision_model(pixel_values=x, return_dict=True)
                f = self.module.visual_projection(out.pooler_output)
            f = f.float()
            return f / f.norm(dim=-1, keepdim=True)

    def encode_texts(self, texts: list[str]):
        """Normalised float32 text embeddings (N, D)."""
        import torch

        device, _dtype = self.device_dtype()
        ids, mask = self.tokenize(texts)
        with torch.inference_mode():
            ids = ids.to(device)
            if self.family == "open_clip":
                f = self.module.encode_text(ids)
            else:
                out = self.module.text_model(input_ids=ids, attention_mask=None if mask is None else mask.to(device),
                                             return_dict=True)
                f = self.module.text_projection(out.pooler_output)
            f = f.float()
            return f / f.norm(dim=-1, keepdim=True)


# ================================================================ builders
def _torch_dtype(spec_dtype: str, device):
    import torch

    if spec_dtype == "fp16" or (spec_dtype == "auto" and getattr(device, "type", str(device)) == "cuda"):
        return torch.float16
    return torch.float32


def _load_checked(module, sd: dict, name: str, what: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(sd, strict=False)
    except RuntimeError as ex:  # shape mismatches
        raise ClipModelError(f"{name}: the weights do not fit the {what} inferred from them "
                             f"({str(ex).splitlines()[-1].strip()[:300]}); put the model's config next to it "
                             "(open_clip_config.json) or report the file") from ex
    missing = [k for k in missing if not k.endswith(("position_ids", "attn_mask"))]
    unexpected = [k for k in unexpected if not k.endswith(("position_ids", "attn_mask", "input_resolution",
                                                           "context_length", "vocab_size"))]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
        raise ClipModelError(f"{name}: the weights do not fit the {what} inferred from them ({'; '.join(parts)}); "
                             "put the model's config next to it (open_clip_config.json) or report the file")


def _build_open_clip(sd: dict, path: str, activation: str, device, dtype):
    name = os.path.basename(path)
    side_cfg, side_pre = open_clip_sidecar(path)
    cfg = dict(side_cfg) if side_cfg else infer_open_clip_config(sd, name)
    if activation == "auto":
        quick = bool(cfg.get("quick_gelu")) if side_cfg else _name_says_quickgelu(path)
    else:
        quick = activation == "quick_gelu"
    cfg["quick_gelu"] = quick
    v = cfg.get("vision_cfg", {})
    t = cfg.get("text_cfg", {})
    if v.get("timm_model_name") or t.get("hf_model_name") or t.get("hf_tokenizer_name") or "multimodal_cfg" in cfg:
        raise ClipModelError(f"{name}: its config asks for timm / Hugging Face towers or tokenizers (SigLIP, CoCa, "
                             "multilingual …), which would need downloads; VisionKit's CLIP nodes run standard CLIP "
                             "models only")
    if int(t.get("vocab_size", BPE_VOCAB)) != BPE_VOCAB:
        raise ClipModelError(f"{name}: its config has a vocabulary of {t.get('vocab_size')} tokens, not CLIP's "
                             f"{BPE_VOCAB}; it needs another tokenizer, which VisionKit does not run")
    from open_clip.model import CLIP, CustomTextCLIP

    custom = bool(cfg.get("custom_text")) or "text.token_embedding.weight" in sd
    kwargs = {"embed_dim": int(cfg["embed_dim"]), "vision_cfg": dict(v), "text_cfg": dict(t), "quick_gelu": quick}
    if cfg.get("init_logit_bias") is not None or "logit_bias" in sd:
        kwargs["init_logit_bias"] = float(cfg.get("init_logit_bias") or 0.0)
    try:
        model = (CustomTextCLIP if custom else CLIP)(**kwargs)
    except Exception as ex:
        raise ClipModelError(f"{name}: open_clip could not build the architecture {describe_open_clip(cfg)} "
                             f"({str(ex)[:200]})") from ex
    if custom and "text.token_embedding.weight" not in sd:
        from open_clip.model import convert_to_custom_text_state_dict

        sd = convert_to_custom_text_state_dict(sd)
    elif not custom and "text.token_embedding.weight" in sd:
        raise ClipModelError(f"{name}: a custom-text open_clip checkpoint whose config says otherwise")
    _load_checked(model, sd, name, describe_open_clip(cfg))
    model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    image_size = v.get("image_size", 224)
    size = tuple(image_size) if isinstance(image_size, (list, tuple)) else (int(image_size), int(image_size))
    mode = side_pre.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash", "longest"):
        raise ClipModelError(f"{name}: resize_mode {mode!r} in its config is not shortest, squash or longest")
    mean = side_pre.get("mean") or OPENAI_MEAN
    std = side_pre.get("std") or OPENAI_STD
    mean = tuple(mean) if isinstance(mean, (list, tuple)) else (float(mean),) * 3
    std = tuple(std) if isinstance(std, (list, tuple)) else (float(std),) * 3
    pre = Preprocess(size=size, resize=min(size) if size[0] == size[1] else size, resize_mode=mode,
                     mean=tuple(map(float, mean)), std=tuple(map(float, std)),
                     interpolation="bilinear" if side_pre.get("interpolation") == "bilinear" else "bicubic",
                     crop_rounding="round")
    ctx = int(t.get("context_length", 77))
    return ClipModel("open_clip", model, _OpenClipTokenizer(ctx), pre, ctx, describe_open_clip(cfg))


# ---------------------------------------------------------------- transformers
def _hf_preprocess(folder: str | None, vision_cfg, name: str) -> Preprocess:
    image_size = int(vision_cfg.image_size)
    cfg = {}
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        cfg = _read_json(os.path.join(folder, "preprocessor_config.json"), name)
    crop = cfg.get("crop_size", image_size)
    if isinstance(crop, dict):
        crop_hw = (int(crop.get("height", image_size)), int(crop.get("width", image_size)))
    else:
        crop_hw = (int(crop), int(crop))
    do_crop = bool(cfg.get("do_center_crop", True))
    size = cfg.get("size", {"shortest_edge": image_size})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if "shortest_edge" in size:
        resize, mode = int(size["shortest_edge"]), "shortest"
    elif "height" in size and "width" in size:
        resize, mode = (int(size["height"]), int(size["width"])), "squash"
    else:
        resize, mode = image_size, "shortest"
    out_hw = crop_hw if do_crop else ((resize, resize) if isinstance(resize, int) else resize)
    if tuple(out_hw) != (image_size, image_size):
        raise ClipModelError(f"{name}: its preprocessor makes {out_hw[1]}x{out_hw[0]} images but the model takes "
                             f"{image_size}x{image_size}; fix preprocessor_config.json (crop_size)")
    resample = cfg.get("resample", 3)
    if resample not in (2, 3):
        log.warning("VisionKit: %s: resample=%s is approximated with bicubic", name, resample)
    return Preprocess(size=(image_size, image_size), resize=resize, resize_mode=mode,
                      mean=tuple(float(x) for x in cfg.get("image_mean", OPENAI_MEAN)),
                      std=tuple(float(x) for x in cfg.get("image_std", OPENAI_STD)),
                      interpolation="bilinear" if resample == 2 else "bicubic", crop_rounding="floor", crop=do_crop)


def _describe_hf(config, source: str) -> str:
    v, t = config.vision_config, config.text_config
    return (f"transformers CLIPModel {source}(ViT width {v.hidden_size} x{v.num_hidden_layers} patch {v.patch_size} "
            f"@{v.image_size}px; text width {t.hidden_size} x{t.num_hidden_layers}, context "
            f"{t.max_position_embeddings}; embed {config.projection_dim}; {t.hidden_act})")


def _build_hf_folder(folder: str, activation: str, device, dtype):
    name = os.path.basename(folder.rstrip(os.sep))
    cfg = _read_json(os.path.join(folder, "config.json"), name)
    mt = cfg.get("model_type", "")
    if mt != "clip":
        what = {
            "clip_vision_model": "a CLIP vision encoder without its text tower (it belongs in clip_vision, for "
                                 "IP-Adapter); zero-shot and ranking need the full CLIP model",
            "clip_text_model": "a CLIP text encoder only (for Stable Diffusion; ComfyUI keeps those in text_encoders); "
                               "zero-shot and ranking need the full CLIP model",
            "siglip": "a SigLIP model, which VisionKit's CLIP nodes do not run",
            "grounding-dino": "a Grounding DINO model: put it in grounding-dino",
        }.get(mt, f"a '{mt or 'unknown'}' model (config.json model_type), not a CLIPModel")
        if not mt and "_class_name" in cfg:
            what = f"a diffusers {cfg['_class_name']} folder, not a CLIPModel"
        raise ClipModelError(f"{name} is {what}. Put an open_clip checkpoint or a transformers CLIPModel folder "
                             "(config.json with model_type 'clip') into clip_models.")
    weights = [f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin")) and not f.startswith(".")
               and not f.startswith(("open_clip_", "training_args"))]
    if not weights:
        raise ClipModelError(f"{name}: the folder has config.json but no weights (model.safetensors or "
                             "pytorch_model.bin); download them into it")
    from transformers import CLIPConfig, CLIPModel

    try:
        config = CLIPConfig.from_pretrained(folder, local_files_only=True)
    except Exception as ex:
        raise ClipModelError(f"{name}: its config.json is not a CLIP config transformers can read ({_first_line(ex)})") \
            from ex
    if activation != "auto":
        config.text_config.hidden_act = activation
        config.vision_config.hidden_act = activation
    try:
        model, info = CLIPModel.from_pretrained(folder, config=config, local_files_only=True, dtype=dtype,
                                                output_loading_info=True)
    except Exception as ex:
        raise ClipModelError(f"{name}: transformers could not load its weights ({_first_line(ex)}); the download may "
                             "be incomplete: download the folder again") from ex
    bad = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    mism = info.get("mismatched_keys", [])
    if bad or mism:
        raise ClipModelError(f"{name}: its weights do not fit its config.json (missing {', '.join(map(str, bad[:5])) or '-'}; "
                             f"mismatched {', '.join(str(m[0] if isinstance(m, tuple) else m) for m in mism[:5]) or '-'}); "
                             "download the folder again")
    model.eval().requires_grad_(False).to(device=device)
    ctx = int(config.text_config.max_position_embeddings)
    tok = _hf_folder_tokenizer(folder, ctx) or _hf_bpe_tokenizer(ctx)
    return ClipModel("transformers", model, tok, _hf_preprocess(folder, config.vision_config, name), ctx,
                     _describe_hf(config, "folder "))


def _build_hf_file(sd: dict, path: str, activation: str, device, dtype):
    from transformers import CLIPConfig, CLIPModel

    name = os.path.basename(path)
    side = os.path.join(os.path.dirname(path), name.rsplit(".", 1)[0] + ".json")
    side_cfg = _read_json(side, name) if os.path.isfile(side) else None
    if side_cfg is not None and side_cfg.get("model_type") == "clip":
        config = CLIPConfig(**{k: v for k, v in side_cfg.items() if k not in ("architectures", "transformers_version")})
    else:
        config = CLIPConfig(**infer_hf_config(sd, name))
        if activation == "auto":  # transformers' own default (OpenAI's CLIP); LAION models need "gelu"
            activation = "quick_gelu"
    if activation != "auto":
        config.text_config.hidden_act = activation
        config.vision_config.hidden_act = activation
    model = CLIPModel(config)
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = _map_hf_keys(sd, keys)
    _load_checked(model, sd, name, _describe_hf(config, "file "))
    model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    ctx = int(config.text_config.max_position_embeddings)
    return ClipModel("transformers", model, _hf_bpe_tokenizer(ctx), _hf_preprocess(None, config.vision_config, name),
                     ctx, _describe_hf(config, "file "))


def _first_line(ex: BaseException) -> str:
    s = str(ex).strip().splitlines()
    return (s[0] if s else type(ex).__name__)[:200]


def _build(spec: ModelSpec, device) -> Loaded:
    path = spec.path
    activation = spec.option("activation", "auto")
    dtype = _torch_dtype(spec.dtype, device)
    name = os.path.basename(path.rstrip(os.sep))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ClipModelError(f"{name} is a folder without config.json; a transformers CLIPModel folder holds "
                                 "config.json and model.safetensors")
        cm = _build_hf_folder(path, activation, device, dtype)
    else:
        if _torchscript_archive(path):
            raise ClipModelError(f"{name} is a TorchScript archive (OpenAI's original ViT-*.pt / RN*.pt release), "
                                 "which VisionKit does not load (it can run code); use the same model as open_clip "
                                 "weights (.safetensors / open_clip_pytorch_model.bin) or a transformers folder")
        try:
            sd = load_state_dict(path)
        except WeightsError as ex:
            raise ClipModelError(str(ex)) from ex
        sd = _strip_prefixes(sd)
        try:
            family = classify_state_dict(sd)
        except ClipModelError as ex:
            raise ClipModelError(describe_foreign(sd, name)) from ex
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
        if family == "open_clip":
            cm = _build_open_clip(sd, path, activation, device, dtype)
        else:
            cm = _build_hf_file(sd, path, activation, device, dtype)
    return Loaded(cm, meta={"family": cm.family, "arch": cm.description})


def clip_spec(path: str, dtype: str = "auto", activation: str = "auto") -> ModelSpec:
    if dtype not in DTYPES:
        raise ClipModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if activation not in ACTIVATIONS:
        raise ClipModelError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    return ModelSpec(kind="clip", path=path, build=_build, dtype=dtype, options=(("activation", activation),))


def load_clip_model(path: str, dtype: str = "auto", activation: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry); a broken file fails here."""
    spec = clip_spec(path, dtype, activation)
    return spec, get_cache().load(spec)


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
