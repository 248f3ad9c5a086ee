"""One description of a workflow → the two files ComfyUI knows: the canvas (UI) format and the API format.

    g = Graph("upscale", note="…")
    img = g.node("LoadImage", image="visionkit_lions.png")
    up = g.node("VisionKitUpscale", upscale_model=loader.out("upscale_model"), image=img.out("IMAGE"))
    g.to_ui(), g.to_api()

Inputs are given by name: a value for a widget input, `other.out(name_or_index)` for a link. Every widget gets
a value (the node's default unless given), so the files never depend on defaults that may change.

The UI format is what the ComfyUI 0.3.64 frontend (comfyui-frontend-package 1.27) itself saves, checked by the
browser test (tests/test_t3_browser.py loads each file and compares the page's own serialisation and
graphToPrompt with these files):
- nodes: id, type, pos, size, flags, order, mode, inputs (only the sockets: name, type, link; optional ones
  with shape 7), outputs (name, type, links or null), properties {"Node name for S&R": type}, widgets_values;
- widgets_values: the widget inputs in INPUT_TYPES order (required, then optional); an INT input named seed /
  noise_seed or declaring control_after_generate is followed by its control value ("fixed", "randomize", …);
  LoadImage's upload button stores "image";
- order: LiteGraph's execution order (nodes without linked inputs first, in list order, then a
  breadth-first walk over the output links);
- links [id, from node, from slot, to node, to slot, type]; groups, config, extra {ds, frontendVersion},
  version 0.4, last_node_id, last_link_id.
The API format is what the page's graphToPrompt() sends: {id: {inputs, class_type, _meta: {title}}}, widget
values first, then links [node id as string, output slot]; frontend-only nodes (Note) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FRONTEND_VERSION = "1.27.10"  # comfyui-frontend-package pinned by the ComfyUI 0.3.64 snapshot
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")

# The core ComfyUI nodes the workflows use: (required, optional, outputs, display name). An input is
# (name, type, default); a list type is a combo. "UPLOAD" is LoadImage's upload button (canvas only).
CORE_NODES: dict[str, dict] = {
    "LoadImage": {"required": [("image", "COMBO", ""), ("upload", "UPLOAD", "image")], "optional": [],
                  "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")], "title": "Load Image"},
    "SaveImage": {"required": [("images", "IMAGE", None), ("filename_prefix", "STRING", "ComfyUI")],
                  "optional": [], "outputs": [], "title": "Save Image"},
    "PreviewImage": {"required": [("images", "IMAGE", None)], "optional": [], "outputs": [],
                     "title": "Preview Image"},
    "MaskToImage": {"required": [("mask", "MASK", None)], "optional": [], "outputs": [("IMAGE", "IMAGE")],
                    "title": "Convert Mask to Image"},
    "ImageCompositeMasked": {"required": [("destination", "IMAGE", None), ("source", "IMAGE", None),
                                          ("x", "INT", 0), ("y", "INT", 0), ("resize_source", "BOOLEAN", False)],
                             "optional": [("mask", "MASK", None)], "outputs": [("IMAGE", "IMAGE")],
                             "title": "ImageCompositeMasked"},
    "Note": {"required": [("text", "STRING", "")], "optional": [], "outputs": [], "title": "Note",
             "virtual": True},
}


@dataclass
class InputDef:
    name: str
    type: str  # socket type, or one of WIDGET_TYPES / "UPLOAD"
    default: Any
    optional: bool
    control: bool = False  # followed by a control_after_generate value
    multiline: bool = False

    @property
    def widget(self) -> bool:
        return self.type in WIDGET_TYPES or self.type == "UPLOAD"


@dataclass
class NodeDef:
    type: str
    title: str
    inputs: list[InputDef]
    outputs: list[tuple[str, str]]  # (name, type)
    virtual: bool = False  # frontend-only (Note): not in the API format
    output_is_list: tuple = ()


def _input_def(name: str, spec: tuple, optional: bool) -> InputDef:
    typ, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(typ, (list, tuple)):
        kind, default = "COMBO", opts.get("default", typ[0] if typ else "")
    else:
        kind = str(typ)
        default = opts.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind))
        if opts.get("forceInput"):
            kind = "FORCED_" + kind  # a socket, not a widget
    control = kind == "INT" and bool(opts.get("control_after_generate", name in ("seed", "noise_seed")))
    if kind == "COMBO" and opts.get("control_after_generate"):
        raise NotImplementedError(f"{name}: combo inputs with control_after_generate are not supported here")
    return InputDef(name, kind, default, optional, control, bool(opts.get("multiline")))


def node_def_from_class(type_name: str, cls, display_name: str) -> NodeDef:
    """The NodeDef of a V1 node class (INPUT_TYPES, RETURN_TYPES, RETURN_NAMES)."""
    it = cls.INPUT_TYPES()
    ins = [_input_def(n, s, False) for n, s in it.get("required", {}).items()]
    ins += [_input_def(n, s, True) for n, s in it.get("optional", {}).items()]
    types = tuple(cls.RETURN_TYPES)
    names = tuple(getattr(cls, "RETURN_NAMES", None) or types)
    return NodeDef(type_name, display_name, ins, list(zip(names, [str(t) for t in types])),
                   output_is_list=tuple(getattr(cls, "OUTPUT_IS_LIST", ()) or ()))


def core_node_def(type_name: str) -> NodeDef:
    d = CORE_NODES[type_name]
    ins = [InputDef(n, t, v, False, multiline=type_name == "Note") for n, t, v in d["required"]]
    ins += [InputDef(n, t, v, True) for n, t, v in d["optional"]]
    return NodeDef(type_name, d["title"], ins, list(d["outputs"]), virtual=d.get("virtual", False))


@dataclass(frozen=True)
class Out:
    node: Node
    slot: int


@dataclass
class Node:
    graph: Graph
    id: int
    d: NodeDef
    values: dict  # widget name -> value
    links: dict  # socket input name -> Out
    title: str | None = None
    mode: int = 0
    col: int | None = None
    size: list | None = None
    pos: list | None = None
    control: dict = field(default_factory=dict)  # widget name -> control_after_generate value
    extra_ui: dict = field(default_factory=dict)  # e.g. Note colours
    band: int = 0

    def out(self, which: int | str = 0) -> Out:
        if isinstance(which, str):
            names = [n for n, _ in self.d.outputs]
            if which not in names:
                raise KeyError(f"{self.d.type} has no output {which!r}; outputs: {names}")
            which = names.index(which)
        if not 0 <= which < len(self.d.outputs):
            raise IndexError(f"{self.d.type} has {len(self.d.outputs)} outputs, not {which + 1}")
        return Out(self, which)


class Graph:
    def __init__(self, name: str, defs: dict[str, NodeDef]):
        self.name = name
        self.defs = defs
        self.nodes: list[Node] = []

    def node(self, type_name: str, *, _title: str | None = None, _mode: int = 0, _col: int | None = None,
             _band: int = 0, _size=None, _pos=None, _control: dict | None = None, **inputs) -> Node:
        """A node; keyword arguments are its inputs (values or links), the _-prefixed ones its canvas settings:
        title, mode (0 active), column and band (row of columns) of the layout, size, pos, control_after_generate
        values."""
        if type_name not in self.defs:
            raise KeyError(f"unknown node type {type_name!r}")
        d = self.defs[type_name]
        known = {i.name: i for i in d.inputs}
        values, links = {}, {}
        for k, v in inputs.items():
            if k not in known:
                raise KeyError(f"{type_name} has no input {k!r}; inputs: {list(known)}")
            if isinstance(v, Out):
                if known[k].type in ("UPLOAD", "COMBO"):
                    raise ValueError(f"{type_name}.{k} is a {known[k].type} widget; linking it is not supported here")
                want, got = known[k].type, v.node.d.outputs[v.slot][1]
                if want.removeprefix("FORCED_") != got and want != "*":
                    raise TypeError(f"{type_name}.{k} wants {want}, got {got} from {v.node.d.type}")
                links[k] = v
            else:
                if not known[k].widget:
                    raise ValueError(f"{type_name}.{k} is a {known[k].type} socket: give it a link (x.out(...))")
                values[k] = v
        for i in d.inputs:
            if i.widget and i.name not in values:
                values[i.name] = i.default
            if not i.widget and not i.optional and i.name not in links:
                raise ValueError(f"{type_name}: required input {i.name!r} is not connected")
        ctrl = {i.name: (_control or {}).get(i.name, "fixed") for i in d.inputs if i.control}
        for v in ctrl.values():
            if v not in CONTROL_VALUES:
                raise ValueError(f"control_after_generate must be one of {CONTROL_VALUES}")
        n = Node(self, len(self.nodes) + 1, d, values, links, _title, _mode, _col, _size, _pos, ctrl, band=_band)
        self.nodes.append(n)
        return n

    def note(self, text: str, *, width: int = 400, col: int = 0, band: int = 0) -> Node:
        """A Note tall enough for its text (about 52 characters per line at width 400, 13.5 px per line)."""
        per_line = max(20, int(52 * width / 400))
        lines = sum(max(1, -(-len(line) // per_line)) for line in text.splitlines())
        n = self.node("Note", text=text, _size=[width, int(50 + 13.5 * lines)], _col=col, _band=band)
        n.extra_ui = {"color": "#432", "bgcolor": "#653"}
        return n

    # ------------------------------------------------------------ layout
    def _depths(self) -> dict[int, int]:
        depth: dict[int, int] = {}

        def visit(n: Node) -> int:
            if n.id not in depth:
                depth[n.id] = n.col if n.col is not None else (
                    1 + max((visit(o.node) for o in n.links.values()), default=-1))
            return depth[n.id]

        for n in self.nodes:
            visit(n)
        return depth

    @staticmethod
    def estimate_size(n: Node) -> list:
        """About the size the frontend gives the node (LiteGraph: 20 px per socket row, 24 per widget)."""
        if n.size:
            return list(n.size)
        sockets_in = sum(1 for i in n.d.inputs if not i.widget)
        rows = max(sockets_in, len(n.d.outputs))
        widgets = [i for i in n.d.inputs if i.widget and i.type != "UPLOAD"] + [None] * len(n.control)
        multiline = sum(1 for i in widgets if i is not None and i.multiline)
        h = rows * 20 + 6
        if widgets or n.d.type == "LoadImage":
            h += 8 + 24 * (len(widgets) - multiline) + 90 * multiline
        if n.d.type == "LoadImage":
            h += 24 + 260  # upload button and the image preview
        if n.d.type in ("PreviewImage", "SaveImage"):
            h += 250  # room for the image
        w = 400 if multiline else 340
        return [w, h]

    def layout(self, x0: int = 0, y0: int = 0, gap_x: int = 50, gap_y: int = 40) -> None:
        """Columns by link depth (or the node's _col), a column as wide as its widest node. Bands (_band) are
        rows: a band starts below what the bands above it put into the columns it uses."""
        depth = self._depths()
        for n in self.nodes:
            n.size = self.estimate_size(n)
        widths: dict[int, float] = {}
        for n in self.nodes:
            widths[depth[n.id]] = max(widths.get(depth[n.id], 0), n.size[0])
        xs, x = {}, x0
        for c in range(max(widths) + 1 if widths else 0):
            xs[c] = x
            x += widths.get(c, 0) + gap_x if c in widths else 0
        bottoms: dict[int, float] = {}  # per column: where the next node may start
        for band in sorted({n.band for n in self.nodes}):
            members = [m for m in self.nodes if m.band == band]
            top = max((bottoms.get(depth[m.id], y0) for m in members), default=y0)
            ys: dict[int, float] = {}
            for n in members:
                c = depth[n.id]
                y = ys.get(c, top)
                if n.pos is None:
                    n.pos = [xs[c], y]
                ys[c] = n.pos[1] + n.size[1] + gap_y + 30  # the title bar sits above pos
            for c, y in ys.items():
                bottoms[c] = y + 20

    # ------------------------------------------------------------ serialisation
    @staticmethod
    def _slots(n: Node) -> list[InputDef]:
        """The node's input slots on the canvas: its sockets, then the widgets that are linked (a widget with a
        link is an input socket of its own: {"name", "type", "widget": {"name"}, "link"}; its value stays in
        widgets_values, as the frontend saves it)."""
        return [i for i in n.d.inputs if not i.widget] + [i for i in n.d.inputs if i.widget and i.name in n.links]

    def _links(self) -> list[tuple[int, Node, int, Node, int, str]]:
        out, lid = [], 0
        for n in self.nodes:
            sockets = self._slots(n)
            for slot, i in enumerate(sockets):
                if i.name in n.links:
                    o = n.links[i.name]
                    lid += 1
                    out.append((lid, o.node, o.slot, n, slot, o.node.d.outputs[o.slot][1]))
        return out

    def _order(self, links) -> dict[int, int]:
        """LiteGraph's computeExecutionOrder: nodes without linked inputs, then breadth-first over links."""
        remaining = {n.id: len(n.links) for n in self.nodes}
        by_src: dict[int, list] = {}
        for lk in links:
            by_src.setdefault(lk[1].id, []).append(lk)
        queue = [n for n in self.nodes if remaining[n.id] == 0]
        order: list[Node] = []
        while queue:
            n = queue.pop(0)
            order.append(n)
            for slot in range(len(n.d.outputs)):
                for lk in (x for x in by_src.get(n.id, []) if x[2] == slot):
                    remaining[lk[3].id] -= 1
                    if remaining[lk[3].id] == 0:
                        queue.append(lk[3])
        if len(order) != len(self.nodes):
            raise ValueError(f"workflow {self.name}: the graph has a cycle")
        return {n.id: i for i, n in enumerate(order)}

    def to_ui(self) -> dict:
        if any(n.pos is None for n in self.nodes):
            self.layout()
        links = self._links()
        order = self._order(links)
        nodes = []
        for n in self.nodes:
            sockets = self._slots(n)
            ins = []
            for slot, i in enumerate(sockets):
                lk = next((x[0] for x in links if x[3] is n and x[4] == slot), None)
                entry = {"name": i.name}
                if i.optional:
                    entry["shape"] = 7
                entry["type"] = i.type.removeprefix("FORCED_")
                if i.widget:
                    entry["widget"] = {"name": i.name}
                entry["link"] = lk
                ins.append(entry)
            outs = []
            for slot, (name, typ) in enumerate(n.d.outputs):
                ids = [x[0] for x in links if x[1] is n and x[2] == slot]
                entry = {"name": name, "type": typ}
                if slot < len(n.d.output_is_list) and n.d.output_is_list[slot]:
                    entry["shape"] = 6
                entry["links"] = ids or None
                outs.append(entry)
            wv = []
            for i in n.d.inputs:
                if i.widget:
                    wv.append(n.values[i.name])
                    if i.control:
                        wv.append(n.control[i.name])
            node = {"id": n.id, "type": n.d.type, "pos": list(n.pos), "size": list(n.size), "flags": {},
                    "order": order[n.id], "mode": n.mode, "inputs": ins, "outputs": outs,
                    "properties": {} if n.d.virtual else {"Node name for S&R": n.d.type},
                    "widgets_values": wv}
            if n.title:
                node["title"] = n.title
            node.update(n.extra_ui)
            nodes.append(node)
        return {
            "id": _uuid_for(self.name), "revision": 0,
            "last_node_id": max((n.id for n in self.nodes), default=0),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": [[lid, a.id, sa, b.id, sb, typ] for lid, a, sa, b, sb, typ in links],
            "groups": [], "config": {},
            "extra": {"ds": self._view(), "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }

    def _view(self, width: int = 1700, height: int = 900) -> dict:
        """A view that shows the whole graph in a window of about width × height pixels."""
        x0 = min(n.pos[0] for n in self.nodes) - 20
        y0 = min(n.pos[1] for n in self.nodes) - 50
        x1 = max(n.pos[0] + n.size[0] for n in self.nodes) + 20
        y1 = max(n.pos[1] + n.size[1] for n in self.nodes) + 20
        scale = round(min(1.0, width / (x1 - x0), height / (y1 - y0)), 3)
        return {"scale": scale, "offset": [round(-x0 + 40 / scale, 1), round(-y0 + 40 / scale, 1)]}

    def to_api(self) -> dict:
        out = {}
        for n in self.nodes:
            if n.d.virtual:  # Note: frontend only
                continue
            if n.mode != 0:  # the page leaves muted nodes out and wires bypassed ones through: not done here
                raise NotImplementedError(f"{n.d.type}: only active nodes (mode 0) are supported")
            inputs = {i.name: n.values[i.name] for i in n.d.inputs if i.widget and i.type != "UPLOAD"}
            for i in n.d.inputs:
                if i.name in n.links:
                    o = n.links[i.name]
                    inputs[i.name] = [str(o.node.id), o.slot]
            out[str(n.id)] = {"inputs": inputs, "class_type": n.d.type, "_meta": {"title": n.title or n.d.title}}
        return out


def _uuid_for(name: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"visionkit/workflows/{name}"))
