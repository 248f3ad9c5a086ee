"""VisionKitModelCacheInfo shows what the cache holds and purges it on request."""
from __future__ import annotations

import json


def test_readout_lists_loaded_model_and_purge_empties(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    (handle,) = nodes["VisionKitUpscaleModelLoader"]().load("tiny_RealESRGAN_x4plus.pth", "auto")
    info = nodes["VisionKitModelCacheInfo"]()
    out = info.run(purge=False, after=handle)
    summary, stats_json = out["result"]
    assert out["ui"]["text"] == [summary]
    stats = json.loads(stats_json)
    assert stats["totals"]["entries"] == 1 and stats["totals"]["misses"] == 1
    (entry,) = stats["entries"]
    assert entry["kind"] == "upscale" and entry["path"].endswith("tiny_RealESRGAN_x4plus.pth")
    assert entry["meta_arch"].startswith("RRDBNet x4")
    assert "1 model(s) cached" in summary and "tiny_RealESRGAN_x4plus.pth" in summary
    # loading the same file again through another loader node is a hit, not a second load
    nodes["VisionKitUpscaleModelLoader"]().load("tiny_RealESRGAN_x4plus.pth", "auto")
    stats = json.loads(info.run(purge=False)["result"][1])
    assert stats["totals"]["misses"] == 1 and stats["totals"]["hits"] == 1
    summary, stats_json = info.run(purge=True)["result"]
    assert json.loads(stats_json)["totals"]["entries"] == 0 and summary.startswith("0 model(s) cached")


def test_cache_info_always_reruns(pack):
    cls = pack.NODE_CLASS_MAPPINGS["VisionKitModelCacheInfo"]
    v = cls.IS_CHANGED(purge=False)
    assert v != v  # NaN: never equal to the previous run, so ComfyUI never serves a stale readout
