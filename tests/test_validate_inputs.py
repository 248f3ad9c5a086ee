"""VALIDATE_INPUTS names at most one input, and nothing is left unchecked (issue 18).

ComfyUI's /prompt (execution.validate_inputs, both snapshots) calls a node's VALIDATE_INPUTS with the inputs
its signature names and, when it answers a message, adds one "custom_validation_failed" error per named input:
a signature of five inputs shows the same message five times. Naming an input also turns off ComfyUI's own
min/max and list checks for it. So every VALIDATE_INPUTS of the pack names one input at most, and every INT /
FLOAT input it does not name declares the min and max ComfyUI checks. What this means over a real server
(each message once in node_errors, ComfyUI's own range message for the rest) is tests/test_t2_bad_input.py.
"""
from __future__ import annotations

import inspect

import pytest

from vk_testing import import_pack

import_pack()
from visionkit_pack import NODE_CLASS_MAPPINGS  # noqa: E402


def named_inputs(cls) -> list[str]:
    """The inputs ComfyUI passes to VALIDATE_INPUTS: the positional parameters after cls (getfullargspec.args)."""
    fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return []
    spec = inspect.getfullargspec(fn)
    assert spec.varkw is None, f"{cls.__name__}.VALIDATE_INPUTS takes **{spec.varkw}: ComfyUI then passes (and " \
                               "names in its errors) every input"
    return [a for a in spec.args if a != "cls"]


def all_inputs(cls) -> dict:
    types = cls.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


NODES = sorted(NODE_CLASS_MAPPINGS.items())


@pytest.mark.parametrize("name,cls", NODES, ids=[n for n, _ in NODES])
def test_validate_inputs_names_at_most_one_input(name, cls):
    named = named_inputs(cls)
    assert len(named) <= 1, (f"{name}.VALIDATE_INPUTS names {named}: ComfyUI would give its message once per "
                             "named input; name one, leave ranges to INPUT_TYPES, check joint values at run time")
    for n in named:
        assert n in all_inputs(cls), f"{name}.VALIDATE_INPUTS names {n!r}, which is not an input"


@pytest.mark.parametrize("name,cls", NODES, ids=[n for n, _ in NODES])
def test_numbers_not_named_have_comfyui_range_checks(name, cls):
    named = set(named_inputs(cls))
    for inp, spec in all_inputs(cls).items():
        if spec[0] in ("INT", "FLOAT") and inp not in named:
            opts = spec[1] if len(spec) > 1 else {}
            assert "min" in opts and "max" in opts, f"{name}.{inp} has no min/max: ComfyUI cannot range-check it"
            assert opts["min"] <= opts.get("default", opts["min"]) <= opts["max"], f"{name}.{inp} default outside"


def test_the_checks_that_left_validate_inputs_run_when_the_node_runs():
    """The joint checks moved out of VALIDATE_INPUTS, as the run methods call them (each names what is wrong)."""
    from visionkit_pack.nodes import instantid, ip_adapter, sd_controlnet, upscale

    assert "set start_percent below end_percent" in sd_controlnet.check_window(0.8, 0.2, 1.0)
    assert "strength must be between 0 and 10" in sd_controlnet.check_window(0.0, 1.0, float("nan"))
    assert sd_controlnet.check_window(0.0, 1.0, 1.0) is True
    assert "set start_percent below end_percent" in instantid.check_settings(0.5, 0.5)
    assert "ip_weight" in instantid.check_settings(0.0, 1.0, float("nan"))
    assert "set start_percent below end_percent" in ip_adapter.check_settings(float("nan"), 1.0)
    assert "mode 'style' must be one of" in ip_adapter.check_settings(mode="style")
    assert "outscale must be a finite number" in upscale.check_settings(outscale=float("nan"))
    assert "tile_pad 999 must be between 0 and" in upscale.check_settings(tile_pad=999)
    assert upscale.check_settings(0.0, 512, 8, "network", 0) is True
