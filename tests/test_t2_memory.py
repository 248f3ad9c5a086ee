"""T2: memory really returns to the system after `POST /free` and after `POST /visionkit/cache/purge`.

A ~400 MB Real-ESRGAN model (tests/vk_testing/big_models.py, written only for this test into the server's
own models/upscale_models, and removed after) is loaded by a prompt in the real ComfyUI server. The test
reads what the pack's cache reports (/visionkit/cache) and the server process's resident memory
(/proc/<pid>/status VmRSS), releases the model, polls until the cache is empty, and asserts that the RSS
fell by at least 95 % of the bytes the cache had reported. Then the server must still run a prompt.
"""
from __future__ import annotations

import os
import time
import uuid

import pytest

from vk_testing import comfy_server as CS
from vk_testing import tiers

pytestmark = [pytest.mark.t2,
              tiers.optional_mark(not os.path.exists("/proc/self/status"), "reads /proc/<pid>/status (Linux only)")]

TINY_X4 = "tiny_RealESRGAN_x4plus.pth"
MIN_MODEL_BYTES = 150 << 20  # the fixture must be large enough that 5 % of it dwarfs allocator noise
SHARE = 0.95


@pytest.fixture(scope="module", params=[p for p, _ in CS._PARAMS], ids=[i for _, i in CS._PARAMS])
def comfy(request, models_dir, tmp_path_factory):
    """A server of its own per ComfyUI version, not the session's shared one: after the hundreds of prompts
    the other T2 files send, 0.33.0's RSS fell by only 84 % of the model in the full suite (1526.7 → 1197.4 MB
    against 389.8 MB reported), while the same test alone released 100 %. What is measured here is the
    pack's release of its own model, so it runs in a process nothing else has used."""
    found = request.param
    if isinstance(found, CS.ComfyUINotFound):
        pytest.fail(str(found))
    if found is None:
        tiers.missing("T2", CS.NOT_FOUND)
    server = CS.ComfyServer(found, models_dir, tmp_path_factory.mktemp("comfyui_memory_base"),
                            extra_args=CS.frontend_args(found)).start()
    try:
        yield server
    finally:
        server.stop()


def cache_prompt(model_name: str) -> dict:
    return {
        "1": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": model_name, "dtype": "auto"}},
        "2": {"class_type": "VisionKitModelCacheInfo", "inputs": {"purge": False, "after": ["1", 0]}},
    }


def cache_stats(comfy):  # noqa: F811
    return comfy.get_json("/visionkit/cache")


@pytest.fixture(scope="module")
def big_model(comfy):  # noqa: F811
    """The ~400 MB model in the server's own models/upscale_models (the server re-reads the folder)."""
    from vk_testing.big_models import write_big_upscale_model

    folder = comfy.base_dir / "models" / "upscale_models"
    path = folder / f"t2_big_{uuid.uuid4().hex[:8]}.safetensors"
    # ~400 MB: at 200 MB, ~11 MB of unrelated heap growth between the two RSS readings (prompt history,
    # logging) was 5 % of the model and made the 95 % check flip in one CI run out of two
    nbytes = write_big_upscale_model(path, num_block=68)  # 68 blocks of ~6 MB (32 growth channels)
    assert nbytes >= MIN_MODEL_BYTES
    links = []
    yield path, links
    for p in [path, *links]:
        p.unlink(missing_ok=True)


def fresh_name(big_model) -> str:
    """A new name for the same file (a hard link): a new cache key, so the load really happens, whatever
    ComfyUI's output cache or the pack's cache kept from before; no second copy on disk."""
    path, links = big_model
    link = path.with_name(f"t2_big_{uuid.uuid4().hex[:8]}.safetensors")
    os.link(path, link)
    links.append(link)
    return link.name


def load_and_measure(comfy, name):  # noqa: F811
    """Empty the cache, run the prompt that loads `name`; (bytes the cache reports, RSS now)."""
    comfy.post_json("/visionkit/cache/purge", {})
    comfy.run_prompt(cache_prompt(name), timeout=300)
    stats = cache_stats(comfy)
    ours = [e for e in stats["entries"] if os.path.basename(e["path"]) == name]
    assert len(ours) == 1, stats["entries"]
    assert ours[0]["bytes"] >= MIN_MODEL_BYTES, ours[0]
    reported = stats["totals"]["bytes"]
    return reported, settled_rss(comfy)


def settled_rss(comfy, timeout: float = 15, tolerance: int = 1 << 20) -> int:  # noqa: F811
    """The server's RSS once the worker's post-prompt housekeeping is over, by polling with a deadline (no
    fixed sleep): the queue empty and two readings in a row within 1 MB; the last reading at the deadline."""
    deadline = time.monotonic() + timeout
    last = comfy.rss_bytes()
    while time.monotonic() < deadline:
        time.sleep(0.1)  # the polling interval
        now = comfy.rss_bytes()
        queue = comfy.get_json("/queue")
        if abs(now - last) <= tolerance and not queue["queue_running"] and not queue["queue_pending"]:
            return now
        last = now
    return last


def wait_for_rss_drop(comfy, before: int, reported: int, timeout: float = 30) -> int:  # noqa: F811
    """Poll the RSS until it fell by SHARE of `reported` (or the timeout): the last value read."""
    deadline = time.monotonic() + timeout
    now = comfy.rss_bytes()
    while before - now < SHARE * reported and time.monotonic() < deadline:
        time.sleep(0.25)
        now = comfy.rss_bytes()
    return now


def assert_released(before: int, after: int, reported: int, how: str) -> None:
    dropped = before - after
    print(f"{how}: cache reported {reported / 2**20:.1f} MB; RSS {before / 2**20:.1f} → {after / 2**20:.1f} MB "
          f"(dropped {dropped / 2**20:.1f} MB, {dropped / reported:.0%})")
    assert dropped >= SHARE * reported, (
        f"after {how} the server's RSS fell by {dropped / 2**20:.1f} MB, less than {SHARE:.0%} of the "
        f"{reported / 2**20:.1f} MB the cache had reported (RSS {before / 2**20:.1f} → {after / 2**20:.1f} MB)")


def test_free_returns_the_memory_of_a_large_model(comfy, big_model):  # noqa: F811
    name = fresh_name(big_model)
    reported, before = load_and_measure(comfy, name)
    # /free only sets flags for the worker; the harness posts again if the worker missed the wake-up
    comfy.free(until=lambda: not cache_stats(comfy)["entries"], timeout=60)
    after = wait_for_rss_drop(comfy, before, reported)
    assert_released(before, after, reported, "POST /free")
    comfy.run_prompt(cache_prompt(TINY_X4))  # the server still works
    assert cache_stats(comfy)["entries"], "the next prompt loads again"


def test_purge_route_returns_the_memory_of_a_large_model(comfy, big_model):  # noqa: F811
    name = fresh_name(big_model)
    reported, before = load_and_measure(comfy, name)
    out = comfy.post_json("/visionkit/cache/purge", {})
    assert out["entries"] == [] and out["purged"], out
    after = wait_for_rss_drop(comfy, before, reported)
    assert_released(before, after, reported, "POST /visionkit/cache/purge")
    comfy.run_prompt(cache_prompt(TINY_X4))
    assert TINY_X4 in [os.path.basename(e["path"]) for e in cache_stats(comfy)["entries"]]
