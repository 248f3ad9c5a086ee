"""A loopback fake of ComfyUI's HTTP + websocket API, standard library only, for the client's error paths.

    with FakeComfy() as fake:
        fake.fail_node = "2"            # that node raises while "running"
        ... Client(fake.url) ...
        fake.prompts, fake.uploads      # what the client sent

It speaks the parts of ComfyUI 0.3.64's protocol the client uses, with the same shapes: POST /prompt
(200 {"prompt_id", "number", "node_errors"} or a 400 body set in `reject`), /history/<id>, /queue,
/interrupt, /object_info/<class>, multipart /upload/image (a taken name gets " (1)", like ComfyUI),
/view, and /ws?clientId=... with status / execution_start / executing / progress / executed /
execution_error / execution_success / executing-None messages sent to that client only. The websocket
side also sends a binary preview frame, a fragmented message and a ping, so the client's frame reader is
exercised. Executing a prompt: nodes in id order; a SaveImage node "saves" the bytes of the image that
the prompt's LoadImage node names (so a download proves the upload, the rename and the /view fetch).
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import importlib.util
import json
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import ROOT

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def import_vkclient():
    """The repository's vkclient package, imported from its folder (the repository root is not put on
    sys.path: its models/ and nodes/ folders must not become top-level packages in the test process)."""
    if "vkclient" in sys.modules:
        return sys.modules["vkclient"]
    spec = importlib.util.spec_from_file_location("vkclient", ROOT / "vkclient" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "vkclient")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vkclient"] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop("vkclient", None)
        raise
    return mod


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(n)
    elif n < 65536:
        head.append(126)
        head += struct.pack(">H", n)
    else:
        head.append(127)
        head += struct.pack(">Q", n)
    return bytes(head) + payload


class _Socket:
    """The server side of one websocket (frames are sent unmasked, as a server does)."""

    def __init__(self, conn: socket.socket):
        self.conn, self.lock, self.open = conn, threading.Lock(), True

    def send_raw(self, data: bytes) -> None:
        with self.lock:
            if self.open:
                try:
                    self.conn.sendall(data)
                except OSError:
                    self.open = False

    def send_json(self, kind: str, data: dict, fragmented: bool = False) -> None:
        payload = json.dumps({"type": kind, "data": data}).encode()
        if fragmented and len(payload) > 4:
            half = len(payload) // 2
            self.send_raw(_frame(0x1, payload[:half], fin=False) + _frame(0x9, b"hi") + _frame(0x0, payload[half:]))
        else:
            self.send_raw(_frame(0x1, payload))

    def close(self) -> None:
        self.send_raw(_frame(0x8, struct.pack(">H", 1000)))
        with self.lock:
            self.open = False
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeComfy:
    def __init__(self):
        # behaviour, set by tests
        self.reject: dict | None = None      # a 400 body for POST /prompt
        self.fail_node: str | None = None    # this node raises while executing
        self.fail_message = "boom: the tile is too large"
        self.hang = False                    # accepted prompts never run
        self.ws_mode = "ok"                  # ok | refuse (404) | drop (closes after the first message)
        self.node_delay = 0.0                # seconds per executed node
        self.load = 0                        # prompts of other users in /queue
        self.object_info: dict = {}
        # what happened
        self.prompts: list[dict] = []        # bodies of accepted POST /prompt
        self.uploads: list[dict] = []        # {"name", "fields", "content"}
        self.files: dict = {}                # (type, subfolder, filename) -> bytes
        self.history: dict = {}
        self.cancelled: list = []            # ("delete", ids) / ("interrupt", body)
        self.ws_connects = 0
        self.pongs = 0
        self.running = 0
        self.max_running = 0
        self.running_ids: list = []
        self.pending_ids: list = []          # prompts that `hang` keeps waiting
        self.intervals: list = []            # (start, end) monotonic seconds of each executed prompt
        self._sockets: dict[str, _Socket] = {}
        self._lock = threading.Lock()
        self._counter = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body=None, ctype="application/json", raw: bytes | None = None):
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                if url.path == "/ws":
                    return fake._websocket(self, q.get("clientId", ""))
                if url.path.startswith("/history/"):
                    pid = urllib.parse.unquote(url.path[len("/history/"):])
                    with fake._lock:
                        entry = fake.history.get(pid)
                    return self._send(200, {pid: entry} if entry else {})
                if url.path == "/queue":  # items are [number, prompt_id, prompt, extra_data, outputs]
                    with fake._lock:
                        running = [[0, "other", {}, {}, []]] * min(fake.load, 1) + [
                            [0, pid, {}, {}, []] for pid in fake.running_ids]
                        pending = [[0, "other", {}, {}, []]] * max(fake.load - 1, 0) + [
                            [0, pid, {}, {}, []] for pid in fake.pending_ids]
                    return self._send(200, {"queue_running": running, "queue_pending": pending})
                if url.path.startswith("/object_info/"):
                    cls = urllib.parse.unquote(url.path[len("/object_info/"):])
                    return self._send(200, {cls: fake.object_info[cls]} if cls in fake.object_info else {})
                if url.path == "/view":
                    key = (q.get("type", "output"), q.get("subfolder", ""), q.get("filename", ""))
                    if key in fake.files:
                        return self._send(200, raw=fake.files[key], ctype="image/png")
                    return self._send(404, raw=b"404: Not Found", ctype="text/plain")
                if url.path == "/system_stats":
                    return self._send(200, {"system": {}, "devices": []})
                self._send(404, raw=b"404: Not Found", ctype="text/plain")

            def do_POST(self):
                url = urllib.parse.urlsplit(self.path)
                body = self._body()
                if url.path == "/prompt":
                    return fake._post_prompt(self, json.loads(body))
                if url.path == "/upload/image":
                    return fake._upload(self, body)
                if url.path == "/queue":
                    fake.cancelled.append(("delete", json.loads(body).get("delete")))
                    return self._send(200)
                if url.path == "/interrupt":
                    fake.cancelled.append(("interrupt", json.loads(body or b"{}")))
                    return self._send(200)
                self._send(404, raw=b"404: Not Found", ctype="text/plain")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "FakeComfy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for s in list(self._sockets.values()):
            s.close()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------ websocket
    def _websocket(self, handler, client_id: str):
        if self.ws_mode == "refuse" or handler.headers.get("Upgrade", "").lower() != "websocket":
            return handler._send(404, raw=b"404: Not Found", ctype="text/plain")
        key = handler.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        handler.send_response(101)
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.end_headers()
        handler.wfile.flush()
        sock = _Socket(handler.connection)
        with self._lock:
            self.ws_connects += 1
            self._sockets[client_id] = sock
        sock.send_json("status", {"status": {"exec_info": {"queue_remaining": self.load}}, "sid": client_id})
        if self.ws_mode == "drop":
            sock.close()
        # read (and mostly ignore) what the client sends until it closes
        conn = handler.connection
        conn.settimeout(None)
        buf = b""
        try:
            while sock.open:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 6:
                    opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
                    if len(buf) < 6 + n:
                        break
                    buf = buf[6 + n:]
                    if opcode == 0xA:
                        self.pongs += 1
                    if opcode == 0x8:
                        sock.open = False
        except OSError:
            pass
        handler.close_connection = True

    def _emit(self, client_id: str, kind: str, data: dict, **kw) -> None:
        sock = self._sockets.get(client_id)
        if sock is not None:
            sock.send_json(kind, data, **kw)

    # ------------------------------------------------------------ prompts
    def _post_prompt(self, handler, body: dict):
        if self.reject is not None:
            return handler._send(400, self.reject)
        with self._lock:
            self._counter += 1
            number = self._counter
        pid = str(uuid.uuid4())
        self.prompts.append(body)
        handler._send(200, {"prompt_id": pid, "number": number, "node_errors": {}})
        if self.hang:
            with self._lock:
                self.pending_ids.append(pid)
        else:
            threading.Thread(target=self._execute, args=(pid, body["prompt"], body.get("client_id")),
                             daemon=True).start()

    def _execute(self, pid: str, prompt: dict, cid: str) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.running_ids.append(pid)
        t0 = time.monotonic()
        try:
            self._run_nodes(pid, prompt, cid)
        finally:
            with self._lock:
                self.running -= 1
                self.running_ids.remove(pid)
                self.intervals.append((t0, time.monotonic()))

    def _run_nodes(self, pid: str, prompt: dict, cid: str) -> None:
        time.sleep(0.05)
        self._emit(cid, "status", {"status": {"exec_info": {"queue_remaining": 1}}})
        self._emit(cid, "execution_start", {"prompt_id": pid, "timestamp": 0})
        self._emit(cid, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": 0})
        outputs, executed, messages = {}, [], [("execution_start", {"prompt_id": pid})]
        image_bytes = b""
        for node_id in sorted(prompt, key=lambda k: int(k) if k.isdigit() else 0):
            node = prompt[node_id]
            self._emit(cid, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            sock = self._sockets.get(cid)
            if sock is not None:  # a preview image: a binary frame the client must skip
                sock.send_raw(_frame(0x2, struct.pack(">I", 1) + b"JPEGDATA"))
            for step in (1, 2):
                self._emit(cid, "progress", {"value": step, "max": 2, "prompt_id": pid, "node": node_id},
                           fragmented=(step == 2))
                time.sleep(self.node_delay / 2)
            if node_id == self.fail_node:
                err = {"prompt_id": pid, "node_id": node_id, "node_type": node["class_type"], "executed": executed,
                       "exception_message": self.fail_message, "exception_type": "RuntimeError",
                       "traceback": ["  File x, line 1\n"], "current_inputs": {}, "current_outputs": []}
                messages.append(("execution_error", err))
                self._emit(cid, "execution_error", err)
                self._finish(pid, prompt, {}, "error", messages, cid)
                return
            if node["class_type"] == "LoadImage":
                image_bytes = self.files.get(("input", "", node["inputs"]["image"]), b"")
            if node["class_type"] in ("SaveImage", "PreviewImage"):
                kind = "output" if node["class_type"] == "SaveImage" else "temp"
                name = f"{node['inputs'].get('filename_prefix', 'ComfyUI')}_{pid[:8]}_{node_id}.png"
                self.files[(kind, "", name)] = image_bytes or b"\x89PNG fake"
                ui = {"images": [{"filename": name, "subfolder": "", "type": kind}]}
                outputs[node_id] = ui
                self._emit(cid, "executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid})
            if node["class_type"] == "ShowText":
                ui = {"text": [str(node["inputs"].get("text"))]}
                outputs[node_id] = ui
                self._emit(cid, "executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid})
            executed.append(node_id)
        messages.append(("execution_success", {"prompt_id": pid}))
        self._emit(cid, "execution_success", {"prompt_id": pid, "timestamp": 0})
        self._finish(pid, prompt, outputs, "success", messages, cid)

    def _finish(self, pid, prompt, outputs, status, messages, cid) -> None:
        time.sleep(0.02)  # ComfyUI writes the history after execution_success/error, then says executing None
        with self._lock:
            self.history[pid] = {"prompt": [0, pid, prompt, {}, []], "outputs": outputs, "meta": {},
                                 "status": {"status_str": status, "completed": status == "success",
                                            "messages": [list(m) for m in messages]}}
        self._emit(cid, "executing", {"node": None, "prompt_id": pid})

    # ------------------------------------------------------------ uploads
    def _upload(self, handler, body: bytes):
        ctype = handler.headers.get("Content-Type", "")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        fields, image, filename = {}, None, None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "image":
                image, filename = part.get_payload(decode=True), part.get_filename()
            else:
                fields[name] = part.get_content().strip()
        if image is None or not filename:
            return handler._send(400)
        stored = filename
        i = 1
        while ("input", fields.get("subfolder", ""), stored) in self.files:
            stem, dot, ext = filename.rpartition(".")
            stored = f"{stem} ({i}).{ext}" if dot else f"{filename} ({i})"
            i += 1
        self.files[("input", fields.get("subfolder", ""), stored)] = image
        self.uploads.append({"name": stored, "filename": filename, "fields": fields, "content": image})
        handler._send(200, {"name": stored, "subfolder": fields.get("subfolder", ""), "type": "input"})
