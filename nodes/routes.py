"""HTTP routes of the pack, registered on ComfyUI's PromptServer (only when it runs).

    GET  /visionkit/cache            the shared cache: entries and totals (models/core/cache.py stats())
    POST /visionkit/cache/purge      {} purges everything, {"keys": [...]} some entries
    GET  /visionkit/models           per folder key: folders searched, files found, what it holds, where to
                                     get it, and the README table's models that belong there ("catalog")
    GET  /visionkit/loaders          per VisionKit loader: which model dropdown lists which folder keys
                                     (the canvas extension says where to put files when a list is empty)

The answers are built by plain functions (models_table, loaders_table) so tests can call them without a
server; `add_routes` puts the handlers on any aiohttp RouteTableDef.
"""
from __future__ import annotations

import json
import logging

from ..models.core import folders
from ..models.core.cache import get_cache
from ..models.core.catalog import by_folder

log = logging.getLogger("visionkit")
_registered = False


def models_table() -> dict:
    """GET /visionkit/models: {key: {folders, files, holds, get, folder, catalog}}."""
    return {key: {"folders": folders.folder_paths_for(key),
                  "files": folders.list_models(key),
                  "holds": spec.holds,
                  "get": folders.WHERE_TO_GET.get(key, ""),
                  "folder": spec.folder + (f"/{spec.subdir}" if spec.subdir else ""),
                  "catalog": [{"name": m.name, "file": m.file, "used_by": m.used_by, "source": m.source,
                               "licence": m.licence, "non_commercial": m.non_commercial} for m in by_folder(key)]}
            for key, spec in folders.FOLDERS.items()}


def _combo_folders(options: dict) -> list[str] | None:
    keys = options.get("vk_folders") or ([options["vk_folder"]] if options.get("vk_folder") else None)
    return [k for k in keys if k in folders.FOLDERS] if keys else None


def loaders_table(node_classes: dict | None = None) -> dict:
    """GET /visionkit/loaders: {node_id: {input_name: {"folders": [folder keys], "files": n}}}.

    A model dropdown says which folder it lists with a "vk_folder" (or "vk_folders") option, which
    nodes.common.model_combo adds; the pipeline loader's dropdown joins checkpoints and diffusers.
    """
    if node_classes is None:
        from . import NODE_CLASS_MAPPINGS as node_classes
    out: dict[str, dict] = {}
    for node_id, cls in node_classes.items():
        try:
            spec = cls.INPUT_TYPES()
        except Exception as ex:  # noqa: BLE001  (one broken node must not hide the others' help)
            log.warning("VisionKit: %s.INPUT_TYPES failed while listing loaders: %s", node_id, ex)
            continue
        for section in ("required", "optional"):
            for name, value in (spec.get(section) or {}).items():
                if not (isinstance(value, (tuple, list)) and len(value) > 1 and isinstance(value[0], list)
                        and isinstance(value[1], dict)):
                    continue
                keys = _combo_folders(value[1])
                if node_id == "VisionKitPipelineLoader" and name == "model_name" and not keys:
                    from .sd_loaders import SOURCES
                    keys = list(SOURCES)
                if keys:
                    out.setdefault(node_id, {})[name] = {"folders": keys, "files": len(value[0])}
    return out


MAX_ECHO = 20  # unknown keys echoed back in a purge answer ...
MAX_ECHO_CHARS = 200  # ... each cut to this length (a 50 MB key must not come back as a 50 MB answer)


def _short_keys(keys: list) -> list[str]:
    return [k if len(k) <= MAX_ECHO_CHARS else k[:MAX_ECHO_CHARS] + "…" for k in keys[:MAX_ECHO]]


def _parse_body(raw: str):
    """(body, error): JSON with any nesting refused as a 400, never a 500 (RecursionError)."""
    if not raw.strip():
        return {}, None
    try:
        return json.loads(raw), None
    except RecursionError:
        return None, "the body is nested too deeply; send {} or {\"keys\": [...]}"
    except ValueError:
        return None, "the body is not JSON; send {} or {\"keys\": [...]}"


def _purge_keys(body):
    """The keys to purge from a request body ({} or {"keys": [...]}), or an error message."""
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(body, dict) or (keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys))):
        return None, ("send {} to purge everything or {\"keys\": [\"key\", ...]} with keys from "
                      "GET /visionkit/cache")
    return keys, None


def add_routes(routes) -> None:
    """Put the pack's handlers on an aiohttp RouteTableDef (ComfyUI's, or a test app's)."""
    from aiohttp import web

    @routes.get("/visionkit/cache")
    async def cache_stats(request):
        return web.json_response(get_cache().stats())

    @routes.post("/visionkit/cache/purge")
    async def cache_purge(request):
        body = {}
        if request.can_read_body:
            try:
                body, error = _parse_body(await request.text())
            except ValueError:  # not UTF-8
                body, error = None, "the body is not JSON text; send {} or {\"keys\": [...]}"
            if error:
                return web.json_response({"error": error}, status=400)
        keys, error = _purge_keys(body)
        if error:
            return web.json_response({"error": error}, status=400)
        result = get_cache().purge(keys)
        unknown = result["unknown"]
        result = {**result, "unknown": _short_keys(unknown), "unknown_count": len(unknown)}
        return web.json_response({**result, **get_cache().stats()})

    @routes.get("/visionkit/models")
    async def model_folders(request):
        return web.json_response(models_table())

    @routes.get("/visionkit/loaders")
    async def loader_folders(request):
        return web.json_response(loaders_table())


def register() -> bool:
    global _registered
    if _registered:
        return True
    try:
        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    add_routes(server.routes)
    _registered = True
    return True
