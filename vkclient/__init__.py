"""vkclient: a small ComfyUI HTTP client (standard library only; no ComfyUI, no torch, no pack import).

Queue an API-format workflow, follow its progress over the websocket, download what it made:

    from vkclient import Client, load_workflow, apply_overrides

    client = Client("http://127.0.0.1:8188")
    prompt = apply_overrides(load_workflow("workflows/api/upscale.json"), ["VisionKitUpscale.tile_size=256"])
    job = client.queue(prompt, images=["photo.png"])     # uploaded, fed to the first LoadImage node
    result = job.wait(progress=print, timeout=600)
    print(client.download_outputs(result, "out"))        # [PosixPath('out/ComfyUI_00001_.png')]

A batch over several servers:

    from vkclient import BatchJob, run_batch
    items = run_batch(["http://gpu1:8188", "http://gpu2:8188"],
                      [BatchJob(prompt, name=f"take {i}") for i in range(8)], output_dir="out", seed_random=True)

The command line is `./scripts/queue` (or `python -m vkclient`); `--help` lists its options.
"""
from .batch import BatchItem, BatchJob, run_batch
from .client import DEFAULT_SERVER, Client
from .job import Job
from .results import (
    ComfyClientError,
    ExecutionFailed,
    JobTimeout,
    ProgressEvent,
    PromptRejected,
    Result,
    ServerError,
    ServerUnreachable,
)
from .websocket import WebSocket, WebSocketError
from .workflow import (
    WorkflowError,
    apply_overrides,
    find_node,
    format_node_errors,
    is_ui_format,
    load_workflow,
    randomize_seeds,
)

__all__ = [
    "DEFAULT_SERVER", "BatchItem", "BatchJob", "Client", "ComfyClientError", "ExecutionFailed", "Job", "JobTimeout",
    "ProgressEvent", "PromptRejected", "Result", "ServerError", "ServerUnreachable", "WebSocket", "WebSocketError",
    "WorkflowError", "apply_overrides", "find_node", "format_node_errors", "is_ui_format", "load_workflow",
    "randomize_seeds", "run_batch",
]
