"""Prompt Encode (CLIP): weighting grammar, chunking, clip skip, SD1.5/SDXL encoders, the node.

References: ComfyUI's own parser and tokenizer (read from the ComfyUI snapshot's comfy/sd1_clip.py, when
it is there), diffusers' encode_prompt on the same components, and the weighting formula computed by hand
with the same text encoder.
"""
from __future__ import annotations

import functools
import os
import types
from pathlib import Path

import pytest
import torch
from vk_testing import ROOT, import_pack, tiers

vk = import_pack()
from visionkit_pack.models.sd import prompt as sp
from visionkit_pack.models.sd import prompt_tokens as pt
from visionkit_pack.models.core.cache import ModelSpec
from visionkit_pack.models.sd.types import Components, GenerationError, LoraRef, PipelineHandle

BOS, EOS = 49406, 49407
COMFY = Path(os.environ.get("COMFYUI_DIR") or ROOT.parent / "shared" / "comfyui")


# ================================================================ tiny components
@functools.cache
def _tokenizer(pad: str | None = None):
    from transformers import CLIPTokenizer
    from visionkit_pack.models.perception.clip_inputs import bpe_vocab_and_merges

    vocab, merges = bpe_vocab_and_merges()
    kw = {"pad_token": pad} if pad else {}
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77, **kw)


def _text_model(hidden: int, layers: int, seed: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, vocab_size=49408, max_position_embeddings=77,
                         projection_dim=projection or hidden, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=1)
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()
    with torch.no_grad():  # random layer norms and biases, so a missing norm or bias shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


@functools.cache
def sd15() -> Components:
    return Components(arch="sd15", unet=None, vae=None, text_encoder=_text_model(32, 2, 1), tokenizer=_tokenizer())


@functools.cache
def sdxl() -> Components:
    # CLIP-L 32 wide with 2 layers; "bigG" 40 wide with 3 layers and a 24-wide projection
    return Components(arch="sdxl", unet=None, vae=None, text_encoder=_text_model(32, 2, 2), tokenizer=_tokenizer(),
                      text_encoder_2=_text_model(40, 3, 3, projection=24), tokenizer_2=_tokenizer("!"))


def ids_of(text: str, pad: int = EOS) -> list[int]:
    ids = [BOS] + list(_tokenizer()(text, add_special_tokens=False)["input_ids"]) + [EOS]
    return ids + [pad] * (77 - len(ids))


def run(te, ids):
    with torch.no_grad():
        return te(input_ids=torch.tensor([ids]), output_hidden_states=True)


def words(n: int, word: str = "cat") -> str:
    return " ".join([word] * n)


# ================================================================ ComfyUI's reference code (read, not copied)
def _random_paren_prompts():
    import random

    rng = random.Random(0)
    alphabet = ["a", "b", " ", "(", ")", ":", "1.2", "0.5", "\\(", "\\)", ",", "x"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 18))) for _ in range(400)]


@functools.lru_cache(maxsize=1)
def comfy_reference():
    """ComfyUI's own parser and SDTokenizer (the snapshot's comfy/sd1_clip.py, imported for real in a
    subprocess so nothing of ComfyUI enters this process): their answers for every prompt the tests use."""
    import json
    import subprocess
    import sys

    if not (COMFY / "comfy" / "sd1_clip.py").is_file():
        tiers.missing("T2", f"no ComfyUI snapshot at {COMFY} (ComfyUI's parser and tokenizer are the reference)")
    paren = PAREN_PROMPTS + _random_paren_prompts()
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(COMFY)!r})\n"
        "sys.argv = ['main.py', '--cpu']\n"
        "import comfy.options\n"
        "comfy.options.enable_args_parsing()\n"
        "import comfy.sd1_clip as c\n"
        "data = json.loads(sys.stdin.read())\n"
        "w = [[[c.unescape_important(t), x] for t, x in c.token_weights(c.escape_important(s), 1.0)] for s in data['paren']]\n"
        f"tok = c.SDTokenizer(tokenizer_path={str(COMFY / 'comfy' / 'sd1_tokenizer')!r})\n"
        "k = [[[[t, x] for t, x in chunk] for chunk in tok.tokenize_with_weights(s)] for s in data['chunks']]\n"
        "print('REF' + json.dumps({'weights': w, 'chunks': k}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps({"paren": paren, "chunks": CHUNK_PROMPTS}),
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("REF")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    ref = json.loads(lines[-1][3:])
    weights = {text: [(t, x) for t, x in r if t != ""] for text, r in zip(paren, ref["weights"])}
    chunks = {text: [[(t, x) for t, x in chunk] for chunk in r] for text, r in zip(CHUNK_PROMPTS, ref["chunks"])}
    return weights, chunks


