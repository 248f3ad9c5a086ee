"""A ComfyUI HTTP client, standard library only: queue a prompt, follow it, fetch what it made.

    from vkclient import Client, load_workflow, apply_overrides

    client = Client("http://127.0.0.1:8188")
    prompt = apply_overrides(load_workflow("workflows/api/upscale.json"), ["2.tile_size=256"])
    job = client.queue(prompt, images={"1.image": "photo.png"})   # uploads photo.png, sets node 1's input
    result = job.wait(progress=print, timeout=600)                  # websocket progress, /history fallback
    paths = client.download_outputs(result, "out/")                 # the images, from /view

Errors (results.py) are exceptions with messages meant for people: ServerUnreachable (nothing answers at the URL),
PromptRejected (HTTP 400 from /prompt; `.node_errors`, and str() is the readable per-node listing),
ExecutionFailed (a node raised; `.node_id`, `.node_type`, `.exception_message`), JobTimeout.
"""
from __future__ import annotations

import json
import mimetypes
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .job import Job
from .results import ComfyClientError, PromptRejected, Result, ServerError, ServerUnreachable
from .websocket import WebSocket, WebSocketError
from .workflow import WorkflowError, assign_images, check_prompt

DEFAULT_SERVER = "http://127.0.0.1:8188"


def _safe_name(name: str) -> str:
    name = os.path.basename(str(name).replace("\\", "/")) or "output"
    return re.sub(r"[^\w.\- ()\[\]]", "_", name).lstrip(".") or "output"


