"""Session-wide test set-up: no network, a temp models dir with tiny real-format models, the pack."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from vk_testing import netguard, tiers  # noqa: E402
from vk_testing.comfy_server import comfy  # noqa: E402,F401  (the one real-ComfyUI server, shared by T2 tests)
# VISIONKIT_REQUIRE_TIERS: a skipped tier fails the run (the hooks live in vk_testing/tiers.py)
from vk_testing.tiers import (  # noqa: E402,F401
    pytest_make_collect_report,
    pytest_report_header,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)

# Before anything else: tests run offline, and the pack runs standalone (not inside a ComfyUI). Every Python
# process the tests start (the T2 server, scripts, reference subprocesses) gets the same socket guard through
# a sitecustomize on PYTHONPATH, and reports its blocked attempts into a file read at the end.
netguard.install()
netguard.guard_children()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["VISIONKIT_STANDALONE"] = "1"
os.environ.setdefault("VISIONKIT_DEVICE", "cpu")
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")

# Tiny models run faster on one thread than on two contended ones (measured: a Grounding DINO forward
# took 30 ms on 1 thread, 1.5 s on 2 while another process ran); VISIONKIT_TEST_THREADS overrides.
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("VISIONKIT_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """A models root with every tiny fixture model, in the folder layout of DESIGN.md; shared by the run."""
    from vk_testing import tiny_models

    root = tmp_path_factory.mktemp("models")
    tiny_models.build_all(root)
    return root


@pytest.fixture()
def pack(models_dir, monkeypatch):
    """The pack, standalone, reading models from the fixture models dir, with a fresh cache per test."""
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(models_dir))
    from vk_testing import import_pack

    mod = import_pack()
    from visionkit_pack.models.core import cache as cache_mod

    old = cache_mod._CACHE
    cache_mod._CACHE = None
    yield mod
    if cache_mod._CACHE is not None:
        cache_mod._CACHE.purge()
    cache_mod._CACHE = old


def pytest_sessionfinish(session, exitstatus):
    tiers.finish(session)  # a refused module-level skip (VISIONKIT_REQUIRE_TIERS) fails the run
    attempts = netguard.attempts + netguard.child_attempts()
    if attempts:  # even a caught attempt breaks the "no network at run time" rule, in any process
        print("\nFAILED: network attempts were blocked during the run:", *attempts[:20], sep="\n  ")
        session.exitstatus = 1

