"""A CLIP model (image + text towers) built from a file or folder in `clip_models`, through the shared cache.

What a file in `clip_models` may be (clip_files.py reads the architecture from it):
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
memory from that same BPE file (the ids equal open_clip's). Images are preprocessed on torch tensors as
the libraries do on PIL images (clip_inputs.py); this module picks the model's size, mean/std and crop.
"""
from __future__ import annotations

import logging
import os

from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.weights import WeightsError, load_state_dict
from .clip_files import (
    classify_state_dict,
    describe_foreign,
    describe_open_clip,
    infer_hf_config,
    infer_open_clip_config,
    is_torchscript_archive,
    map_hf_keys,
    name_says_quickgelu,
    open_clip_sidecar,
    read_json,
    strip_prefixes,
)
from .clip_inputs import (
    BPE_VOCAB,
    OPENAI_MEAN,
    OPENAI_STD,
    ClipModelError,
    OpenClipTokenizer,
    Preprocess,
    hf_bpe_tokenizer,
    hf_folder_tokenizer,
)
from .hf_folder import first_line

CLIP_MODEL_TYPE = "VK_CLIP_MODEL"  # the ComfyUI socket type of a loaded CLIP model

log = logging.getLogger("visionkit")

ACTIVATIONS = ("auto", "gelu", "quick_gelu")
DTYPES = ("auto", "fp32", "fp16")


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
        quick = bool(cfg.get("quick_gelu")) if side_cfg else name_says_quickgelu(path)
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
    return ClipModel("open_clip", model, OpenClipTokenizer(ctx), pre, ctx, describe_open_clip(cfg))


# ---------------------------------------------------------------- transformers
def _hf_preprocess(folder: str | None, vision_cfg, name: str) -> Preprocess:
    image_size = int(vision_cfg.image_size)
    cfg = {}
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        cfg = read_json(os.path.join(folder, "preprocessor_config.json"), name)
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
    cfg = read_json(os.path.join(folder, "config.json"), name)
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
        raise ClipModelError(f"{name}: its config.json is not a CLIP config transformers can read ({first_line(ex)})") \
            from ex
    if activation != "auto":
        config.text_config.hidden_act = activation
        config.vision_config.hidden_act = activation
    try:
        model, info = CLIPModel.from_pretrained(folder, config=config, local_files_only=True, dtype=dtype,
                                                output_loading_info=True)
    except Exception as ex:
        raise ClipModelError(f"{name}: transformers could not load its weights ({first_line(ex)}); the download may "
                             "be incomplete: download the folder again") from ex
    bad = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    mism = info.get("mismatched_keys", [])
    if bad or mism:
        raise ClipModelError(f"{name}: its weights do not fit its config.json (missing {', '.join(map(str, bad[:5])) or '-'}; "
                             f"mismatched {', '.join(str(m[0] if isinstance(m, tuple) else m) for m in mism[:5]) or '-'}); "
                             "download the folder again")
    model.eval().requires_grad_(False).to(device=device)
    ctx = int(config.text_config.max_position_embeddings)
    tok = hf_folder_tokenizer(folder, ctx) or hf_bpe_tokenizer(ctx)
    return ClipModel("transformers", model, tok, _hf_preprocess(folder, config.vision_config, name), ctx,
                     _describe_hf(config, "folder "))


def _build_hf_file(sd: dict, path: str, activation: str, device, dtype):
    from transformers import CLIPConfig, CLIPModel

    name = os.path.basename(path)
    side = os.path.join(os.path.dirname(path), name.rsplit(".", 1)[0] + ".json")
    side_cfg = read_json(side, name) if os.path.isfile(side) else None
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
    sd = map_hf_keys(sd, keys)
    _load_checked(model, sd, name, _describe_hf(config, "file "))
    model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    ctx = int(config.text_config.max_position_embeddings)
    return ClipModel("transformers", model, hf_bpe_tokenizer(ctx), _hf_preprocess(None, config.vision_config, name),
                     ctx, _describe_hf(config, "file "))


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
        if is_torchscript_archive(path):
            raise ClipModelError(f"{name} is a TorchScript archive (OpenAI's original ViT-*.pt / RN*.pt release), "
                                 "which VisionKit does not load (it can run code); use the same model as open_clip "
                                 "weights (.safetensors / open_clip_pytorch_model.bin) or a transformers folder")
        try:
            sd = load_state_dict(path)
        except WeightsError as ex:
            raise ClipModelError(str(ex)) from ex
        sd = strip_prefixes(sd)
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
