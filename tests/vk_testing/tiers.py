"""Required test tiers: a tier that cannot run on this machine fails the run instead of skipping quietly.

A test that needs something the machine may lack skips through `missing(tier, reason)`; the reason then
starts with `[missing tier T2]`. With VISIONKIT_REQUIRE_TIERS on (./scripts/test, and so CI, turns it on),
conftest.py turns every such skip of a required tier into a failure that names the tier and says how to get
it. Every other skip fails too while the switch is on, except the ones marked `optional(reason)` (the opt-in
soak, a check that only means something on a machine without a GPU, a Linux-only reading): a new skip cannot
keep CI green unnoticed.

    VISIONKIT_REQUIRE_TIERS unset, "" or 0   skips stay skips (a plain `pytest` run on a laptop)
    VISIONKIT_REQUIRE_TIERS=1 (or "all")     every tier below is required
    VISIONKIT_REQUIRE_TIERS=T2,node,peft     only these are required; the others may skip (T3 here)
"""
from __future__ import annotations

import os

import pytest

ENV = "VISIONKIT_REQUIRE_TIERS"

TIERS = {
    "T2": "the real-ComfyUI tests: set COMFYUI_DIR to a ComfyUI checkout or put the snapshot at ../shared/comfyui",
    "T3": "the browser tests: pip install playwright (never `playwright install`) and apt install chromium, "
          "or set VISIONKIT_CHROMIUM",
    "node": "the JavaScript syntax check of web/: install Node.js (apt install nodejs)",
    "peft": "the LoRA parity against diffusers' own loader: pip install -r tests/requirements.txt (peft)",
    "venv": "the checks of the venv ./scripts/test builds: run the tests through ./scripts/test",
}
TAG = "[missing tier {}] "
OPTIONAL = "[optional] "


def required() -> set[str]:
    """The tiers that must run, from VISIONKIT_REQUIRE_TIERS."""
    raw = os.environ.get(ENV, "").strip()
    if raw.lower() in ("", "0", "no", "false", "off"):
        return set()
    if raw.lower() in ("1", "all", "yes", "true", "on"):
        return set(TIERS)
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(TIERS)
    if unknown:
        raise pytest.UsageError(f"{ENV}={raw}: unknown tier(s) {sorted(unknown)}; known: {', '.join(TIERS)} "
                                "(or 1 for all, 0 for none)")
    return names


def switch_on() -> bool:
    return bool(required())


def missing(tier: str, reason: str):
    """Skip (or, with the tier required, fail through conftest's hook): this test needs `tier`."""
    assert tier in TIERS, tier
    pytest.skip(TAG.format(tier) + reason, allow_module_level=True)


def missing_mark(tier: str, condition: bool, reason: str):
    """The same as a `skipif` mark (for pytestmark)."""
    assert tier in TIERS, tier
    return pytest.mark.skipif(condition, reason=TAG.format(tier) + reason)


def optional(reason: str):
    """A skip that stays a skip even with the switch on (the reason says when the test does run)."""
    pytest.skip(OPTIONAL + reason, allow_module_level=True)


def optional_mark(condition: bool, reason: str):
    return pytest.mark.skipif(condition, reason=OPTIONAL + reason)


def tier_of(reason: str) -> str | None:
    for name in TIERS:
        if TAG.format(name) in reason:
            return name
    return None


def _tier_for(reason: str, markers) -> str | None:
    """The tier a skip belongs to: named in its reason, else the test's t2/t3 mark."""
    return tier_of(reason) or ("T3" if "t3" in markers else "T2" if "t2" in markers else None)


def refusal(reason: str, markers: set[str] = frozenset()) -> str | None:
    """None when a skip with this reason may stay a skip; else the failure message that replaces it."""
    need = required()
    if not need or OPTIONAL in reason:
        return None
    tier = _tier_for(reason, markers)
    if tier is None:
        return (f"a test skipped while {ENV} is on ({reason}); a skip in CI hides a missing check: make it "
                "run, or mark it with vk_testing.tiers.missing(tier, ...) / optional(...)")
    if tier not in need:
        return None
    return (f"required test tier {tier} did not run ({TIERS[tier]}): {reason}. "
            f"To run without it on purpose: {ENV}={','.join(sorted(need - {tier})) or 0}")


# ---------------------------------------------------------------- the hooks (conftest.py imports them; or -p vk_testing.tiers)
_refused: dict[str, list[str]] = {}
_collect_refusals: list[str] = []


def _skip_reason(report) -> str:
    lr = report.longrepr
    reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason.removeprefix("Skipped: ")


def _refuse(report, markers) -> None:
    """With VISIONKIT_REQUIRE_TIERS on, a skip (other than an optional one) becomes a failure naming the tier."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    problem = refusal(reason, markers)
    if problem is None:
        return
    report.outcome = "failed"
    report.longrepr = problem
    _refused.setdefault(_tier_for(reason, markers) or "unmarked skips", []).append(report.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _refuse(report, {m.name for m in item.iter_markers()})
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module-level skip stays a skip while collecting (a collection error would stop the whole run), is
    named in the summary, and fails the run at its end (`finish`)."""
    report = yield
    if report.skipped and required():
        reason = _skip_reason(report)
        if refusal(reason) is not None:
            _refused.setdefault(_tier_for(reason, set()) or "unmarked skips", []).append(report.nodeid)
            _collect_refusals.append(report.nodeid)
    return report


def finish(session) -> None:
    """Called from pytest_sessionfinish: a refused module-level skip fails the run."""
    if _collect_refusals and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_sessionfinish(session, exitstatus):  # for `-p vk_testing.tiers`; conftest.py calls finish()
    finish(session)


def pytest_report_header(config):
    need = required()
    if need:
        return f"required test tiers ({ENV}): {', '.join(sorted(need))}; a skip of one of them fails"
    return f"{ENV} is off: a tier this machine lacks is skipped, not failed"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for tier, ids in sorted(_refused.items()):
        what = f"REQUIRED TIER MISSING: {tier} ({TIERS[tier]})" if tier in TIERS else f"SKIPPED WHILE {ENV} IS ON"
        terminalreporter.write_line(f"{what}: {len(ids)} test(s) did not run, e.g. {ids[0]}", red=True, bold=True)
