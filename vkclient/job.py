"""A queued prompt: follow its progress (websocket, or /history when there is none) until it finishes."""
from __future__ import annotations

import time

from .results import ExecutionFailed, JobTimeout, ProgressEvent, Result
from .websocket import WebSocketError
from .workflow import format_node_errors

HISTORY_CHECK_EVERY = 5.0  # with a websocket, /history is still read this often, in case a message was lost


class Job:
    """One prompt queued on one server (from `Client.queue`).

    >>> job = client.queue(prompt)                             # doctest: +SKIP
    >>> result = job.wait(progress=lambda ev: print(ev))       # doctest: +SKIP
    >>> result.outputs["9"]["images"][0]["filename"]           # doctest: +SKIP
    'ComfyUI_00001_.png'
    """

    def __init__(self, client, prompt_id: str, prompt: dict, client_id: str, ws, ws_error, node_errors: dict,
                 number=None):
        self.client, self.prompt_id, self.prompt = client, prompt_id, prompt
        self.client_id, self.number = client_id, number
        self._ws, self._ws_error = ws, ws_error
        self.node_errors = node_errors  # outputs the server dropped although it accepted the prompt
        self.events: list[str] = []     # websocket message types received for this job

    @property
    def server(self) -> str:
        return self.client.url

    def __repr__(self) -> str:
        return f"Job({self.prompt_id!r} on {self.server})"

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def cancel(self) -> None:
        """Remove the prompt from the server's queue, or interrupt it when it is running."""
        self.close()
        self.client.cancel(self.prompt_id)

    # ------------------------------------------------------------ progress
    def _event(self, kind: str, node=None, **kw) -> ProgressEvent:
        cls = title = None
        if node is not None:
            node = str(node)
            entry = self.prompt.get(node) or {}
            cls = entry.get("class_type")
            title = (entry.get("_meta") or {}).get("title")
        return ProgressEvent(kind, self.prompt_id, self.server, node, cls, title, **kw)

    def _handle(self, msg: dict, emit, state: dict):
        """Digest one websocket message; returns True once the prompt has finished (either way)."""
        kind, data = msg.get("type"), msg.get("data") or {}
        if not isinstance(data, dict):
            return False
        pid = data.get("prompt_id")
        if pid is not None and pid != self.prompt_id:
            return False  # another prompt's message (the socket is ours alone, but be safe)
        self.events.append(kind)
        if kind == "status":
            if "sid" in data:
                return False  # the greeting sent on connecting, before our prompt was posted
            remaining = ((data.get("status") or {}).get("exec_info") or {}).get("queue_remaining")
            if not state["started"] and remaining is not None and remaining != state.get("queue"):
                state["queue"] = remaining
                emit(self._event("queued", text=f"({remaining} prompt(s) in the server's queue)"))
        elif kind == "execution_start":
            state["started"] = True
            emit(self._event("started"))
        elif kind == "execution_cached":
            nodes = [str(n) for n in data.get("nodes") or []]
            state["started"] = True
            if nodes:
                emit(self._event("cached", text="nodes " + ", ".join(nodes) + " reused from the server's cache",
                                 data={"nodes": nodes}))
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                return pid == self.prompt_id
            state["started"] = True
            state["node"] = str(node)
            emit(self._event("executing", node))
        elif kind == "progress":
            emit(self._event("progress", data.get("node"), value=data.get("value"), max=data.get("max")))
        elif kind == "executed":
            emit(self._event("executed", data.get("node"), data=data.get("output")))
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            return True
        return False

    # ------------------------------------------------------------ waiting
    def wait(self, timeout: float | None = None, progress=None, poll_interval: float = 0.5) -> Result:
        """Block until the prompt has finished; returns its Result (outputs from /history).

        `progress(event)` is called with a ProgressEvent for each step (queued, started, cached,
        executing, progress, executed, warning, polling). Raises ExecutionFailed when a node failed,
        JobTimeout after `timeout` seconds (the prompt stays queued: call cancel()), ServerUnreachable
        when the server went away."""
        emit = progress or (lambda ev: None)
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        state = {"started": False, "node": None}
        if self.node_errors:
            emit(self._event("warning", text="the server dropped some outputs: "
                             + format_node_errors({"node_errors": self.node_errors}, self.prompt)))
        used_ws = self._ws is not None
        if self._ws is None:
            emit(self._event("polling", text=f"no websocket ({self._ws_error or 'disabled'}); following /history"))
        entry = None
        last_check = t0
        try:
            while entry is None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._timeout(timeout, state)
                if self._ws is not None:
                    wait_s = 1.0 if deadline is None else max(min(1.0, deadline - now), 0.01)
                    try:
                        msg = self._ws.recv(timeout=wait_s)
                    except (WebSocketError, OSError) as e:
                        self.close()
                        emit(self._event("polling", text=f"websocket lost ({e}); following /history"))
                        continue
                    if isinstance(msg, dict) and self._handle(msg, emit, state):
                        entry = self._finished_entry(deadline, timeout, state, poll_interval)
                    elif time.monotonic() - last_check >= HISTORY_CHECK_EVERY:
                        last_check = time.monotonic()
                        entry = self._done_entry()
                else:
                    entry = self._done_entry()
                    if entry is None:
                        pause = poll_interval if deadline is None else min(poll_interval, deadline - now)
                        time.sleep(max(pause, 0.0))
        finally:
            self.close()
        return self._result(entry, used_ws, time.monotonic() - t0)

    def _done_entry(self):
        entry = self.client.history(self.prompt_id)
        if entry is None:
            return None
        status = entry.get("status")
        if status is None or status.get("completed") or status.get("status_str") in ("success", "error"):
            return entry
        return None

    def _finished_entry(self, deadline, timeout, state, poll_interval):
        """The history entry right after the websocket said "finished" (ComfyUI writes it just after)."""
        pause = min(poll_interval, 0.1)
        while True:
            entry = self._done_entry()
            if entry is not None:
                return entry
            if deadline is not None and time.monotonic() >= deadline:
                self._timeout(timeout, state)
            time.sleep(pause)

    def _timeout(self, timeout, state):
        node = state.get("node")
        if node is not None:
            where = f"it was running node {node} ({(self.prompt.get(node) or {}).get('class_type', '?')})"
        elif state.get("started"):
            where = "it had started"
        else:
            where = "it was still waiting in the server's queue"
        raise JobTimeout(f"prompt {self.prompt_id} on {self.server} did not finish within {timeout:g} s ({where}); "
                         f"it stays on the server until cancelled (Job.cancel(), or the queue panel in ComfyUI)")

    def _result(self, entry: dict, used_ws: bool, seconds: float) -> Result:
        status = entry.get("status") or {}
        if status.get("status_str") == "error" or status.get("completed") is False:
            error, interrupted = None, False
            for item in status.get("messages") or []:
                if isinstance(item, (list, tuple)) and len(item) == 2:
                    if item[0] == "execution_error":
                        error = item[1]
                    elif item[0] == "execution_interrupted":
                        error, interrupted = item[1], True
            raise ExecutionFailed(self.prompt_id, error, interrupted, self.server)
        return Result(self.prompt_id, self.server, entry.get("outputs") or {}, status, events=list(self.events),
                      used_websocket=used_ws, seconds=seconds)
