"""A tiny WebSocket client (RFC 6455), standard library only: enough to read ComfyUI's /ws messages.

    ws = WebSocket.connect("http://127.0.0.1:8188/ws?clientId=abc", timeout=10)
    msg = ws.recv(timeout=1.0)      # a dict (JSON text frame), bytes (binary frame) or None (nothing yet)
    ws.close()

Only what a ComfyUI client needs: the opening handshake (with its Sec-WebSocket-Accept check), masked
client frames, unmasked server frames of any length, fragmented messages, ping → pong, close. No
extensions (no compression is offered, so the server sends none), no proxies.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import urllib.parse

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_MESSAGE = 64 * 1024 * 1024  # previews are the largest messages ComfyUI sends; refuse anything absurd

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketError(OSError):
    """The handshake failed, the connection closed, or the server broke the protocol."""


class WebSocketClosed(WebSocketError):
    pass


def _ws_address(url: str):
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise WebSocketError(f"not a websocket URL: {url!r}")
    port = parts.port or (443 if scheme == "wss" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return scheme, parts.hostname, port, target, host_header


class WebSocket:
    """One client connection. Use `WebSocket.connect(url)`; `recv` and `close` are thread-compatible
    (one reader thread), `send_text` may be called by the reader."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._frag_opcode = None
        self.closed = False

    # ------------------------------------------------------------ handshake
    @classmethod
    def connect(cls, url: str, timeout: float = 10.0, headers: dict | None = None) -> "WebSocket":
        scheme, host, port, target, host_header = _ws_address(url)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if scheme == "wss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            ws = cls(sock)
            status_line, response_headers = ws._read_http_response(timeout)
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "101":
                raise WebSocketError(f"the server did not upgrade to a websocket: {status_line!r}")
            expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            if response_headers.get("sec-websocket-accept") != expected:
                raise WebSocketError("the server's Sec-WebSocket-Accept does not match the key sent")
            return ws
        except BaseException:
            sock.close()
            raise

    def _read_http_response(self, timeout: float):
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > 65536:
                raise WebSocketError("the handshake response headers are too long")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketError("the server closed the connection during the websocket handshake")
            self._buf += chunk
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)  # frames may follow the headers in the same packet
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    # ------------------------------------------------------------ frames
    def _send_frame(self, opcode: int, payload: bytes = b"") -> None:
        head = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        mask = os.urandom(4)
        head += mask
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(head) + masked)

    def send_text(self, text: str) -> None:
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def _parse_frame(self):
        """(fin, opcode, payload) for one complete frame at the head of the buffer, else None."""
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack(">H", bytes(buf[2:4]))[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack(">Q", bytes(buf[2:10]))[0], 10
        if n > _MAX_MESSAGE:
            raise WebSocketError(f"a websocket frame of {n} bytes is larger than the {_MAX_MESSAGE}-byte limit")
        mask = None
        if b1 & 0x80:  # servers must not mask, but reading a masked frame costs nothing
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos:pos + 4]), pos + 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self, timeout: float | None = None):
        """The next message: a dict/list for JSON text, str for other text, bytes for binary; None when
        nothing complete arrived within `timeout` seconds. Raises WebSocketClosed when the server closed."""
        if self.closed:
            raise WebSocketClosed("the websocket is closed")
        self.sock.settimeout(timeout)
        while True:
            frame = self._parse_frame()
            if frame is None:
                try:
                    chunk = self.sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    return None
                except OSError as e:
                    self.closed = True
                    raise WebSocketClosed(f"the websocket connection broke: {e}") from e
                if not chunk:
                    self.closed = True
                    raise WebSocketClosed("the server closed the websocket connection")
                self._buf += chunk
                continue
            fin, opcode, payload = frame
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                try:
                    self._send_frame(OP_CLOSE, payload[:2])
                except OSError:
                    pass
                self._shutdown()
                raise WebSocketClosed(f"the server closed the websocket (code {code})")
            if opcode in (OP_TEXT, OP_BINARY):
                if self._frag_opcode is not None:
                    raise WebSocketError("a new websocket message started inside a fragmented one")
                if not fin:
                    self._frag_opcode, self._fragments = opcode, [payload]
                    continue
                return self._decode(opcode, payload)
            if opcode == OP_CONT:
                if self._frag_opcode is None:
                    raise WebSocketError("a websocket continuation frame with no message to continue")
                self._fragments.append(payload)
                if sum(map(len, self._fragments)) > _MAX_MESSAGE:
                    raise WebSocketError("a fragmented websocket message is larger than the limit")
                if not fin:
                    continue
                opcode, payload = self._frag_opcode, b"".join(self._fragments)
                self._frag_opcode, self._fragments = None, []
                return self._decode(opcode, payload)
            raise WebSocketError(f"unknown websocket opcode {opcode:#x}")

    @staticmethod
    def _decode(opcode: int, payload: bytes):
        if opcode == OP_BINARY:
            return payload
        text = payload.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text

    # ------------------------------------------------------------ closing
    def _shutdown(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.sock.settimeout(1.0)
            self._send_frame(OP_CLOSE, struct.pack(">H", 1000))
        except OSError:
            pass
        self._shutdown()

    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