class Client:
    """One ComfyUI server. Thread-safe: several jobs may be queued and waited from several threads.

    >>> client = Client("http://127.0.0.1:8188")           # doctest: +SKIP
    >>> client.queue(prompt).wait().outputs                   # doctest: +SKIP
    """

    def __init__(self, url: str = DEFAULT_SERVER, timeout: float = 30.0):
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {url!r} must look like http://HOST:PORT")
        self.url = url
        self.timeout = timeout
        # ComfyUI servers are reached directly (loopback, LAN): environment proxies are not used.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._uploads: dict = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ------------------------------------------------------------ HTTP
    def request(self, method: str, path: str, body=None, data: bytes | None = None, headers=None,
                raw: bool = False, ok=(200,)):
        """(status, parsed JSON / text / bytes when raw). Raises ServerUnreachable on connection errors
        and ServerError for a status not in `ok`."""
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError):
                raise ServerUnreachable(f"ComfyUI at {self.url} did not answer {method} {path.split('?')[0]} "
                                        f"within {self.timeout:g} s") from None
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.url} ({reason}); is it running? Start it "
                                    f"with ./scripts/start, or pass the right --server URL") from None
        if not raw:
            text = payload.decode("utf-8", errors="replace")
            try:
                payload = json.loads(text) if text.strip() else None
            except ValueError:
                payload = text
        if status not in ok:
            shown = payload if isinstance(payload, str) else (
                "<binary>" if isinstance(payload, bytes) else json.dumps(payload, default=str))
            raise ServerError(f"{method} {path} on {self.url} answered HTTP {status}: {str(shown)[:1000]}",
                              status, payload)
        return status, payload

    def get(self, path: str, **params):
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.request("GET", path)[1]

    def post(self, path: str, body=None):
        return self.request("POST", path, {} if body is None else body)[1]

    # ------------------------------------------------------------ server state
    def system_stats(self) -> dict:
        return self.get("/system_stats")

    def queue_info(self) -> dict:
        """{"running": n, "pending": n} from /queue."""
        q = self.get("/queue") or {}
        return {"running": len(q.get("queue_running", [])), "pending": len(q.get("queue_pending", []))}

    def history(self, prompt_id: str) -> dict | None:
        """The /history entry of a prompt, or None while it has none."""
        return (self.get(f"/history/{urllib.parse.quote(prompt_id)}") or {}).get(prompt_id)

    def object_info(self, class_type: str) -> dict | None:
        try:
            return (self.get(f"/object_info/{urllib.parse.quote(class_type)}") or {}).get(class_type)
        except ServerError:
            return None

    def input_names(self, class_type: str) -> set:
        """Every input the server knows for a node class (required, optional), empty when unknown."""
        info = self.object_info(class_type) or {}
        spec = info.get("input") or {}
        return set(spec.get("required") or {}) | set(spec.get("optional") or {})

    def cancel(self, prompt_id: str) -> str | None:
        """Take a prompt off the server: removed from the queue when waiting, interrupted when running.
        Returns "deleted", "interrupted" or None (not queued any more). Only a prompt seen running is
        interrupted (older servers ignore the prompt id of /interrupt and would stop any prompt)."""
        q = self.get("/queue") or {}

        def ids(items):
            return {item[1] for item in items or [] if isinstance(item, (list, tuple)) and len(item) > 1}
        if prompt_id in ids(q.get("queue_pending")):
            self.post("/queue", {"delete": [prompt_id]})
            return "deleted"
        if prompt_id in ids(q.get("queue_running")):
            self.post("/interrupt", {"prompt_id": prompt_id})
            return "interrupted"
        return None

    # ------------------------------------------------------------ files
    def upload_image(self, source, name: str | None = None, subfolder: str = "", overwrite: bool = False) -> str:
        """Upload an image (a path, or bytes with `name`) to the server's input folder through
        /upload/image; returns the value for a LoadImage `image` input ("name" or "subfolder/name").
        The same file is uploaded once per client."""
        if isinstance(source, (bytes, bytearray)):
            content, name = bytes(source), name or "upload.png"
            key = None
        else:
            path = Path(source)
            if not path.is_file():
                raise WorkflowError(f"image file {str(path)!r} does not exist")
            st = path.stat()
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns, subfolder)
            with self._lock:
                if key in self._uploads:
                    return self._uploads[key]
            content, name = path.read_bytes(), name or path.name
        boundary = "----vkclient" + uuid.uuid4().hex
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        fields = [("type", "input"), ("subfolder", subfolder)] + ([("overwrite", "true")] if overwrite else [])
        body = bytearray()
        for k, v in fields:
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").encode()
        quoted = name.replace('"', "%22").replace("\r", "").replace("\n", "")
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{quoted}\"\r\n"
                 f"Content-Type: {ctype}\r\n\r\n").encode("utf-8")
        body += content + f"\r\n--{boundary}--\r\n".encode()
        _, out = self.request("POST", "/upload/image", data=bytes(body),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if not isinstance(out, dict) or "name" not in out:
            raise ServerError(f"/upload/image on {self.url} answered {out!r}, not a file name", 200, out)
        value = f"{out['subfolder']}/{out['name']}" if out.get("subfolder") else out["name"]
        if key is not None:
            with self._lock:
                self._uploads[key] = value
        return value

    def download(self, ref: dict, dest_dir, name: str | None = None) -> Path:
        """Fetch one output file ({"filename", "subfolder", "type"}, as in /history outputs) from /view into
        `dest_dir`; an existing file is never overwritten (a numbered name is used). Returns the path."""
        params = {"filename": ref["filename"], "subfolder": ref.get("subfolder", ""),
                  "type": ref.get("type", "output")}
        _, content = self.request("GET", "/view?" + urllib.parse.urlencode(params), raw=True)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        base = _safe_name(name or ref["filename"])
        stem, ext = os.path.splitext(base)
        for i in range(100000):
            path = dest_dir / (base if i == 0 else f"{stem}_{i}{ext}")
            try:
                with open(path, "xb") as f:  # exclusive: concurrent jobs never share a name
                    f.write(content)
                return path
            except FileExistsError:
                continue
        raise ComfyClientError(f"no free file name for {base} in {dest_dir}")

    def download_outputs(self, result: Result, dest_dir, types=("output", "temp")) -> list[Path]:
        """Download every file of a finished job; the paths are also added to `result.files`."""
        paths = [self.download(ref, dest_dir) for ref in result.file_refs(types)]
        result.files.extend(paths)
        return paths

    # ------------------------------------------------------------ prompts
    def prepare(self, prompt: dict, images=None) -> dict:
        """A copy of `prompt` with images uploaded and set. `images`: a {"node.input": path} mapping, or a
        list whose items are paths (they go to the LoadImage nodes in id order) or ("node.input", path)
        pairs; node = id, title or unique class_type."""
        check_prompt(prompt)
        prompt = json.loads(json.dumps(prompt))
        for (node_id, input_name), path in assign_images(prompt, images):
            prompt[node_id].setdefault("inputs", {})[input_name] = self.upload_image(path)
        return prompt

    def queue(self, prompt: dict, images=None, front: bool = False, extra_data: dict | None = None,
              websocket: bool = True) -> "Job":
        """Queue a prompt (after uploading `images`, see prepare) and return its Job.

        The job's websocket is opened before the prompt is posted, so no progress message is missed; when
        it cannot be opened the job follows /history instead. A rejected prompt raises PromptRejected."""
        prompt = self.prepare(prompt, images)
        client_id = uuid.uuid4().hex
        ws, ws_error = None, None
        if websocket:
            try:
                ws = WebSocket.connect(self._ws_url(client_id), timeout=self.timeout)
            except (OSError, WebSocketError) as e:
                ws_error = str(e) or type(e).__name__
        body = {"prompt": prompt, "client_id": client_id}
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = extra_data
        try:
            status, out = self.request("POST", "/prompt", body, ok=(200, 400))
        except BaseException:
            if ws is not None:
                ws.close()
            raise
        if status == 400:
            if ws is not None:
                ws.close()
            raise PromptRejected(out, prompt, self.url)
        if not isinstance(out, dict) or "prompt_id" not in out:
            if ws is not None:
                ws.close()
            raise ServerError(f"/prompt on {self.url} answered without a prompt_id: {out!r}", status, out)
        return Job(self, out["prompt_id"], prompt, client_id, ws, ws_error, out.get("node_errors") or {},
                   out.get("number"))

    def run(self, prompt: dict, images=None, output_dir=None, progress=None, timeout: float | None = None,
            types=("output", "temp")) -> Result:
        """queue + wait (+ download_outputs when `output_dir` is given)."""
        result = self.queue(prompt, images).wait(progress=progress, timeout=timeout)
        if output_dir is not None:
            self.download_outputs(result, output_dir, types)
        return result

    def _ws_url(self, client_id: str) -> str:
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path + "/ws",
                                        urllib.parse.urlencode({"clientId": client_id}), ""))
