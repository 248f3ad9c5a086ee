"""VISIONKIT_REQUIRE_TIERS: with the switch on, a tier this machine lacks fails the run and is named.

Each check runs pytest in a subprocess: on a small test file that skips the way the suite's tiers do (through
the hooks of vk_testing/tiers.py alone), and on the suite's own T2 fixture, T3 file, JS check and peft-guarded
LoRA parity with ComfyUI / Chromium / node / peft made missing for that run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from vk_testing import ROOT, tiers

TESTS = ROOT / "tests"

MODULE_SKIP = '''
from vk_testing import tiers
tiers.missing("T3", "no browser here (simulated, at module level)")
'''

SAMPLE = '''
import pytest
from vk_testing import tiers

def test_needs_comfyui():
    tiers.missing("T2", "no ComfyUI here (simulated)")

def test_needs_node():
    tiers.missing("node", "no node here (simulated)")

@pytest.mark.t3
def test_marked_t3_plain_skip():
    pytest.skip("something a T3 test lacked")

def test_unmarked_skip():
    pytest.skip("a skip nobody declared")

def test_soak():
    tiers.optional("opt-in (simulated)")

@pytest.mark.xfail(reason="an expected failure is not a skip")
def test_xfail():
    assert False

def test_runs():
    pass
'''


def pytest_run(args, cwd, env_over: dict, timeout=300) -> subprocess.CompletedProcess:
    """pytest in a subprocess; a PYTHONPATH in env_over goes before the inherited one (the socket guard's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != tiers.ENV}
    if "PYTHONPATH" in env_over:
        env_over = {**env_over, "PYTHONPATH": os.pathsep.join([env_over["PYTHONPATH"], env.get("PYTHONPATH", "")])}
    env.update(env_over)
    return subprocess.run([sys.executable, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def sample_run(tmp_path, value: str | None):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    over = {"PYTHONPATH": str(TESTS)}
    if value is not None:
        over[tiers.ENV] = value
    return pytest_run(["-p", "vk_testing.tiers", "--rootdir", str(tmp_path), "-c", os.devnull, "test_sample.py",
                       "test_module_skip.py"],
                      tmp_path, over)


def test_switch_off_skips_stay_skips(tmp_path):
    r = sample_run(tmp_path, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 6 skipped, 1 xfailed" in r.stdout, r.stdout
    assert "[missing tier T2] no ComfyUI here (simulated)" in r.stdout


def test_switch_on_every_missing_tier_fails_and_is_named(tmp_path):
    r = sample_run(tmp_path, "1")
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "1 passed, 2 skipped, 1 xfailed" in out and "4 failed" in out, out
    assert "required test tier T2 did not run" in out and "no ComfyUI here (simulated)" in out, out
    assert "required test tier node did not run" in out, out
    assert "required test tier T3 did not run" in out and "something a T3 test lacked" in out, out
    assert "a test skipped while VISIONKIT_REQUIRE_TIERS is on (a skip nobody declared)" in out, out
    assert "REQUIRED TIER MISSING: T2" in out and "REQUIRED TIER MISSING: T3" in out, out
    assert "no browser here (simulated, at module level)" in out  # a module-level skip: named, and exit 1
    assert "SKIPPED WHILE VISIONKIT_REQUIRE_TIERS IS ON: 1 test(s)" in out, out
    assert "[optional] opt-in (simulated)" in out, out  # the soak-like skip stays a skip


def test_a_list_requires_only_those_tiers(tmp_path):
    r = sample_run(tmp_path, "node,T3")
    out = r.stdout
    assert r.returncode == 1 and "3 failed" in out and "3 skipped" in out, out
    assert "required test tier T2" not in out and "[missing tier T2]" in out, out
    assert "required test tier node did not run" in out, out


def test_a_module_level_skip_of_a_required_tier_fails_the_run_without_stopping_it(tmp_path):
    r = sample_run(tmp_path, "T3")
    out = r.stdout
    assert r.returncode == 1, out  # only the module-level T3 skip and the marked T3 test are refused
    assert "REQUIRED TIER MISSING: T3" in out and "2 test(s)" in out, out
    assert "1 passed" in out and "Interrupted" not in out, out


def test_an_unknown_tier_name_is_a_usage_error(tmp_path):
    r = sample_run(tmp_path, "T2,T9")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "unknown tier(s) ['T9']" in r.stdout + r.stderr


# ---------------------------------------------------------------- the suite's own tier checks, made missing
def test_t2_fixture_without_comfyui_fails_naming_t2(tmp_path):
    """The `comfy` fixture of every T2 test, on a machine where no ComfyUI is found."""
    (tmp_path / "test_no_comfy.py").write_text(textwrap.dedent('''
        import pytest
        from vk_testing import comfy_server

        # As on a machine without any checkout: the fixture's parameters are then the single "nothing found",
        # and the fixture serves it the way the suite's own `comfy` fixture does.
        comfy_server.find_comfyui_dirs = lambda: []
        PARAMS = comfy_server._params()
        assert [p for p, _ in PARAMS] == [None], PARAMS

        @pytest.fixture(params=[p for p, _ in PARAMS], ids=[i for _, i in PARAMS])
        def comfy(request, tmp_path_factory):
            return comfy_server._serve(request, tmp_path_factory, request.param)

        def test_uses_the_server(comfy):
            raise AssertionError("must not run")
    '''))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f'''
        import importlib.util
        spec = importlib.util.spec_from_file_location("vk_suite_conftest", {str(TESTS / "conftest.py")!r})
        suite = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(suite)
        globals().update({{k: v for k, v in vars(suite).items() if not k.startswith("__")}})
    '''))
    r = pytest_run(["--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_no_comfy.py")], tmp_path,
                   {tiers.ENV: "1", "PYTHONPATH": str(TESTS)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "required test tier T2 did not run" in r.stdout and "no ComfyUI found" in r.stdout, r.stdout
    assert "must not run" not in r.stdout


def test_t3_without_chromium_and_js_check_without_node_fail_naming_them(tmp_path):
    """The suite's own T3 file and JS syntax check, in one run, with no Chromium and no node (an empty PATH)."""
    r = pytest_run(["tests/test_t3_browser.py", "tests/test_web_static.py", "-k", "t3_browser or parses_as"], ROOT,
                   {tiers.ENV: "1", "VISIONKIT_CHROMIUM": "/nonexistent/chromium", "PATH": str(tmp_path)})
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "required test tier T3 did not run" in out and "/nonexistent/chromium" in out, out
    assert "required test tier node did not run" in out and "node is not installed" in out, out
    assert "REQUIRED TIER MISSING: T3" in out and "REQUIRED TIER MISSING: node" in out, out
    assert " passed" not in out.splitlines()[-1], out  # nothing of either ran


def test_every_skip_in_the_suite_goes_through_tiers():
    """No direct pytest.skip / importorskip / skipif in the test files: a skip names its tier (missing) or says
    why it may stay a skip (optional), and every tier has its guard somewhere (peft: the LoRA parity against
    diffusers' own loader, whose subprocess check would cost a diffusers import)."""
    import re

    direct = re.compile(r"pytest\.(skip\(|importorskip\(|mark\.skip)")
    offenders, used = [], set()
    for path in sorted(TESTS.rglob("*.py")):
        if path.name in ("tiers.py", "test_tiers.py"):
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}" for m in direct.finditer(text)]
        used |= set(re.findall(r"tiers\.missing(?:_mark)?\(\s*\"(\w+)\"", text))
    assert not offenders, f"direct skips (use vk_testing.tiers.missing / optional): {offenders}"
    assert used == set(tiers.TIERS), f"tiers without a guard: {set(tiers.TIERS) - used}; unknown: {used - set(tiers.TIERS)}"
    lora = (TESTS / "test_sd_lora.py").read_text(encoding="utf-8")
    assert re.search(r"import peft[^\n]*\n\s*except ImportError:\n\s*tiers\.missing\(\"peft\"", lora)
