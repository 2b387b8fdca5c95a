"""A1111 infotext: formatting, parsing, round trips. Torch-free."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from generation.engine import SAMPLERS, format_infotext, parse_infotext, request_fields_from_infotext
from generation.engine.infotext import NEGATIVE_PREFIX


def fmt(**overrides):
    kwargs = dict(prompt="a cat", negative_prompt="", steps=20, sampler="euler_a", guidance_scale=7.0,
                  seed=123, width=512, height=512, model_hash="abcdef1234", model_name="demo")
    kwargs.update(overrides)
    return format_infotext(**kwargs)


def test_format_matches_a1111():
    assert fmt(negative_prompt="blurry") == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 123, Size: 512x512, "
        "Model hash: abcdef1234, Model: demo"
    )


def test_negative_line_left_out_when_empty():
    assert fmt() == ("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 123, Size: 512x512, "
                     "Model hash: abcdef1234, Model: demo")


def test_values_with_commas_are_quoted():
    text = fmt(model_name="my model, v2: final")
    assert 'Model: "my model, v2: final"' in text
    assert parse_infotext(text)["Model"] == "my model, v2: final"


def test_parse_a1111_text():
    text = (
        "masterpiece, a castle on a hill\nsecond line of prompt\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3456789012, "
        "Size: 640x448, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "masterpiece, a castle on a hill\nsecond line of prompt"
    assert parsed["Negative prompt"] == "lowres, bad anatomy"
    assert parsed["Steps"] == "28" and parsed["Schedule type"] == "Karras" and parsed["Version"] == "v1.10.1"
    fields = request_fields_from_infotext(text)
    assert fields == {
        "prompt": "masterpiece, a castle on a hill\nsecond line of prompt",
        "negative_prompt": "lowres, bad anatomy",
        "steps": 28,
        "guidance_scale": 6.5,
        "seed": 3456789012,
        "sampler": "dpmpp_2m_karras",
        "width": 640,
        "height": 448,
    }


def test_parse_without_parameter_line_is_a_prompt():
    assert parse_infotext("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}


def test_empty_prompt_roundtrips():
    text = fmt(prompt="", negative_prompt="")
    assert text.startswith("Steps: 20")
    assert parse_infotext(text)["Prompt"] == ""
    assert parse_infotext(fmt(prompt="", negative_prompt="x"))["Negative prompt"] == "x"


def test_every_sampler_label_maps_back():
    for key in SAMPLERS:
        assert request_fields_from_infotext(fmt(sampler=key))["sampler"] == key


# Prompts as people type them: any printable text and newlines; "Negative prompt:" at the start of
# a line is the one ambiguity the format has (shared with A1111), so it is excluded.
prompt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), whitelist_characters="\n"), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(
    prompt=prompt_text,
    negative=prompt_text,
    steps=st.integers(1, 150),
    sampler=st.sampled_from(sorted(SAMPLERS)),
    cfg=st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 2)),
    seed=st.integers(0, 2**32 - 1),
    w=st.integers(8, 128).map(lambda x: x * 8),
    h=st.integers(8, 128).map(lambda x: x * 8),
)
def test_roundtrip(prompt, negative, steps, sampler, cfg, seed, w, h):
    for text in (prompt, negative):
        assume(not any(line.startswith(NEGATIVE_PREFIX) for line in text.split("\n")))
    text = format_infotext(prompt=prompt, negative_prompt=negative, steps=steps, sampler=sampler,
                           guidance_scale=cfg, seed=seed, width=w, height=h, model_hash="0123456789",
                           model_name="demo")
    fields = request_fields_from_infotext(text)
    assert fields == {"prompt": prompt, "negative_prompt": negative, "steps": steps, "guidance_scale": cfg,
                      "seed": seed, "sampler": sampler, "width": w, "height": h}
    assert parse_infotext(text)["Model hash"] == "0123456789"


def test_a_long_last_line_without_pairs_parses_in_linear_time():
    """64 KB of prompt on its last line once took minutes (a key was tried at every character);
    the bound is generous, the old behaviour was three orders of magnitude over it."""
    import time

    from generation.engine.infotext import parse_infotext

    started = time.perf_counter()
    parsed = parse_infotext("a cat " * 11_000)
    assert time.perf_counter() - started < 2.0
    assert parsed["Prompt"].startswith("a cat")
