"""What a weights file is, from its tensor names and shapes: one registry that every loader's "wrong file"
message asks.

People put files in the wrong folder or pick the wrong one in a dropdown all the time. Each engine knows its
own formats, so each one registers a describer here when it is imported (`register(kind, describe, ...)`, at the
bottom of the engine module, next to the detection it shares with its loader); `what_is(sd)` asks them in
`order` (most specific first) and returns the first answer, e.g. "a SAM (segment-anything) checkpoint: it goes
in models/sams, for 'VisionKit Load SAM Model'". The pack imports every engine when it loads its nodes, so
inside ComfyUI (and in any process that imported the pack) the registry is complete; tests check that.

Where a kind goes (folder and loader) is registered with it; the loader is named by its node ID and shown
with the display name the node registry gives it (`set_loader_names`, called by nodes/__init__.py), so the
advice always matches the canvas.

`what_is(sd, exclude=...)` never raises: an unreadable or unknown layout becomes "an unknown model (first keys:
...)". `exclude` drops the caller's own kind (a loader that already failed to read its own format must not be
told "this is a SAM checkpoint" by a looser test of the same kind).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Describer:
    kind: str  # the caller's key for `exclude`; one kind may register several describers
    describe: Callable[[Mapping, list], str | None]  # (state dict, its keys) -> plain words, or None
    order: int  # lower runs first


@dataclass(frozen=True)
class Place:
    folder: str  # under ComfyUI/models
    loader: str  # node ID of the loader that reads it
    how: str = ""  # words after the loader's name ("as its vae_name")


_DESCRIBERS: list[Describer] = []
_PLACES: dict[str, Place] = {}
_LOADER_NAMES: dict[str, str] = {}
_lock = threading.Lock()


def register(kind: str, describe: Callable[[Mapping, list], str | None], *, order: int,
             place: Place | None = None) -> None:
    """Add a describer (and, once per kind, where that kind of file goes); engines call it when imported."""
    with _lock:
        _DESCRIBERS.append(Describer(kind, describe, order))
        _DESCRIBERS.sort(key=lambda d: d.order)
        if place is not None:
            _PLACES[kind] = place


def set_loader_names(display_names: Mapping[str, str]) -> None:
    """Node ID -> display name, from the node registry (nodes/__init__.py)."""
    _LOADER_NAMES.update(display_names)


def kinds() -> list[str]:
    return [d.kind for d in _DESCRIBERS]


def place(kind: str) -> Place | None:
    return _PLACES.get(kind)


def loader_name(node_id: str) -> str:
    """The display name of a loader node (its ID until the node registry has been read)."""
    return _LOADER_NAMES.get(node_id, node_id)


def goes(kind: str) -> str:
    """"it goes in models/<folder>, for '<loader display name>'" for a registered kind."""
    p = _PLACES[kind]
    return f"it goes in models/{p.folder}, for '{loader_name(p.loader)}'{p.how}"


def has_prefix(keys, *prefixes) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def contains(keys, *parts) -> bool:
    return any(p in k for k in keys for p in parts)


def what_is(sd: Mapping, exclude: tuple[str, ...] | str = ()) -> str:
    """Plain words for what the state dict is and where it belongs (never raises)."""
    if isinstance(exclude, str):
        exclude = (exclude,)
    try:
        keys = list(sd)
    except Exception:  # noqa: BLE001 - an identifier never fails
        return "an unreadable model"
    for d in list(_DESCRIBERS):
        if d.kind in exclude:
            continue
        try:
            found = d.describe(sd, keys)
        except Exception:  # noqa: BLE001 - a describer must never be the thing that crashes
            found = None
        if found:
            return found
    if has_prefix(keys, "down_blocks.", "mid_block.", "up_blocks.", "encoder.", "decoder.", "text_model."):
        return "model weights of a diffusers component (a UNet, VAE or text encoder)"
    return f"an unknown model (first keys: {', '.join(map(str, keys[:3])) or 'none'})"
