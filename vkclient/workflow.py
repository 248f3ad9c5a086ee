"""API-format workflows: load them, change inputs, find image inputs, explain what the server rejected.

    prompt = load_workflow("workflows/api/upscale.json")
    prompt = apply_overrides(prompt, ["5.seed=3", "Upscale.tile_size=256", 'KSampler.sampler_name="euler"'])

An API-format workflow ("prompt") maps node ids to {"class_type": ..., "inputs": {...}, "_meta": {"title"}}.
The canvas saves another format ({"nodes": [...], "links": [...]}); `load_workflow` recognises it and
says how to export the API format instead of failing later with a cryptic server error.
"""
from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

EXPORT_HINT = ("In ComfyUI use Workflow → Export (API) to save the API format (older menus: Settings → enable "
               "Dev mode, then 'Save (API Format)'); the pack ships API twins of its workflows in workflows/api/.")
SEED_INPUTS = ("seed", "noise_seed")
LOAD_IMAGE_CLASSES = ("LoadImage", "LoadImageMask", "LoadImageOutput")


class WorkflowError(ValueError):
    """The workflow file, an override or an image target is wrong; the message says how to fix it."""


# ---------------------------------------------------------------- loading
def is_ui_format(data) -> bool:
    """True for what the canvas saves (nodes and links lists) rather than the API format."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def check_prompt(prompt, source: str = "the workflow") -> dict:
    """Raise WorkflowError unless `prompt` is an API-format graph; returns it."""
    if is_ui_format(prompt):
        raise WorkflowError(f"{source} is a canvas (UI-format) workflow, not the API format that /prompt takes. "
                            + EXPORT_HINT)
    if not isinstance(prompt, dict) or not prompt:
        raise WorkflowError(f"{source} is not an API-format workflow: expected a JSON object of nodes "
                            f'({{"1": {{"class_type": ..., "inputs": {{...}}}}, ...}}), got '
                            f"{type(prompt).__name__ if prompt else 'an empty object'}")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise WorkflowError(f"{source}: node {node_id!r} has no class_type, so this is not an API-format "
                                f"workflow. " + EXPORT_HINT)
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"{source}: node {node_id!r} ({node['class_type']}) has inputs that are not an object")
    return prompt


def load_workflow(path) -> dict:
    """Read an API-format workflow from a JSON file.

    Also accepts the body of a /prompt request ({"prompt": {...}, ...}). A canvas-format file raises
    WorkflowError naming the file and how to export the API format.

    >>> prompt = load_workflow("workflows/api/upscale.json")   # doctest: +SKIP
    >>> sorted(prompt)[:2]                                       # doctest: +SKIP
    ['1', '2']
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise WorkflowError(f"workflow file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(f"cannot read workflow file {str(p)!r}: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise WorkflowError(f"{str(p)!r} is not valid JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]
    return check_prompt(data, repr(str(p)))


# ---------------------------------------------------------------- nodes by id, title or class
def node_label(prompt: dict, node_id: str) -> str:
    node = prompt[node_id]
    title = (node.get("_meta") or {}).get("title")
    cls = node.get("class_type", "?")
    return f"{node_id} ({cls}{f', {title!r}' if title and title != cls else ''})"


def find_node(prompt: dict, ref: str) -> str:
    """The id of the node `ref` names: its id, its title (_meta.title) or its class_type, the last two only
    when exactly one node matches (case-insensitive when nothing matches exactly)."""
    ref = str(ref).strip()
    if ref in prompt:
        return ref
    for fold in (False, True):
        def same(a, b):
            return a is not None and (a.casefold() == b.casefold() if fold else a == b)
        for what, key in (("title", lambda n: (n.get("_meta") or {}).get("title")),
                          ("class_type", lambda n: n.get("class_type"))):
            hits = [nid for nid, node in prompt.items() if same(key(node), ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise WorkflowError(f"{ref!r} matches the {what} of {len(hits)} nodes: "
                                    f"{', '.join(node_label(prompt, h) for h in hits)}; use the node id instead")
    raise WorkflowError(f"no node {ref!r} in the workflow (a node is named by its id, its title or its "
                        f"class_type). Nodes: {', '.join(node_label(prompt, n) for n in _sorted_ids(prompt))}")


def _sorted_ids(prompt: dict) -> list[str]:
    return sorted(prompt, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))


_TARGET = re.compile(r"^(?P<node>.+)\.(?P<input>[A-Za-z_][A-Za-z0-9_]*)$")


def split_target(target: str, what: str = "override"):
    """'node.input' -> ('node', 'input'); the node part may itself contain dots (titles)."""
    m = _TARGET.match(target.strip())
    if not m:
        raise WorkflowError(f"{what} {target!r} must be NODE.INPUT (e.g. 5.seed or KSampler.steps), where NODE is "
                            f"a node id, title or class_type")
    return m.group("node").strip(), m.group("input")


def parse_value(text: str):
    """JSON when it parses (3 → int, 0.5 → float, true, [..], "quoted"), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(prompt: dict, overrides, known_inputs=None) -> dict:
    """A copy of `prompt` with `node.input=value` overrides applied.

    `overrides` is an iterable of "NODE.INPUT=VALUE" strings or a {"NODE.INPUT": value} mapping (values
    there are used as they are). NODE is a node id, title or unique class_type. VALUE is parsed as JSON
    when possible (`5.seed=3` sets the int 3, `6.text=a cat` the string "a cat", `6.text="3"` the string "3").
    An input the node does not have in the workflow is an error listing its inputs, unless
    `known_inputs(class_type)` (e.g. from the server's /object_info) returns a collection that contains it.

    >>> p = {"5": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}}
    >>> apply_overrides(p, ["5.seed=3", "KSampler.steps=4"])["5"]["inputs"]
    {'seed': 3, 'steps': 4}
    """
    out = copy.deepcopy(prompt)
    items = overrides.items() if isinstance(overrides, dict) else [_split_assignment(o) for o in overrides]
    for target, value in items:
        node_ref, name = split_target(target)
        node_id = find_node(out, node_ref)
        node = out[node_id]
        inputs = node.setdefault("inputs", {})
        if name not in inputs:
            allowed = known_inputs(node["class_type"]) if known_inputs else None
            if not allowed or name not in allowed:
                listed = sorted(set(inputs) | set(allowed or ()))
                raise WorkflowError(f"node {node_label(out, node_id)} has no input {name!r}; its inputs: "
                                    f"{', '.join(listed) or '(none)'}")
        inputs[name] = value
    return out


def _split_assignment(text: str):
    if not isinstance(text, str) or "=" not in text:
        raise WorkflowError(f"override {text!r} must be NODE.INPUT=VALUE (e.g. 5.seed=3)")
    target, _, value = text.partition("=")
    return target, parse_value(value)


def randomize_seeds(prompt: dict, rng: random.Random | None = None) -> dict:
    """A copy with every literal `seed` / `noise_seed` input set to a random value in [0, 2**32)."""
    rng = rng or random.Random()
    out = copy.deepcopy(prompt)
    for node in out.values():
        for name in SEED_INPUTS:
            value = node.get("inputs", {}).get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                node["inputs"][name] = rng.randrange(2 ** 32)
    return out


def image_inputs(prompt: dict) -> list[tuple[str, str]]:
    """(node id, input name) of the image-file inputs of LoadImage-like nodes, in node-id order."""
    found = []
    for node_id in _sorted_ids(prompt):
        node = prompt[node_id]
        if node.get("class_type") in LOAD_IMAGE_CLASSES and "image" in node.get("inputs", {}):
            found.append((node_id, "image"))
    return found


def assign_images(prompt: dict, images) -> list:
    """[((node id, input name), path), ...] for `images`: a {"node.input": path} mapping, or a list of
    paths (to the LoadImage nodes in id order) and ("node.input", path) pairs. Uploads nothing."""
    if not images:
        return []
    if isinstance(images, dict):
        items = list(images.items())
    else:
        items = [it if isinstance(it, tuple) else (None, it) for it in images]
    free = image_inputs(prompt)
    resolved = []
    for target, path in items:
        if target is None:
            continue
        node_ref, input_name = split_target(target, "image target")
        node_id = find_node(prompt, node_ref)
        resolved.append(((node_id, input_name), path))
        free = [t for t in free if t != (node_id, input_name)]
    plain = [path for target, path in items if target is None]
    if len(plain) > len(free):
        raise WorkflowError(f"{len(plain)} image(s) given without a target, but the workflow has {len(free)} "
                            f"LoadImage node(s) left to take them; name the input: --image NODE.image=PATH")
    return resolved + list(zip(free, plain))


# ---------------------------------------------------------------- what the server said
def _short(value, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _grouped(errors: list) -> list:
    """[(input names, message, details)]: one entry for errors that differ only by input. ComfyUI gives a
    node's VALIDATE_INPUTS message to every input that function takes, as "name - message" details."""
    groups: dict = {}
    for err in errors:
        if not isinstance(err, dict):
            groups.setdefault(((), _short(err), ""), [])
            continue
        name = (err.get("extra_info") or {}).get("input_name")
        details = str(err.get("details") or "")
        if name and details.startswith(f"{name} - "):
            details = details[len(name) + 3:]
        key = (err.get("type"), err.get("message", err.get("type", "error")), details)
        names = groups.setdefault(key, [])
        if name and name not in names:
            names.append(name)
    return [(names, message, details) for (_, message, details), names in groups.items()]


def format_node_errors(body, prompt: dict | None = None) -> str:
    """A /prompt rejection (HTTP 400 body: {"error": {...}, "node_errors": {...}}) as readable lines: per
    node its id, class and title, then per error the input, the message and the details."""
    if not isinstance(body, dict):
        return f"the server rejected the prompt: {_short(body)}"
    error = body.get("error")
    lines = []
    if isinstance(error, dict):
        head = error.get("message") or error.get("type") or "rejected"
        lines.append(f"the server rejected the prompt: {head}")
        if not body.get("node_errors") and error.get("details"):
            lines.append(f"  {_short(error['details'])}")
        if "does not exist" in str(head):
            lines.append("  (a node type the server does not know: is its custom node pack installed there, "
                         "and did ComfyUI import it without IMPORT FAILED?)")
    elif error:
        lines.append(f"the server rejected the prompt: {_short(error)}")
    else:
        lines.append("the server rejected the prompt")
    for node_id, entry in sorted((body.get("node_errors") or {}).items(), key=lambda kv: str(kv[0])):
        entry = entry if isinstance(entry, dict) else {"errors": [entry]}
        cls = entry.get("class_type", "?")
        title = ((prompt or {}).get(node_id, {}).get("_meta") or {}).get("title")
        shown_title = f", {title!r}" if title and title != cls else ""
        lines.append(f"  node {node_id} ({cls}{shown_title}):")
        for names, message, details in _grouped(entry.get("errors") or []):
            where = (f"input {names[0]!r}: " if len(names) == 1 else
                     f"inputs {', '.join(repr(n) for n in names)}: " if names else "")
            lines.append(f"    - {where}{message}")
            if details and details != message:
                lines.append(f"      {_short(details)}")
    return "\n".join(lines)
