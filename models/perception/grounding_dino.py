"""Grounding DINO models (text → boxes, transformers' implementation): what a file or folder in `grounding-dino`
is, and loading it into the shared cache.

What a model in the `grounding-dino` folder can be (told apart by its contents, never by its name):

- a transformers folder: `config.json` (model_type "grounding-dino") + weights (safetensors) +
  tokenizer files (+ `preprocessor_config.json` / `processor_config.json`, else the defaults);
- an original IDEA checkpoint (`groundingdino_swint_ogc.pth`, `groundingdino_swinb_cogcoor.pth`, or
  the same weights as .safetensors): keys `backbone.0.*`, `transformer.*`, `bert.*`, `feat_map.*`,
  `input_proj.*`, `bbox_embed.*` (under "model"). The architecture (Swin-T, Swin-B or any other Swin,
  the transformer's sizes, the BERT text encoder's sizes) is read from the tensor shapes, and the
  weights are renamed onto `GroundingDinoForObjectDetection` by `convert_original_state_dict`. Their
  BERT tokenizer files (`vocab.txt` or `tokenizer.json`, optionally `tokenizer_config.json`) are read
  from the checkpoint's own folder (or a `bert-base-uncased/` folder beside it); none there → a clear
  error naming the folder and the files.

Two facts no shape tells, fixed to what every released checkpoint uses: 4 sampling points per
deformable attention head (the head count follows from the shapes then), and BERT heads of 64
channels (bert-base: 768 / 64 = 12 heads).

Detection (text → boxes) is grounding_dino_detect.py; the original checkpoints' layout is
grounding_dino_original.py.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

from ..core import identify
from ..core.cache import Loaded, ModelSpec, get_cache
from ..core.weights import (
    WeightsError,
    globals_in_error,
    load_state_dict,
    pickle_refusal,
)
from . import hf_folder
from .grounding_dino_original import (
    GroundingDinoError,
    convert_original_state_dict,
    inspect_original,
    is_original_layout,
    original_config,
)

DINO_MODEL_TYPE = "VK_DINO_MODEL"  # the ComfyUI socket type of a loaded Grounding DINO model

SPECIAL_TOKENS = {"[CLS]": 101, "[SEP]": 102, ".": 1012, "?": 1029}  # hard-coded in the model
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")  # one of them is needed
TOKENIZER_SUBDIRS = ("", "bert-base-uncased", "tokenizer")


# ================================================================ the loaded bundle
@dataclass
class DinoBundle:
    """What the cache holds for one Grounding DINO model: the network, its tokenizer and image processor."""

    model: object
    tokenizer: object
    image_processor: object
    info: dict = field(default_factory=dict)

    def vk_modules(self):
        return [self.model]


def describe_foreign(sd: dict, name: str) -> str:
    """Say what a state-dict that is not Grounding DINO probably is (people pick the wrong file)."""
    return (f"{name} is not a Grounding DINO model; it looks like {identify.what_is(sd, exclude='grounding_dino')}. Put "
            "groundingdino_swint_ogc.pth (with its BERT tokenizer files) or a transformers Grounding DINO folder in "
            "models/grounding-dino.")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as ex:
        raise GroundingDinoError(f"cannot read {path}: {ex}") from ex


def find_tokenizer_dir(checkpoint: str) -> str:
    """The folder with the BERT tokenizer files of an original checkpoint, or a clear error."""
    base = os.path.dirname(os.path.abspath(checkpoint))
    for sub in TOKENIZER_SUBDIRS:
        d = os.path.join(base, sub) if sub else base
        if any(os.path.isfile(os.path.join(d, f)) for f in TOKENIZER_FILES):
            return d
    raise GroundingDinoError(
        f"{os.path.basename(checkpoint)} needs its BERT tokenizer files (bert-base-uncased): vocab.txt or "
        f"tokenizer.json, and tokenizer_config.json, in {base} (beside the checkpoint, or in "
        f"{os.path.join(base, 'bert-base-uncased')}). None was found there; the model downloader fetches them "
        "with the checkpoint, or copy them from the bert-base-uncased model.")


def _check_tokenizer(tok, where: str, vocab_rows: int | None) -> None:
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(SPECIAL_TOKENS.values()):
        got = ", ".join(f"{t}={i}" for t, i in zip(SPECIAL_TOKENS, ids))
        raise GroundingDinoError(f"the tokenizer in {where} is not bert-base-uncased's: Grounding DINO needs "
                                 f"[CLS]=101, [SEP]=102, '.'=1012, '?'=1029, these files give {got}")
    if vocab_rows is not None and len(tok) > vocab_rows:
        raise GroundingDinoError(f"the tokenizer in {where} has {len(tok)} tokens but the model's text encoder "
                                 f"only {vocab_rows}; these tokenizer files belong to another model")


def _image_processor(folder: str | None):
    from transformers import GroundingDinoImageProcessor

    if folder and any(os.path.isfile(os.path.join(folder, f))
                      for f in ("preprocessor_config.json", "processor_config.json")):
        return GroundingDinoImageProcessor.from_pretrained(folder, local_files_only=True)
    return GroundingDinoImageProcessor()  # the defaults are the original's: 800 / 1333, ImageNet mean/std


def _no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


# ================================================================ loading
def _load_folder(path: str):
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise GroundingDinoError(f"{path} is a folder without config.json; a transformers Grounding DINO folder "
                                 "holds config.json, model.safetensors and the tokenizer files")
    cfg = _read_json(cfg_path)
    mt = cfg.get("model_type")
    if mt != "grounding-dino":
        what = {"bert": "a BERT text model (tokenizer files for original checkpoints go beside the .pth, not "
                        "as a model of their own)",
                "sam": "a SAM model: load it with 'VisionKit Load SAM Model'",
                "clip": "a CLIP model: load it with 'VisionKit CLIP Loader'"}.get(mt, f"a {mt!r} model")
        raise GroundingDinoError(f"{os.path.basename(path)} is not a Grounding DINO folder: its config.json says "
                                 f"model_type {mt!r}, {what}")
    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise GroundingDinoError(f"the Grounding DINO folder {path} has no tokenizer files: it needs vocab.txt or "
                                 "tokenizer.json (and tokenizer_config.json); copy them from the model's release")
    try:
        model = GroundingDinoForObjectDetection.from_pretrained(path, local_files_only=True)
    except OSError as ex:
        raise GroundingDinoError(f"cannot load the Grounding DINO weights in {path}: {str(ex).splitlines()[0][:300]}"
                                 ) from ex
    except Exception as ex:  # noqa: BLE001  (transformers' torch.load(weights_only=True) refusing a pickle)
        found = globals_in_error(str(ex))
        if found or type(ex).__name__ == "UnpicklingError":
            bins = [f for f in sorted(os.listdir(path)) if f.endswith((".bin", ".pth", ".pt", ".ckpt"))]
            raise GroundingDinoError(pickle_refusal(f"the Grounding DINO folder {os.path.basename(path)} "
                                                    f"({', '.join(bins) or 'its weights'})", found)) from ex
        raise
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    _check_tokenizer(tok, path, model.config.text_config.vocab_size)
    info = {"format": "transformers folder", "variant": _hf_variant(model.config)}
    return model, tok, _image_processor(path), info


def _hf_variant(config) -> str:
    bb = getattr(config, "backbone_config", None)
    if bb is None or getattr(bb, "model_type", "") != "swin":
        return getattr(bb, "model_type", "custom backbone")
    depths, embed = tuple(bb.depths), bb.embed_dim
    return {(96, (2, 2, 6, 2)): "Swin-T", (128, (2, 2, 18, 2)): "Swin-B"}.get(
        (embed, depths), f"Swin (embed {embed}, depths {list(depths)})")


def _load_original(path: str, sd: dict):
    from transformers import BertTokenizer, GroundingDinoForObjectDetection

    name = os.path.basename(path)
    arch = inspect_original(sd, name)
    tok_dir = find_tokenizer_dir(path)  # before the heavy part: a missing tokenizer fails fast
    config = original_config(arch)
    with _no_init():
        model = GroundingDinoForObjectDetection(config)
    target = model.state_dict()
    mapped = convert_original_state_dict(sd, target.keys(), name)
    bad = [k for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    if bad:
        raise GroundingDinoError(f"{name}: weights do not fit the detected {arch.describe()} (e.g. {bad[0]}: "
                                 f"{tuple(mapped[bad[0]].shape)} vs {tuple(target[bad[0]].shape)})")
    missing = [k for k in target if k not in mapped and not _may_be_missing(k, model)]
    if missing:
        raise GroundingDinoError(f"{name}: {len(missing)} weight(s) of the detected {arch.describe()} are not in "
                                 f"the file (e.g. {', '.join(missing[:4])}); it is incomplete or another variant")
    model.load_state_dict(mapped, strict=False)
    _fill_unloaded(model, set(mapped))
    try:
        tok = BertTokenizer.from_pretrained(tok_dir, local_files_only=True)
    except Exception as ex:
        raise GroundingDinoError(f"the BERT tokenizer files in {tok_dir} cannot be read ({str(ex)[:200]}); "
                                 "download vocab.txt / tokenizer_config.json again") from ex
    _check_tokenizer(tok, tok_dir, arch.text_vocab)
    info = {"format": "original checkpoint (converted)", "variant": arch.variant, "tokenizer": tok_dir}
    return model, tok, _image_processor(None), info


def _fill_unloaded(model, loaded: set) -> None:
    """Give the parameters the file does not have (e.g. Swin's unused final layer norm) defined values.

    The model is built without initialisation (fast), so they would otherwise hold whatever memory was
    there: a state-dict with garbage or NaN, different on every load.
    """
    import torch

    with torch.no_grad():
        for mod_name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False)
                   if f"{mod_name}.{n}".lstrip(".") not in loaded]
            if not own:
                continue
            if isinstance(module, torch.nn.LayerNorm):
                module.reset_parameters()  # ones and zeros: the identity
            else:
                for _, p in own:
                    p.zero_()


def _may_be_missing(key: str, model) -> bool:
    """Weights an original checkpoint does not have and the detector does not use (or gets by tying)."""
    if ".swin.layernorm." in key or key.endswith(("relative_position_index", "position_ids", "token_type_ids")):
        return True
    return key in _buffer_names(model)


def _buffer_names(model) -> set:
    names = getattr(model, "_vk_buffer_names", None)
    if names is None:
        names = {n for n, _ in model.named_buffers()}
        model._vk_buffer_names = names
    return names


def inspect_file(path: str) -> dict:
    """The state-dict of a Grounding DINO file in the original layout, or a clear error saying what it is."""
    name = os.path.basename(path)
    try:
        sd = load_state_dict(path)
    except WeightsError as ex:
        raise GroundingDinoError(str(ex)) from ex
    if not is_original_layout(sd):
        raise GroundingDinoError(describe_foreign(sd, name))
    return sd


def _build(spec: ModelSpec, device) -> Loaded:
    import torch  # noqa: F401  (transformers needs it; imported here so the pack import stays cheap)

    path = spec.path
    if os.path.isdir(path):
        model, tok, proc, info = _load_folder(path)
    else:
        model, tok, proc, info = _load_original(path, inspect_file(path))
    dtype = hf_folder.torch_dtype(spec.dtype, device)
    model.eval().requires_grad_(False)
    model.to(device=device, dtype=dtype)
    info = {**info, "dtype": str(dtype).replace("torch.", "")}
    return Loaded(DinoBundle(model, tok, proc, info), meta=info)


def dino_spec(path: str, dtype: str = "auto") -> ModelSpec:
    hf_folder.check_dtype(dtype, GroundingDinoError)
    return ModelSpec(kind="grounding_dino", path=os.path.abspath(path), build=_build, dtype=dtype)


def load_dino_model(path: str, dtype: str = "auto"):
    """Load (or find in the cache) and return (spec, cache entry)."""
    spec = dino_spec(path, dtype)
    return spec, get_cache().load(spec)


# ---------------------------------------------------------------- what a file is (core/identify.py)
def _describe_hf_weights(sd, keys) -> str | None:
    if identify.has_prefix(keys, "model.backbone.conv_encoder.", "model.text_backbone."):
        return ("the weights of a transformers-format Grounding DINO folder: keep the file inside its folder with "
                "config.json and the tokenizer files, and choose the folder in "
                f"'{identify.loader_name('VisionKitGroundingDINOLoader')}'")
    return None


def _what_file(sd, keys) -> str | None:
    if identify.has_prefix(keys, "transformer.encoder.", "backbone.", "module.transformer.", "module.backbone.") \
            or identify.contains(keys, "transformer.decoder"):
        return f"a detection model (Grounding DINO): {identify.goes('grounding_dino')}"
    return None


def _describe_bert(sd, keys) -> str | None:
    if identify.has_prefix(keys, "embeddings.word_embeddings", "bert.embeddings"):
        return "a BERT text encoder alone (Grounding DINO needs the whole detector)"
    return None


identify.register("grounding_dino_hf", _describe_hf_weights, order=90)
identify.register("grounding_dino", _what_file, order=95,
                  place=identify.Place("grounding-dino", "VisionKitGroundingDINOLoader"))
identify.register("grounding_dino", _describe_bert, order=125)
