"""Issue 19: the sampler refuses runs whose memory cannot fit (with the estimate) and honours Cancel inside a
step; checks explain instead of crashing (prompt nesting, NaN guidance, a tile_size that is not a number)."""
from __future__ import annotations

import types

import pytest
import torch

from vk_testing import import_pack

import_pack()
from visionkit_pack.models.core import host  # noqa: E402
from visionkit_pack.models.sd import memory as M  # noqa: E402
from visionkit_pack.models.sd.pipeline import load_pipeline  # noqa: E402
from visionkit_pack.models.sd.types import GenerationError  # noqa: E402

SD15_UNET = types.SimpleNamespace(block_out_channels=[320, 640, 1280, 1280], down_block_types=[
    "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
SDXL_UNET = types.SimpleNamespace(block_out_channels=[320, 640, 1280], down_block_types=[
    "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"])
VAE = types.SimpleNamespace(block_out_channels=[128, 256, 512, 512])


def test_estimate_refuses_the_giant_and_allows_the_usual():
    giant = M.estimate_peak_bytes(SD15_UNET, VAE, 16384, 16384, 1, False)
    assert giant["peak"] > 300 << 30, giant  # more than any machine of this project has
    usual = M.estimate_peak_bytes(SD15_UNET, VAE, 512, 512, 1, True)
    assert usual["peak"] < 2 << 30, usual
    xl = M.estimate_peak_bytes(SDXL_UNET, VAE, 1024, 1024, 4, True, 2, 4)
    assert xl["peak"] < 16 << 30, xl
    assert M.estimate_peak_bytes(SD15_UNET, VAE, 1024, 1024, 2, True)["peak"] > usual["peak"]


@pytest.fixture()
def tiny(pack, models_dir):
    h = load_pipeline(str(models_dir / "checkpoints" / "tiny-sd15.safetensors"))
    cond = pack.NODE_CLASS_MAPPINGS["VisionKitPromptEncode"]().encode(h, "a cube", "")[0]
    return pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"](), h, cond


def test_a_run_that_cannot_fit_is_refused_with_the_estimate(tiny, monkeypatch):
    node, h, cond = tiny
    monkeypatch.setattr(M, "available_bytes", lambda device: 1 << 20)  # 1 MB free
    with pytest.raises(GenerationError) as ei:
        node.sample(h, cond, 1, 2, 1.0, "lcm", 256, 256, 1, 1.0)
    msg = str(ei.value)
    assert "needs at least about" in msg and "GB" in msg and "free on cpu" in msg and "smaller" in msg, msg
    monkeypatch.setenv("VISIONKIT_SKIP_MEMORY_CHECK", "1")
    assert node.sample(h, cond, 1, 1, 1.0, "lcm", 64, 64, 1, 1.0)[0].shape == (1, 64, 64, 3)


def test_real_free_memory_is_read():
    free = M.available_bytes(torch.device("cpu"))
    assert free is not None and free > 1 << 20


class Cancelled(Exception):
    pass


def test_cancel_during_a_step_is_honoured_before_the_step_ends(tiny, monkeypatch):
    """The flag is raised while the first down block runs: the run stops inside that UNet call (before: it
    finished the whole step and stopped only before the next one)."""
    node, h, cond = tiny
    flag = {"set": False}

    def throw():
        if flag["set"]:
            raise Cancelled()

    monkeypatch.setattr(host, "throw_if_cancelled", throw)
    from visionkit_pack.models.core.cache import get_cache
    from visionkit_pack.models.sd.pipeline import use_pipeline

    with use_pipeline(h) as comps:
        unet = comps.unet
    ran = {"up": 0}
    hooks = [unet.down_blocks[0].register_forward_hook(lambda *a: flag.update(set=True)),
             unet.up_blocks[-1].register_forward_hook(lambda *a: ran.update(up=ran["up"] + 1))]
    try:
        with pytest.raises(Cancelled):
            node.sample(h, cond, 1, 4, 1.0, "lcm", 64, 64, 1, 1.0)
    finally:
        for k in hooks:
            k.remove()
    assert ran["up"] == 0, "the step ran to its end before the cancel was seen"
    # the guards are gone after the run, and nothing stays pinned
    assert not any(m._forward_pre_hooks for m in unet.modules()), "a cancel check was left on the cached UNet"
    assert not [e for e in get_cache().entries() if e.get("in_use")]
    flag["set"] = False
    assert node.sample(h, cond, 1, 1, 1.0, "lcm", 64, 64, 1, 1.0)[0].shape == (1, 64, 64, 3)


@pytest.mark.parametrize("kw, says", [
    ({"guidance": float("nan")}, "guidance must be a finite number"),
    ({"denoise": float("nan")}, "denoise must be a finite number"),
    ({"guidance": float("inf")}, "guidance must be a finite number"),
    ({"steps": float("nan")}, "steps must be a finite number"),
    ({"seed": "x"}, "seed must be a number"),
])
def test_sampler_check_says_what_is_wrong(pack, kw, says):
    # the sampler has no VALIDATE_INPUTS (ComfyUI would repeat its message on every input it names); NaN passes
    # ComfyUI's min/max, so generate() refuses it with this check when the node runs
    from visionkit_pack.models.sd.sampler import check_settings

    assert not hasattr(pack.NODE_CLASS_MAPPINGS["VisionKitLCMSampler"], "VALIDATE_INPUTS")
    out = check_settings(**kw)
    assert isinstance(out, str) and says in out and "whole number" not in out, out


def test_sampler_refuses_nan_when_the_node_runs(tiny):
    node, h, cond = tiny
    with pytest.raises(GenerationError, match="guidance must be a finite number"):
        node.sample(h, cond, 1, 2, float("nan"), "lcm", 64, 64, 1, 1.0)


@pytest.mark.parametrize("kw, says", [
    ({"tile_size": "x"}, "tile_size must be a whole number, not 'x'"),
    ({"tile_size": float("nan")}, "tile_size must be a whole number"),
    ({"tile_pad": "8"}, "tile_pad must be a whole number"),
    ({"outscale": float("inf")}, "outscale must be a finite number"),
])
def test_upscale_checks_explain_values_that_are_not_numbers(pack, kw, says):
    from visionkit_pack.nodes.upscale import check_settings

    out = check_settings(**kw)  # what upscale() checks when the node runs
    assert isinstance(out, str) and says in out, out
    if "tile_size" in kw:  # the one input VALIDATE_INPUTS names (ComfyUI range-checks the others)
        out = pack.NODE_CLASS_MAPPINGS["VisionKitUpscale"].VALIDATE_INPUTS(**kw)
        assert isinstance(out, str) and says in out, out


def test_deeply_nested_prompt_is_refused_by_the_node_and_in_the_engine(pack, tiny):
    from visionkit_pack.models.sd import prompt_tokens as P
    from visionkit_pack.nodes.sd_prompt import check_prompts

    # no VALIDATE_INPUTS (its message would show on both prompts): the node checks each prompt when it runs
    node, h, _ = tiny
    deep = "(" * 5000 + "a" + ")" * 5000
    out = check_prompts(deep, "")
    assert isinstance(out, str) and "the positive prompt is too deeply nested" in out and "5000 levels" in out, out
    out = check_prompts("ok", "[" * 60 + "x")
    assert isinstance(out, str) and "the negative prompt" in out, out
    with pytest.raises(GenerationError, match="the negative prompt is too deeply nested"):
        pack.NODE_CLASS_MAPPINGS["VisionKitPromptEncode"]().encode(h, "ok", "[" * 60 + "x")
    with pytest.raises(GenerationError, match="too deeply nested"):
        P.parse_weights(deep)
    ok = "(" * P.MAX_NESTING + "a" + ")" * P.MAX_NESTING
    assert P.parse_weights(ok) == [("a", pytest.approx(1.1 ** P.MAX_NESTING))]
    assert check_prompts(ok, "\\(" * 5000) is True


def test_the_parser_needs_no_recursion(monkeypatch):
    """Iterative: a nesting at the limit parses with a recursion limit far below it."""
    import sys

    from visionkit_pack.models.sd import prompt_tokens as P

    text = "(" * P.MAX_NESTING + "a" + ")" * P.MAX_NESTING
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(40, len([f for f in _frames()]) + 20))
    try:
        assert P.parse_weights(text)[0][0] == "a"
    finally:
        sys.setrecursionlimit(old)


def _frames():
    import sys

    f = sys._getframe()
    while f:
        yield f
        f = f.f_back


def test_long_attention_is_chunked_with_cancel_checks_and_the_same_image(tiny, monkeypatch):
    """With the chunk length lowered to 8 query rows (the tiny UNet's 64-token attention becomes 8 chunks), the
    image is the one the unchunked run gives, a Cancel raised inside the first attention call stops it before
    its second chunk, and the plain processors are back afterwards."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from visionkit_pack.models.sd.pipeline import use_pipeline

    node, h, cond = tiny
    plain = node.sample(h, cond, 5, 2, 1.0, "lcm", 64, 64, 1, 1.0)[0]
    monkeypatch.setattr(M, "ATTN_CHUNK_TOKENS", 8)
    calls = {"n": 0}
    real = AttnProcessor2_0.__call__

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(AttnProcessor2_0, "__call__", counting)
    chunked = node.sample(h, cond, 5, 2, 1.0, "lcm", 64, 64, 1, 1.0)[0]
    assert calls["n"] > 0
    assert torch.allclose(chunked, plain, atol=1e-5), (chunked - plain).abs().max()

    with use_pipeline(h) as comps:
        unet = comps.unet
    first_attn = next(m for m in unet.modules() if type(m).__name__ == "Attention")
    state = {"chunks": 0, "inside": False}

    def throw():
        if state["inside"]:
            state["chunks"] += 1
            if state["chunks"] > 2:  # the pre-hook's check, then the first chunk's: cancel at the second chunk
                raise Cancelled()

    monkeypatch.setattr(host, "throw_if_cancelled", throw)
    hooks = [first_attn.register_forward_pre_hook(lambda *a: state.update(inside=True)),
             first_attn.register_forward_hook(lambda *a: state.update(finished=True))]
    try:
        with pytest.raises(Cancelled):
            node.sample(h, cond, 5, 2, 1.0, "lcm", 64, 64, 1, 1.0)
    finally:
        for k in hooks:
            k.remove()
    assert state["chunks"] == 3 and not state.get("finished"), "the cancel was not seen inside the attention call"
    assert all(type(m.processor) is AttnProcessor2_0 for m in unet.modules() if type(m).__name__ == "Attention")