def comfy_weights(text: str):
    return comfy_reference()[0][text]


# ================================================================ grammar
@pytest.mark.parametrize("text, expected", [
    ("a photo", [("a photo", 1.0)]),
    ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
    ("((b))", [("b", 1.1 * 1.1)]),
    ("(b:1.5)", [("b", 1.5)]),
    ("((b:1.5))", [("b", 1.5)]),  # an explicit weight replaces the inherited one (ComfyUI)
    ("(a (b:0.5) c:1.2)", [("a ", 1.2), ("b", 0.5), (" c", 1.2)]),
    ("(a (b) c:2)", [("a ", 2.0), ("b", 2.0 * 1.1), (" c", 2.0)]),
    ("[b]", [("b", 1 / 1.1)]),
    ("[[b]]", [("b", 1 / 1.1 / 1.1)]),
    ("([b])", [("b", 1.1 / 1.1)]),
    ("[(b:1.5)]", [("b", 1.5)]),
    ("[a (b) c]", [("a ", 1 / 1.1), ("b", 1 / 1.1 * 1.1), (" c", 1 / 1.1)]),
    ("[b:1.5]", [("b:1.5", 1 / 1.1)]),  # no weights and no prompt editing inside brackets
    (r"\(b\)", [("(b)", 1.0)]),
    (r"\[b\]", [("[b]", 1.0)]),
    (r"(a \(b\):1.2)", [("a (b)", 1.2)]),
    ("(a:b)", [("a:b", 1.1)]),
    ("(:1.2)", [(":1.2", 1.1)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:nan)", [("a:nan", 1.1)]),  # not a finite weight: text, at ×1.1 (ComfyUI would use NaN)
    ("a (b c", [("a ", 1.0), ("(b c", 1.0)]),  # never closed: literal
    ("a) (b)", [("a) (b)", 1.0)]),  # stray closer: the rest of the level is literal
    ("a) ((b))", [("a) (", 1.0), ("b", 1.1), (")", 1.0)]),
    ("(a]", [("(a]", 1.0)]),  # closed by the other kind: literal
    ("", []),
    ("()", []),
])
def test_parse_weights(text, expected):
    got = pt.parse_weights(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], abs=1e-12)


PAREN_PROMPTS = [
    "a photo of a (cat:1.3) on ((grass)), (blue sky:0.8)", "((a (b:0.5) c)) d", r"\(escaped\) (yes:1.2)",
    "(a:b) (c:1.2:1.3) (:2)", "a (b c", "a) (b)", "a) ((b)) (c", "((((deep))))", ")(", "(a) ) (b)",
    "(x:1e-1) (y: 2 )", "no weights at all", "", "(", ")", "(((a", "a)))", r"\\(a\\)", "(a (b (c:0.3) d) e)",
]


@pytest.mark.parametrize("text", PAREN_PROMPTS)
def test_parser_equals_comfyui_on_parentheses(text):
    got = pt.parse_weights(text)
    ref = comfy_weights(text)
    assert [t for t, _ in got] == [t for t, _ in ref]
    assert [w for _, w in got] == [w for _, w in ref]  # same arithmetic, same floats


def test_parser_equals_comfyui_on_random_parentheses():
    for text in _random_paren_prompts():
        got, ref = pt.parse_weights(text), comfy_weights(text)
        assert got == ref, text


