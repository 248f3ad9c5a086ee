"""What the client hands back: its errors (messages meant for people), progress events and results.

Errors: ServerUnreachable (nothing answers at the URL), PromptRejected (HTTP 400 from /prompt;
`.node_errors`, and str() is the readable per-node listing), ExecutionFailed (a node raised; `.node_id`,
`.node_type`, `.exception_message`), JobTimeout; all derive from ComfyClientError.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .workflow import format_node_errors


class ComfyClientError(RuntimeError):
    """Base class of the client's errors."""


class ServerUnreachable(ComfyClientError):
    pass


class ServerError(ComfyClientError):
    """An unexpected HTTP status or body."""

    def __init__(self, message: str, status: int | None = None, body=None):
        super().__init__(message)
        self.status, self.body = status, body


class PromptRejected(ServerError):
    """/prompt answered 400: the graph did not validate. str() lists every node's errors."""

    def __init__(self, body, prompt: dict | None = None, server: str = ""):
        self.node_errors = (body or {}).get("node_errors", {}) if isinstance(body, dict) else {}
        self.error = body.get("error") if isinstance(body, dict) else body
        text = format_node_errors(body, prompt)
        super().__init__(f"{text}\n  (server {server})" if server else text, 400, body)


class ExecutionFailed(ComfyClientError):
    """The prompt was accepted but a node failed while running (or it was interrupted)."""

    def __init__(self, prompt_id: str, data: dict | None, interrupted: bool = False, server: str = ""):
        data = data or {}
        self.prompt_id, self.data, self.interrupted = prompt_id, data, interrupted
        self.node_id, self.node_type = data.get("node_id"), data.get("node_type")
        self.exception_type = data.get("exception_type")
        self.exception_message = data.get("exception_message") or ("interrupted" if interrupted else "")
        where = f"node {self.node_id} ({self.node_type})" if self.node_id is not None else "the prompt"
        if interrupted:
            msg = f"{where} was interrupted (prompt {prompt_id})"
        else:
            kind = f"{self.exception_type}: " if self.exception_type else ""
            text = str(self.exception_message).strip() or "no error message in /history"
            msg = f"{where} failed: {kind}{text} (prompt {prompt_id})"
        super().__init__(msg + (f" on {server}" if server else ""))


class JobTimeout(ComfyClientError):
    pass


@dataclass
class ProgressEvent:
    """One thing that happened to a job. kind: queued, started, cached, executing, progress, executed,
    warning, polling, done. `node`/`class_type`/`title` name the node where it applies."""
    kind: str
    prompt_id: str
    server: str
    node: str | None = None
    class_type: str | None = None
    title: str | None = None
    value: float | None = None
    max: float | None = None
    data: dict | None = None
    text: str = ""
    job: str = ""  # the job's name in a batch

    def __str__(self) -> str:
        name = ""
        if self.node is not None:
            t = f", {self.title!r}" if self.title and self.title != self.class_type else ""
            name = f"node {self.node} ({self.class_type}{t})"
        if self.kind == "progress":
            return f"{name} {self.value:g}/{self.max:g}"
        if self.kind in ("executing", "executed"):
            return f"{name} {self.kind}"
        return " ".join(x for x in (self.kind, name, self.text) if x)


@dataclass
class Result:
    """A finished job. outputs: /history's outputs (node id -> the node's ui dict); files: local paths
    once downloaded; events: the websocket message types received (empty when /history was polled)."""
    prompt_id: str
    server: str
    outputs: dict
    status: dict
    files: list = field(default_factory=list)
    events: list = field(default_factory=list)
    used_websocket: bool = False
    seconds: float = 0.0

    def file_refs(self, types=("output", "temp")) -> list[dict]:
        """Every file the outputs name ({"filename", "subfolder", "type"} dicts) with its node id and key."""
        refs = []
        for node_id, ui in (self.outputs or {}).items():
            for key, items in (ui or {}).items():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type", "output") in types:
                        refs.append({**item, "node": node_id, "key": key})
        return refs
