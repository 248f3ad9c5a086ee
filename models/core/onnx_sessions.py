"""ONNX Runtime sessions in the shared cache (InsightFace packs and any other .onnx model).

The provider is chosen once per session: "auto" takes CUDA when both torch sees a GPU and
onnxruntime-gpu offers the CUDA provider (onnxruntime-gpu lists CUDAExecutionProvider even on machines
without a GPU, so the list alone is not enough), else the CPU. The session is cached like any model:
one per file and provider, counted at the file's size, released by /free and purges.
"""
from __future__ import annotations

import os

from .cache import Loaded, ModelSpec, get_cache
from .errors import VisionKitError

PROVIDERS = ("auto", "CUDA", "CPU")


class OnnxModelError(VisionKitError):
    """An .onnx file that cannot be opened; the message says which and why."""


def choose_providers(choice: str = "auto") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if choice not in PROVIDERS:
        raise ValueError(f"provider {choice!r} is not one of {', '.join(PROVIDERS)}")
    cuda_ok = "CUDAExecutionProvider" in available and _torch_has_cuda()
    if choice == "CUDA":
        if not cuda_ok:
            raise OnnxModelError(
                "the CUDA provider was asked for but is not usable here (onnxruntime providers: "
                f"{', '.join(available)}; torch sees a GPU: {_torch_has_cuda()}). Install onnxruntime-gpu "
                "(`pip install --force-reinstall --no-deps onnxruntime-gpu`) on a CUDA machine, or choose CPU.")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if choice == "auto" and cuda_ok:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _torch_has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def _build_session(spec: ModelSpec, device) -> Loaded:
    import onnxruntime as ort

    providers = list(spec.option("providers", ("CPUExecutionProvider",)))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = spec.option("threads", 0)
    if threads:
        opts.intra_op_num_threads = int(threads)
    if os.path.getsize(spec.path) == 0:
        raise OnnxModelError(f"{os.path.basename(spec.path)} is an empty file; download it again")
    try:
        sess = ort.InferenceSession(spec.path, sess_options=opts, providers=providers)
    except Exception as ex:
        raise OnnxModelError(f"{os.path.basename(spec.path)} could not be opened by onnxruntime "
                             f"({str(ex).splitlines()[0][:200]}); is it a complete .onnx file?") from ex
    used = sess.get_providers()
    return Loaded(sess, meta={"device": "cuda" if used and used[0].startswith("CUDA") else "cpu",
                              "provider": used[0] if used else "?"},
                  nbytes=os.path.getsize(spec.path))


def session_spec(path: str, provider: str = "auto", threads: int = 0) -> ModelSpec:
    providers = tuple(choose_providers(provider))
    return ModelSpec(kind="onnx", path=path, build=_build_session, variant=providers[0],
                     options=(("providers", providers), ("threads", threads)))


def get_session(path: str, provider: str = "auto"):
    """The cached InferenceSession for `path` (callers that run it should hold `get_cache().use(spec)`)."""
    spec = session_spec(path, provider)
    return spec, get_cache().load(spec).value