# ================================================================ chunks
CHUNK_PROMPTS = [
    "a photo of a (cat:1.3)",
    words(150),
    words(76),
    words(75),
    words(72) + " (a b c d e:1.2) " + words(10, "dog"),  # a short piece that does not fit moves on
    words(70) + " (" + words(20, "dog") + ":0.7) " + words(100, "fish"),  # a long piece is split
    ("(" + words(30) + ") ") * 4 + "tail",
    "",
]


@pytest.mark.parametrize("text", CHUNK_PROMPTS)
def test_chunks_equal_comfyui_tokenizer(text):
    ref = comfy_reference()[1][text]
    got = pt.tokenize_chunks(_tokenizer(), text)
    assert [[t for t, _ in c] for c in got] == [[t for t, _ in c] for c in ref]
    assert [[w for _, w in c] for c in got] == [[w for _, w in c] for c in ref]


def test_chunk_layout():
    chunks = pt.tokenize_chunks(_tokenizer(), words(150))
    cat = _tokenizer()("cat", add_special_tokens=False)["input_ids"]
    assert len(cat) == 1
    assert len(chunks) == 2 and all(len(c) == 77 for c in chunks)
    for c in chunks:
        assert [t for t, _ in c] == [BOS] + cat * 75 + [EOS]
    short = pt.tokenize_chunks(_tokenizer(), words(72) + " (a b c d e:1.2)")
    assert [t for t, _ in short[0]] == [BOS] + cat * 72 + [EOS] + [EOS] * 3
    assert [w for _, w in short[1][1:6]] == [1.2] * 5 and short[1][6][0] == EOS
    pads = pt.tokenize_chunks(_tokenizer("!"), "a cat")
    assert [t for t, _ in pads[0]][-1] == 0  # SDXL's tokenizer_2 pads with "!"


# ================================================================ SD1.5 encoding
def test_unweighted_equals_diffusers_sd15():
    from diffusers import StableDiffusionPipeline

    c = sd15()
    pos, neg = "a photo of a cat on the grass, sunny", "blurry, low quality"
    cond = sp.encode_pair(c, pos, neg)
    fake = types.SimpleNamespace(text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=None)
    with torch.no_grad():
        ref_pos, ref_neg = StableDiffusionPipeline.encode_prompt(fake, pos, torch.device("cpu"), 1, True, neg)
    assert cond.prompt_embeds.shape == (1, 77, 32) and cond.prompt_embeds.dtype == torch.float32
    assert cond.prompt_embeds.device.type == "cpu"
    torch.testing.assert_close(cond.prompt_embeds, ref_pos, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.negative_prompt_embeds, ref_neg, atol=1e-5, rtol=0)
    assert cond.pooled is None and cond.add_time_ids == () and cond.arch == "sd15"


def test_clip_skip_sd15_equals_diffusers_and_penultimate_with_norm():
    from diffusers import StableDiffusionPipeline

    c = sd15()
    te = c.text_encoder
    text = "a photo of a cat"
    got, _ = sp.encode(c, text, stop_at_clip_layer=-2)
    out = run(te, ids_of(text))
    with torch.no_grad():
        direct = te.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(got, direct, atol=1e-6, rtol=0)
    assert (got - out.last_hidden_state).abs().max() > 1e-2  # a real difference from the last layer
    # diffusers' clip_skip=1 is ComfyUI's -2 (its code reaches text_encoder.text_model.final_layer_norm,
    # which transformers 5's CLIPTextModel no longer has: give it that path for the call)
    object.__setattr__(te, "text_model", types.SimpleNamespace(final_layer_norm=te.final_layer_norm))
    try:
        fake = types.SimpleNamespace(text_encoder=te, tokenizer=c.tokenizer, unet=None)
        with torch.no_grad():
            ref, _ = StableDiffusionPipeline.encode_prompt(fake, text, torch.device("cpu"), 1, False, clip_skip=1)
    finally:
        te.__dict__.pop("text_model", None)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    last, _ = sp.encode(c, text, stop_at_clip_layer=-1)
    default, _ = sp.encode(c, text)
    torch.testing.assert_close(last, out.last_hidden_state)
    torch.testing.assert_close(default, last)


