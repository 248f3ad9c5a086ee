"""Soak (issue 10, opt-in: VISIONKIT_SOAK=1; too long for CI): 200 prompts mixed from the shipped API workflows.

Queued one after another to one real ComfyUI with the tiny models (the shared T2 server). Every prompt gets
fresh inputs (its LoadImage files copied under new names, new seeds), so ComfyUI's output cache cannot skip the
work: every prompt really runs its nodes, while the models stay cached, as in a long user session.

Asserts: zero failed prompts; the server's RSS grows by at most 5 % between prompt 50 and prompt 200 (after
the first 50 every model has been loaded, so growth past that is a leak); the pack's cache never holds more
entries than the distinct model files the workflows name, and is never left pinned. Prints the figures
(prompts, seconds, RSS at 50/100/150/200, cache entries) for the closing note; VISIONKIT_SOAK_PROMPTS changes
the count.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
import uuid

import pytest

from vk_testing import tiers
from vk_testing import workflows as W
from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture)

pytestmark = [pytest.mark.t2, tiers.optional_mark(os.environ.get("VISIONKIT_SOAK") != "1",
                                                              "soak is opt-in: VISIONKIT_SOAK=1")]

PROMPTS = int(os.environ.get("VISIONKIT_SOAK_PROMPTS", "200"))


def fresh(api: dict, input_dir, rng: random.Random, made: list) -> dict:
    """The prompt with new seeds and its input images under new names (so every node runs again)."""
    api = json.loads(json.dumps(api))
    for node in api.values():
        inputs = node.get("inputs", {})
        if "seed" in inputs and not isinstance(inputs["seed"], list):
            inputs["seed"] = rng.randrange(2**32)
        if node.get("class_type") == "LoadImage":
            src = input_dir / inputs["image"]
            name = f"soak_{uuid.uuid4().hex[:10]}{src.suffix}"
            shutil.copyfile(src, input_dir / name)
            made.append(input_dir / name)
            inputs["image"] = name
    return api


def test_soak_mixed_workflows(comfy):  # noqa: F811
    W.link_real_names(comfy.base_dir / "models", comfy.models_dir)
    W.copy_inputs(comfy.base_dir / "input")
    input_dir = comfy.base_dir / "input"
    workflows = {n: W.for_tests(W.load_api(n)) for n in W.names()}
    model_files = {v for api in workflows.values() for _, _, v in W.model_inputs(api)}
    rng = random.Random(1234)
    order = [rng.choice(sorted(workflows)) for _ in range(PROMPTS)]
    rss, failures, most_entries, made = {}, [], 0, []
    t0 = time.monotonic()
    try:
        for i, name in enumerate(order, 1):
            entry = comfy.run_prompt(fresh(workflows[name], input_dir, rng, made), timeout=300,
                                     expect_success=False)
            if entry["status"]["status_str"] != "success":
                failures.append((i, name, json.dumps(entry["status"].get("messages"), default=str)[-800:]))
            stats = comfy.get_json("/visionkit/cache")
            most_entries = max(most_entries, stats["totals"]["entries"])
            assert not [e for e in stats["entries"] if e.get("in_use")], f"left pinned after prompt {i}"
            if i % 50 == 0 or i == len(order):
                rss[i] = comfy.rss_bytes()
            while len(made) > 20:  # keep the input folder small
                made.pop(0).unlink(missing_ok=True)
    finally:
        for p in made:
            p.unlink(missing_ok=True)
    seconds = time.monotonic() - t0
    counts = {n: order.count(n) for n in sorted(workflows)}
    mb = {k: round(v / 2**20, 1) for k, v in rss.items()}
    print(f"\nsoak: {len(order)} prompts in {seconds:.0f} s ({seconds / len(order):.2f} s each), "
          f"{len(failures)} failed; RSS MB by prompt {mb}; most cache entries {most_entries} "
          f"(model files named: {len(model_files)}); mix {counts}")
    assert not failures, failures[:5]
    assert most_entries <= len(model_files) + 2, (most_entries, sorted(model_files))  # + CLIP vision/IdentityNet parts
    if len(order) >= 200:
        growth = (rss[200] - rss[50]) / rss[50]
        assert growth <= 0.05, f"RSS grew {growth:.1%} between prompt 50 and 200: {mb}"
