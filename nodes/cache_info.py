"""VisionKitModelCacheInfo: what the shared model cache holds, with an optional purge."""
from __future__ import annotations

from ..models.core.cache import get_cache
from .common import ANY, CATEGORY, human_bytes, short_path, to_json


def summary_text(stats: dict) -> str:
    t = stats["totals"]
    devs = ", ".join(f"{d}: {human_bytes(b)}" for d, b in sorted(t["bytes_by_device"].items())) or "nothing loaded"
    lines = [f"{t['entries']} model(s) cached ({devs}); hits {t['hits']}, misses {t['misses']}, "
             f"load time {t['load_seconds']:.2f} s, budget {human_bytes(t['budget_bytes'])}"]
    for e in stats["entries"]:
        lines.append(f"• {e['kind']}: {short_path(e['path'])} on {e['device']}, {human_bytes(e['bytes'])}, "
                     f"{e['hits']} hit(s)")
    return "\n".join(lines)


class VisionKitModelCacheInfo:
    DESCRIPTION = ("Shows what VisionKit's shared model cache holds (models, device, size, hits) and can purge "
                   "it. Connect any output to 'after' to read the cache once that node has run.")
    CATEGORY = f"{CATEGORY}/utils"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("summary", "stats_json")
    OUTPUT_TOOLTIPS = ("One line per cached model, readable.", "The same as GET /visionkit/cache, as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "purge": ("BOOLEAN", {"default": False, "label_on": "purge", "label_off": "keep",
                                      "tooltip": "Drop every cached VisionKit model before reading the "
                                                 "stats (models in use are dropped when their node ends)."}),
            },
            "optional": {
                "after": (ANY, {"tooltip": "Any output: this node then runs after that node, so the "
                                           "readout includes the models it loaded."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the cache changes between runs: always read it again

    def run(self, purge: bool, after=None):
        cache = get_cache()
        if purge:
            cache.purge()
        stats = cache.stats()
        text = summary_text(stats)
        return {"ui": {"text": [text]}, "result": (text, to_json(stats))}