def test_clip_layer_beyond_depth_is_an_error():
    with pytest.raises(GenerationError, match="only 2 layers"):
        sp.encode(sd15(), "a cat", stop_at_clip_layer=-3)
    with pytest.raises(GenerationError, match="outside"):
        sp.encode(sd15(), "a cat", stop_at_clip_layer=1)


def test_weighted_prompt_is_the_formula_by_hand():
    c = sd15()
    te = c.text_encoder
    text = "a photo of a (cat:1.5) on [grass], (sky)"
    got, _ = sp.encode(c, text)
    tok = lambda s: list(_tokenizer()(s, add_special_tokens=False)["input_ids"])
    pieces = [("a photo of a ", 1.0), ("cat", 1.5), (" on ", 1.0), ("grass", 1 / 1.1), (", ", 1.0), ("sky", 1.1)]
    ids, weights = [BOS], [1.0]
    for s, w in pieces:
        t = tok(s)
        ids += t
        weights += [w] * len(t)
    ids += [EOS] + [EOS] * (76 - len(ids))
    weights += [1.0] * (77 - len(weights))
    z = run(te, ids).last_hidden_state[0]
    z_empty = run(te, [BOS, EOS] + [EOS] * 75).last_hidden_state[0]
    expected = z.clone()
    for j, w in enumerate(weights):
        if w != 1.0:
            expected[j] = (z[j] - z_empty[j]) * w + z_empty[j]
    assert sum(w != 1.0 for w in weights) >= 3
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=0)
    plain, _ = sp.encode(c, "a photo of a cat on grass, sky")
    assert (got - plain).abs().max() > 1e-2  # the weights changed something


def test_long_prompt_chunks_are_encoded_separately():
    c = sd15()
    text = words(100) + " " + words(50, "dog")
    got, _ = sp.encode(c, text)
    assert got.shape == (1, 154, 32)
    chunks = pt.tokenize_chunks(c.tokenizer, text)
    for k, chunk in enumerate(chunks):
        direct = run(c.text_encoder, [t for t, _ in chunk]).last_hidden_state[0]
        torch.testing.assert_close(got[0, 77 * k:77 * (k + 1)], direct, atol=1e-5, rtol=0)


def test_very_long_weighted_prompt():
    c = sd15()
    text = ", ".join(f"({w}:1.2) {w}" for w in ["cat", "dog", "tree", "house", "river", "mountain"] * 25)
    got, _ = sp.encode(c, text)
    n = len(pt.tokenize_chunks(c.tokenizer, text))
    assert n >= 5 and got.shape == (1, 77 * n, 32)
    assert torch.isfinite(got).all()


def test_empty_prompt():
    c = sd15()
    got, pooled = sp.encode(c, "")
    empty = run(c.text_encoder, [BOS, EOS] + [EOS] * 75).last_hidden_state
    torch.testing.assert_close(got, empty, atol=1e-6, rtol=0)
    assert pooled is None
    cond = sp.encode_pair(c, "a cat", "")
    torch.testing.assert_close(cond.negative_prompt_embeds, empty, atol=1e-6, rtol=0)
    weighted_empty, _ = sp.encode(c, "(:1.3)")  # no text left, no tokens weighted
    assert weighted_empty.shape == (1, 77, 32)


