"""HTTP routes of the pack, registered on ComfyUI's PromptServer (only when it runs)."""
from __future__ import annotations

import logging

from ..models import folders
from ..models.cache import get_cache

log = logging.getLogger("visionkit")
_registered = False


def register() -> bool:
    global _registered
    if _registered:
        return True
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    routes = server.routes

    @routes.get("/visionkit/cache")
    async def cache_stats(request):
        return web.json_response(get_cache().stats())

    @routes.post("/visionkit/cache/purge")
    async def cache_purge(request):
        body = {}
        if request.can_read_body:
            try:
                raw = await request.text()
                body = __import__("json").loads(raw) if raw.strip() else {}
            except ValueError:
                return web.json_response({"error": "the body is not JSON; send {} or {\"keys\": [...]}"},
                                         status=400)
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(body, dict) or (keys is not None and not (
                isinstance(keys, list) and all(isinstance(k, str) for k in keys))):
            return web.json_response({"error": "send {} to purge everything or {\"keys\": [\"key\", ...]} "
                                               "with keys from GET /visionkit/cache"}, status=400)
        result = get_cache().purge(keys)
        return web.json_response({**result, **get_cache().stats()})

    @routes.get("/visionkit/models")
    async def model_folders(request):
        return web.json_response({key: {"folders": folders.folder_paths_for(key),
                                        "files": folders.list_models(key),
                                        "holds": spec.holds, "get": folders.WHERE_TO_GET.get(key, "")}
                                  for key, spec in folders.FOLDERS.items()})

    _registered = True
    return True
