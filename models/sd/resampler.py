"""The Resampler of IP-Adapter Plus files and of InstantID's adapter: its original key names → the names of
diffusers' IPAdapterPlusImageProjection (one map for both; each loader builds the module from its own sizes)."""
from __future__ import annotations

import re

_ATTN = {"norm1": "ln0", "norm2": "ln1"}
_FF = {"0": "ff.0", "1": "ff.1.net.0.proj", "3": "ff.1.net.2"}


def resampler_to_diffusers(proj: dict) -> dict:
    """Original Resampler weights (layers.i.0.to_kv, layers.i.1.1, ...) → IPAdapterPlusImageProjection names.

    Each layer i is [attention (0), feed-forward (1)]; to_kv is split into to_k and to_v. Other keys (latents,
    proj_in, proj_out, norm_out) keep their names.
    """
    out = {}
    for k, v in proj.items():
        m = re.fullmatch(r"layers\.(\d+)\.([01])\.(.+)", k)
        if not m:
            out[k] = v
            continue
        i, part, rest = m.group(1), m.group(2), m.group(3)
        sub, _, param = rest.partition(".")
        if part == "0":
            if sub in _ATTN:
                out[f"layers.{i}.{_ATTN[sub]}.{param}"] = v
            elif sub == "to_kv":
                kk, vv = v.chunk(2, dim=0)
                out[f"layers.{i}.attn.to_k.{param}"], out[f"layers.{i}.attn.to_v.{param}"] = kk, vv
            elif sub == "to_out":
                out[f"layers.{i}.attn.to_out.0.{param}"] = v
            else:
                out[f"layers.{i}.attn.{rest}"] = v
        else:
            out[f"layers.{i}.{_FF.get(sub, sub)}.{param}"] = v
    return out