# ================================================================ SDXL encoding
def test_unweighted_equals_diffusers_sdxl():
    from diffusers import StableDiffusionXLPipeline

    c = sdxl()
    pos, neg = "a photo of a cat on the grass", "blurry"
    cond = sp.encode_pair(c, pos, neg, size=sp.SizeCond(width=832, height=1216, crop_w=8, crop_h=16,
                                                        target_width=768, target_height=1024))
    fake = types.SimpleNamespace(text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2, tokenizer=c.tokenizer,
                                 tokenizer_2=c.tokenizer_2, unet=None,
                                 config=types.SimpleNamespace(force_zeros_for_empty_prompt=True))
    with torch.no_grad():
        ref = StableDiffusionXLPipeline.encode_prompt(fake, pos, device=torch.device("cpu"), negative_prompt=neg)
    ref_pos, ref_neg, ref_pooled, ref_neg_pooled = ref
    assert cond.prompt_embeds.shape == (1, 77, 72) and cond.pooled.shape == (1, 24)
    torch.testing.assert_close(cond.prompt_embeds, ref_pos, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.negative_prompt_embeds, ref_neg, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.pooled, ref_pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.negative_pooled, ref_neg_pooled, atol=1e-5, rtol=0)
    assert cond.add_time_ids == (1216, 832, 16, 8, 1024, 768) == cond.negative_add_time_ids


def test_clip_skip_sdxl():
    from diffusers import StableDiffusionXLPipeline

    c = sdxl()
    text = "a photo of a cat"
    out_l, out_g = run(c.text_encoder, ids_of(text)), run(c.text_encoder_2, ids_of(text, pad=0))
    for layer in (-1, -2):
        got, pooled = sp.encode(c, text, stop_at_clip_layer=layer)
        direct = torch.cat([out_l.hidden_states[layer], out_g.hidden_states[layer]], dim=-1)  # no final norm
        torch.testing.assert_close(got, direct, atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled, out_g.text_embeds, atol=1e-5, rtol=0)  # clip skip leaves it
    default, _ = sp.encode(c, text)
    torch.testing.assert_close(default, sp.encode(c, text, stop_at_clip_layer=-2)[0])
    # diffusers' SDXL clip_skip=k is -(k+2): with a 3-layer bigG and 2-layer CLIP-L that is past CLIP-L's depth
    with pytest.raises(GenerationError, match="CLIP-L text encoder has only 2 layers"):
        sp.encode(c, text, stop_at_clip_layer=-3)
    fake = types.SimpleNamespace(text_encoder=None, text_encoder_2=c.text_encoder_2, tokenizer=None,
                                 tokenizer_2=c.tokenizer_2, unet=None,
                                 config=types.SimpleNamespace(force_zeros_for_empty_prompt=True))
    with torch.no_grad():
        ref = StableDiffusionXLPipeline.encode_prompt(fake, text, device=torch.device("cpu"),
                                                      do_classifier_free_guidance=False, clip_skip=1)[0]
    torch.testing.assert_close(ref, out_g.hidden_states[-3], atol=1e-5, rtol=0)  # the mapping used above


def test_weighted_sdxl_per_encoder_and_first_chunk_pooled():
    c = sdxl()
    text = "a (cat:1.4) " + words(90, "dog")
    got, pooled = sp.encode(c, text)
    assert got.shape == (1, 154, 72)
    for te, pad, sl in ((c.text_encoder, EOS, slice(0, 32)), (c.text_encoder_2, 0, slice(32, 72))):
        chunks = pt.tokenize_chunks(c.tokenizer if pad == EOS else c.tokenizer_2, text)
        assert [t for t, _ in chunks[0]][-1] in (EOS, pad)
        empty = run(te, [BOS, EOS] + [pad] * 75).hidden_states[-2][0]
        for k, chunk in enumerate(chunks):
            z = run(te, [t for t, _ in chunk]).hidden_states[-2][0]
            w = torch.tensor([w for _, w in chunk]).unsqueeze(-1)
            expected = torch.where(w != 1.0, (z - empty) * w + empty, z)
            torch.testing.assert_close(got[0, 77 * k:77 * (k + 1), sl], expected, atol=1e-5, rtol=0)
    first = [t for t, _ in pt.tokenize_chunks(c.tokenizer_2, text)[0]]
    torch.testing.assert_close(pooled, run(c.text_encoder_2, first).text_embeds, atol=1e-5, rtol=0)


