"""validate_request: torch-free checks the web form reuses."""

from __future__ import annotations

import dataclasses

import pytest

from generation.engine import GenerationRequest, InvalidRequest, ModelInfo, validate_request

INFO = ModelInfo(name="m", hash="0123456789", family="sd1", native_width=512, native_height=512,
                 max_width=1024, max_height=768, vae_scale_factor=8)
OK = GenerationRequest(prompt="a cat")


def test_defaults_are_valid():
    validate_request(OK, INFO)
    validate_request(dataclasses.replace(OK, width=1024, height=768, steps=150, guidance_scale=30.0,
                                         num_images=4, seed=2**32 - 1, prompt="x" * 1000), INFO)
    validate_request(dataclasses.replace(OK, prompt="", guidance_scale=0, steps=1, width=64, height=64), INFO)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 500),  # not a multiple of 8
        ("height", 513),
        ("width", 1032),  # above max
        ("height", 776),
        ("width", 0),
        ("height", 56),  # below the minimum side
        ("width", 512.0),
        ("steps", 0),
        ("steps", 151),
        ("steps", 20.5),
        ("guidance_scale", -0.5),
        ("guidance_scale", 30.01),
        ("guidance_scale", float("nan")),
        ("guidance_scale", "7"),
        ("num_images", 0),
        ("num_images", 5),
        ("num_images", True),
        ("sampler", "heun"),
        ("sampler", "Euler a"),  # labels are not keys
        ("seed", -1),
        ("seed", 2**32),
        ("prompt", "x" * 1001),
        ("negative_prompt", "y" * 1001),
        ("prompt", "bad\x00byte"),
        ("prompt", None),
    ],
)
def test_invalid(field, value):
    with pytest.raises(InvalidRequest) as excinfo:
        validate_request(dataclasses.replace(OK, **{field: value}), INFO)
    assert excinfo.value.field == field
    assert isinstance(excinfo.value, ValueError)
    assert field in str(excinfo.value)


def test_newlines_and_tabs_are_allowed_in_prompts():
    validate_request(dataclasses.replace(OK, prompt="line one\nline\ttwo"), INFO)
