"""The tests' socket guard in every Python process they start (tests/vk_testing/netguard.py).

tests/conftest.py puts this folder first on PYTHONPATH, so Python imports this file at start-up in the T2
ComfyUI server, the scripts and the reference subprocesses. It loads netguard.py by path (nothing of the tests
or the pack enters the child's sys.path) and installs it; blocked attempts go to $VISIONKIT_NETGUARD_LOG,
which the test run reads at its end. Another sitecustomize further on sys.path (a distribution's) still runs.
"""
import importlib.util
import os
import sys


def _install():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("_visionkit_netguard", os.path.join(os.path.dirname(here),
                                                                                      "netguard.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.install(log_path=os.environ.get(mod.LOG_ENV))
    sys.modules["_visionkit_netguard"] = mod  # a test can check that the guard is there
    for entry in sys.path:  # chain to the sitecustomize this file shadows, if any
        other = os.path.join(entry or ".", "sitecustomize.py")
        if entry and os.path.abspath(entry) != here and os.path.isfile(other):
            try:
                spec = importlib.util.spec_from_file_location("_visionkit_chained_sitecustomize", other)
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            except Exception as ex:  # as Python itself does with a broken sitecustomize: warn, go on
                print(f"Error in sitecustomize {other}: {ex!r}", file=sys.stderr)
            break


_install()