def test_repeat_to_common_length():
    a, b = torch.randn(1, 154, 8), torch.randn(1, 231, 8)
    ra, rb = sp.repeat_to_common_length(a, b)
    assert ra.shape == rb.shape == (1, 462, 8)
    torch.testing.assert_close(ra[:, 154:308], a)
    same = torch.randn(1, 77, 8)
    assert sp.repeat_to_common_length(same, same)[0] is same


# ================================================================ the node, through the cache
_SPECS: dict = {}


def _build_test_pipeline(spec, device):  # module level: a ModelSpec builder
    return sdxl() if spec.option("arch") == "sdxl" else sd15()


def _handle(tmp_path, arch="sd15", loras=()):
    f = tmp_path / f"tiny-{arch}.bin"
    f.write_bytes(b"x")
    spec = ModelSpec(kind="test-sd-pipeline", path=str(f), build=_build_test_pipeline, options=(("arch", arch),))
    return PipelineHandle(spec=spec, arch=arch, loras=tuple(loras), name=f.name)


def test_node_definition_and_validation():
    from visionkit_pack.nodes.sd_prompt import VisionKitPromptEncode as N

    assert "VisionKitPromptEncode" in vk.NODE_CLASS_MAPPINGS
    assert vk.NODE_DISPLAY_NAME_MAPPINGS["VisionKitPromptEncode"] == "VisionKit Prompt Encode (CLIP)"
    assert N.CATEGORY == "VisionKit/generation" and N.RETURN_TYPES == ("VK_CONDITIONING",)
    types_ = N.INPUT_TYPES()
    assert types_["required"]["positive"][1]["multiline"] and types_["required"]["negative"][1]["multiline"]
    for section in types_.values():
        for name, spec in section.items():
            assert spec[1].get("tooltip"), name
    # stop_at_clip_layer: ComfyUI's min/max at /prompt; validate_clip_layer again when the node runs
    from visionkit_pack.nodes.sd_prompt import validate_clip_layer

    assert not hasattr(N, "VALIDATE_INPUTS")
    layer = types_["required"]["stop_at_clip_layer"][1]
    assert (layer["min"], layer["max"]) == (sp.MIN_CLIP_LAYER, 0)
    assert validate_clip_layer(-2) is True
    assert validate_clip_layer(None) is True
    assert "outside" in validate_clip_layer(1)
    assert "outside" in validate_clip_layer(-25)
    assert "whole number" in validate_clip_layer("x")


def test_node_runs_through_the_cache(pack, tmp_path):
    from visionkit_pack.nodes.sd_prompt import VisionKitPromptEncode as N

    (cond,) = N().encode(_handle(tmp_path, "sdxl"), "a (cat:1.2)", "", stop_at_clip_layer=0, width=640, height=512)
    ref = sp.encode_pair(sdxl(), "a (cat:1.2)", "", size=sp.SizeCond(width=640, height=512))
    torch.testing.assert_close(cond.prompt_embeds, ref.prompt_embeds)
    torch.testing.assert_close(cond.negative_pooled, ref.negative_pooled)
    assert cond.add_time_ids == (512, 640, 0, 0, 1024, 1024) and cond.text == "a (cat:1.2)"
    with pytest.raises(GenerationError, match="VK_PIPELINE"):
        N().encode("not a pipeline", "a", "")


def _lora(tmp_path, arch="sd15"):
    spec = ModelSpec(kind="test-lora", path=str(tmp_path / "l.safetensors"), build=_build_test_pipeline)
    return LoraRef(spec=spec, arch=arch, strength_text=0.5, name="l")


