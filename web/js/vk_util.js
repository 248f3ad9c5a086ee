// VisionKit canvas extension: small helpers shared by the editor, the cache panel and the model help.
// (Loaded by ComfyUI like every .js file under web/; it registers nothing itself.)
import { api } from "../../../scripts/api.js";

/** GET a VisionKit route; the parsed JSON, or an Error whose message says what failed. */
export async function getJSON(path) {
  const res = await api.fetchApi(path, { cache: "no-store" });
  if (!res.ok) throw new Error(`GET ${path} answered HTTP ${res.status}`);
  return res.json();
}

/** POST JSON to a VisionKit route; the parsed answer (an Error with the server's message on failure). */
export async function postJSON(path, body) {
  const res = await api.fetchApi(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) throw new Error(data?.error || `POST ${path} answered HTTP ${res.status}`);
  return data;
}

/** A DOM element: el("button", {className: "x", onclick() {...}, dataset: {...}}, "text", child, ...). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function humanBytes(n) {
  if (!Number.isFinite(n)) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** Add a <style> once per id (the extension ships no separate CSS file to load). */
export function injectStyle(id, css) {
  if (document.getElementById(id)) return;
  document.head.append(el("style", { id }, css));
}

/** The node's class id (node.type may be a custom title for group/virtual nodes). */
export function nodeClass(node) {
  return node?.comfyClass ?? node?.type;
}

/** Every node of the current graph (the root graph; subgraphs are visited too when present). */
export function allNodes(graph) {
  const out = [];
  const visit = (g, depth) => {
    for (const n of g?._nodes ?? g?.nodes ?? []) {
      out.push(n);
      if (n.subgraph && depth < 8) visit(n.subgraph, depth + 1);
    }
  };
  visit(graph, 0);
  return out;
}