def test_lora_hook_calls_apply_lora_text_and_undoes_it(pack, tmp_path, monkeypatch):
    from visionkit_pack.models.sd import lora as sd_lora

    calls = []

    def apply_lora_text(patches, comps, handle):
        calls.append((comps.arch, [l.strength_text for l in handle.loras]))
        bias = comps.text_encoder.final_layer_norm.bias
        patches.set_params(comps.text_encoder, {"final_layer_norm.bias": bias + 1.0})

    monkeypatch.setattr(sd_lora, "apply_lora_text", apply_lora_text)
    before = sd15().text_encoder.final_layer_norm.bias
    plain = sp.encode_pair(sd15(), "a cat", "")
    cond = sp.encode_pair(_handle(tmp_path, loras=[_lora(tmp_path)]), "a cat", "")
    assert calls == [("sd15", [0.5])]
    torch.testing.assert_close(cond.prompt_embeds, plain.prompt_embeds + 1.0)  # the patch reached the encode
    assert sd15().text_encoder.final_layer_norm.bias is before  # and was undone after it
    assert sp.text_encoder_patches(_handle(tmp_path), sd15(), None) is False  # no LoRA: nothing to do


# ================================================================ with the real pipeline loader
def _loader():
    from visionkit_pack.models.sd import pipeline as sd_pipeline

    return sd_pipeline


def _diffusers_reference(comps, pos, neg):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    fake = types.SimpleNamespace(text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=None,
                                 text_encoder_2=comps.text_encoder_2, tokenizer_2=comps.tokenizer_2,
                                 config=types.SimpleNamespace(force_zeros_for_empty_prompt=True))
    cpu = torch.device("cpu")
    with torch.no_grad():
        if comps.arch == "sdxl":
            p, n, pp, npool = StableDiffusionXLPipeline.encode_prompt(fake, pos, device=cpu, negative_prompt=neg)
            return p.float(), n.float(), pp.float(), npool.float()
        p, n = StableDiffusionPipeline.encode_prompt(fake, pos, cpu, 1, True, neg)
        return p.float(), n.float(), None, None


def _check_node_on(handle, tol=1e-5):
    from visionkit_pack.models.sd.types import use_components
    from visionkit_pack.nodes.sd_prompt import VisionKitPromptEncode as N

    pos, neg = "a photo of a cat, sunny", "blurry"
    (cond,) = N().encode(handle, pos, neg)
    with use_components(handle) as comps:
        ref = _diffusers_reference(comps, pos, neg)
    assert cond.arch == handle.arch and cond.prompt_embeds.device.type == "cpu"
    assert cond.prompt_embeds.dtype == torch.float32
    torch.testing.assert_close(cond.prompt_embeds, ref[0], atol=tol, rtol=0)
    torch.testing.assert_close(cond.negative_prompt_embeds, ref[1], atol=tol, rtol=0)
    if handle.arch == "sdxl":
        torch.testing.assert_close(cond.pooled, ref[2], atol=tol, rtol=0)
        torch.testing.assert_close(cond.negative_pooled, ref[3], atol=tol, rtol=0)
    (long_,) = N().encode(handle, "(a cat:1.3) " + words(100), "", stop_at_clip_layer=-2)
    assert long_.prompt_embeds.shape[:2] == (1, 154) and torch.isfinite(long_.prompt_embeds).all()
    return cond


def test_node_on_the_tiny_pipeline_fixtures(pack, models_dir):
    """Every tiny SD1.5/SDXL pipeline of tests/vk_testing/tiny_sd.py, as a diffusers folder and as a single file:
    each must load (none is a deliberately broken one) and encode as diffusers does."""
    loader = _loader()
    found = sorted(p.name for key in ("diffusers", "checkpoints") for p in (Path(models_dir) / key).iterdir()
                   if p.name.startswith("tiny-sd"))
    expected = sorted(n + ext for n in ("tiny-sd15", "tiny-sd15-inpaint", "tiny-sdxl") for ext in ("", ".safetensors"))
    assert found == expected, "tests/vk_testing/tiny_sd.py wrote other pipelines than this test checks"
    for name in expected:
        path = Path(models_dir) / ("checkpoints" if name.endswith(".safetensors") else "diffusers") / name
        handle = loader.load_pipeline(str(path), "fp32")
        assert handle.arch == ("sdxl" if "sdxl" in name else "sd15"), name
        _check_node_on(handle)
