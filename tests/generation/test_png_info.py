"""PNG info on Create: the parameters of our PNGs, AUTOMATIC1111's and ComfyUI's fill the form, and
what cannot be used is named with why; the view (htmx fragment and plain form post) and its
refusals of anything that is not a sound PNG."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from generation import selectors
from generation.engine.contracts import MAX_SEED
from generation.engine.infotext import format_infotext
from generation.engine.model_info import read_model_info
from generation.png_info import A1111, COMFYUI, png_info_from_text
from tests.generation import upload_corpus as corpus


@pytest.fixture(scope="module")
def info():
    return read_model_info(selectors.model_path())  # the test model's (no database at module scope)


def unused_labels(result) -> dict[str, str]:
    return {item.label: item.reason for item in result.unused}


# -- reading the parameters ---------------------------------------------------------------------------


def test_our_own_parameters_fill_every_field(info):
    text = format_infotext(prompt="a red star\non two lines", negative_prompt="blur", steps=12, sampler="ddim",
                           guidance_scale=3.5, seed=42, width=512, height=512, model_hash=info.hash,
                           model_name=info.name)
    result = png_info_from_text({"parameters": text}, info)
    assert result.source == A1111
    assert result.fields == {"prompt": "a red star\non two lines", "negative_prompt": "blur", "steps": 12,
                             "guidance_scale": 3.5, "sampler": "ddim", "seed": 42, "width": 512, "height": 512}
    assert result.unused == []
    assert result.form_values(info) == {**result.fields, "aspect": "1:1", "width": None, "height": None}
    assert ("Sampler", "DDIM") in result.used and ("Size", "512×512") in result.used


def test_a1111_parameters_with_a_separate_schedule_type(info):
    result = png_info_from_text({"parameters": corpus.A1111_PARAMETERS}, info)
    assert result.fields == {
        "prompt": "a lighthouse on a cliff, (storm:1.2), dramatic light", "negative_prompt": "blurry, lowres",
        "steps": 28, "guidance_scale": 6.5, "sampler": "dpmpp_2m_karras", "seed": 1234567, "width": 512, "height": 768,
    }
    assert result.form_values(info)["aspect"] == "2:3"  # 512x768 is this model's 2:3 size
    unused = unused_labels(result)
    assert set(unused) == {"Model", "Denoising strength", "Hires upscale", "Hires upscaler",
                           "Lora hashes", "Version"}
    assert unused["Model"] == f"this studio generates with its model “{info.name}”"
    assert [item.value for item in result.unused if item.label == "Model"] == ["v1-5-pruned-emaonly (6ce0161689)"]
    assert unused["Denoising strength"] == "a canvas setting: not used on Create"
    assert unused["Version"] == "not a setting of Create"
    assert "Schedule type" not in unused


def test_a_karras_schedule_the_sampler_lacks_keeps_the_sampler(info):
    text = "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    result = png_info_from_text({"parameters": text}, info)
    assert result.fields["sampler"] == "euler_a"
    assert unused_labels(result) == {"Schedule type": "Euler a has no Karras schedule here"}


def test_values_the_form_would_refuse_are_listed_not_used(info):
    text = ("a cat\nNegative prompt: dogs\nSteps: 500, Sampler: DPM++ SDE, CFG scale: 45, "
            f"Seed: {MAX_SEED + 1}, Size: 2048x2000")
    result = png_info_from_text({"parameters": text}, info)
    assert result.fields == {"prompt": "a cat", "negative_prompt": "dogs"}
    unused = unused_labels(result)
    assert unused["Steps"] == "steps must be a whole number from 1 to 150"
    assert unused["CFG scale"] == "guidance scale must be a number from 0 to 30"
    assert unused["Seed"] == f"seed must be a whole number from 0 to {MAX_SEED}"
    assert unused["Size"].startswith("width 2048 is above this model's maximum")
    assert unused["Sampler"].startswith("not available here (we have Euler, Euler a")


def test_a_size_of_no_aspect_ratio_comes_as_width_and_height(info):
    result = png_info_from_text({"parameters": "x\nSteps: 20, Seed: 1, Size: 640x448"}, info)
    values = result.form_values(info)
    assert (values["width"], values["height"]) == (640, 448) and "aspect" not in values


def test_unreadable_numbers_are_listed(info):
    result = png_info_from_text({"parameters": "x\nSteps: many, CFG scale: high, Seed: 1, Size: big"}, info)
    assert unused_labels(result) == {"Steps": "not a number we can read", "CFG scale": "not a number we can read",
                                     "Size": "not a number we can read"}
    assert result.fields == {"prompt": "x", "negative_prompt": "", "seed": 1}


def test_a_too_long_prompt_is_not_used(info):
    result = png_info_from_text({"parameters": "y" * 1200 + "\nSteps: 20, Seed: 1, Size: 512x512"}, info)
    assert "prompt" not in result.fields
    assert unused_labels(result)["Prompt"] == "prompt is 1200 characters long; the limit is 1000"


def test_overlong_parameters_are_not_parsed(info):
    """A long last line without colons would keep parse_infotext busy for minutes."""
    import time

    started = time.monotonic()
    result = png_info_from_text({"parameters": "a" * 200_000}, info)
    assert time.monotonic() - started < 1
    assert not result.found
    assert unused_labels(result) == {"parameters": "too long to read"}
    assert result.unused[0].value == "200,000 characters"
    long_prompt = png_info_from_text({"parameters": "p" * 900 + "\n" + "Steps: 20, Seed: 1, Size: 512x512, " + "x" * 4000},
                                     info)
    assert long_prompt.fields["steps"] == 20  # a parameter line just under the limit is read


def test_comfyui_workflow(info):
    result = png_info_from_text({"prompt": json.dumps(corpus.comfyui_prompt()), "workflow": "{}"}, info)
    assert result.source == COMFYUI
    assert result.fields == {"prompt": "a fox in the snow, watercolour", "negative_prompt": "text, watermark",
                             "steps": 24, "guidance_scale": 7.5, "sampler": "euler_a", "width": 640, "height": 448}
    unused = unused_labels(result)
    assert unused["Seed"] == f"seed must be a whole number from 0 to {MAX_SEED}"  # ComfyUI seeds are 64-bit
    assert unused["Model"] == f"this studio generates with its model “{info.name}”"


def test_comfyui_links_karras_and_a_hires_pass(info):
    graph = corpus.comfyui_prompt()
    graph["3"]["inputs"].update(sampler_name="dpmpp_2m", scheduler="karras", seed=["20", 0])
    graph["20"] = {"class_type": "PrimitiveNode", "inputs": {"value": 777}}
    # The positive prompt passes a conditioning node, and its text comes from a string node.
    graph["6"]["inputs"]["text"] = ["21", 0]
    graph["21"] = {"class_type": "String Literal", "inputs": {"string": "a castle"}}
    graph["22"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["6", 0]}}
    graph["3"]["inputs"]["positive"] = ["22", 0]
    # A second, lower-numbered pass that starts from the first one's latent (hires fix) is not the one.
    graph["1"] = {"class_type": "KSampler", "inputs": {**graph["3"]["inputs"], "steps": 9, "denoise": 0.5,
                                                      "latent_image": ["3", 0]}}
    result = png_info_from_text({"prompt": json.dumps(graph)}, info)
    assert result.fields["sampler"] == "dpmpp_2m_karras"
    assert result.fields["seed"] == 777
    assert result.fields["prompt"] == "a castle"
    assert result.fields["steps"] == 24


def test_comfyui_image_to_image_says_so(info):
    graph = corpus.comfyui_prompt()
    graph["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["30", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"]["denoise"] = 0.6
    unused = unused_labels(png_info_from_text({"prompt": json.dumps(graph)}, info))
    assert unused["Denoise"] == "image to image: open the image in the canvas"
    assert unused["Size"] == "the sampler starts from an image: open it in the canvas"


@pytest.mark.parametrize("prompt_chunk", [
    "not json", "[1, 2, 3]", "{}", '{"1": {"class_type": "SaveImage"}}', "[" * 100_000 + "]" * 100_000,
    '{"3": {"class_type": "KSampler", "inputs": "nope"}}',
    ('{"3": {"class_type": "KSampler", "inputs": {"positive": ["4", 0], "steps": "x", "cfg": true}},'
     ' "4": {"class_type": "Loop", "inputs": {"conditioning": ["4", 0]}}}'),
    ('{"3": {"class_type": "KSampler", "inputs": {"seed": ["9", 0], "latent_image": [[], 0]}},'
     ' "9": {"class_type": "P", "inputs": {"value": ["9", 0]}}}'),
], ids=["text", "list", "empty", "no-sampler", "deeply-nested", "bad-inputs", "conditioning-loop", "value-loop"])
def test_broken_comfyui_graphs_are_harmless(info, prompt_chunk):
    result = png_info_from_text({"prompt": prompt_chunk}, info)
    assert result.source == COMFYUI
    assert "prompt" not in result.fields


def test_a_png_without_parameters(info):
    result = png_info_from_text({"Software": "GIMP"}, info)
    assert not result.found and result.source == "" and result.unused == []


def test_a1111_parameters_win_over_a_comfyui_prompt(info):
    result = png_info_from_text({"parameters": "a\nSteps: 5, Seed: 1, Size: 512x512", "prompt": "{}"}, info)
    assert result.source == A1111 and result.fields["steps"] == 5


# -- the view ----------------------------------------------------------------------------------------------

URL = reverse("generation:png_info")


def post(client, data: bytes | None, *, htmx: bool = True, name: str = "picture.png"):
    payload = {} if data is None else {"image": SimpleUploadedFile(name, data, content_type="image/png")}
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.post(URL, payload, **headers)


def fields_json(response) -> dict:
    match = re.search(rb'<script id="png-info-fields" type="application/json">(.*?)</script>', response.content, re.DOTALL)
    assert match, response.content.decode()
    return json.loads(match.group(1))


@pytest.mark.django_db
def test_png_info_needs_login(client):
    response = client.post(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_png_info_is_post_only(client_with_credits):
    assert client_with_credits.get(URL).status_code == 405


@pytest.mark.django_db
def test_htmx_post_answers_the_fragment_with_the_fields(client_with_credits):
    response = post(client_with_credits, corpus.png_with_text(parameters=corpus.A1111_PARAMETERS))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" not in body and "The form is filled in" in body
    assert "Could not use:" in body and "Hires upscaler" in body and "not a setting of Create" in body
    assert fields_json(response) == {
        "prompt": "a lighthouse on a cliff, (storm:1.2), dramatic light", "negative_prompt": "blurry, lowres",
        "steps": 28, "guidance_scale": 6.5, "sampler": "dpmpp_2m_karras", "seed": 1234567,
        "aspect": "2:3", "width": None, "height": None,
    }
    assert "num_images" not in fields_json(response)  # the number of images stays as the user set it


@pytest.mark.django_db
def test_htmx_post_of_a_comfyui_png(client_with_credits):
    response = post(client_with_credits, corpus.comfyui_png())
    assert response.status_code == 200
    assert fields_json(response)["prompt"] == "a fox in the snow, watercolour"
    assert "ComfyUI workflow" in response.content.decode()


@pytest.mark.django_db
def test_a_png_without_parameters_says_so(client_with_credits):
    response = post(client_with_credits, corpus.png_rgb())
    assert response.status_code == 200
    assert b"This PNG carries no generation parameters." in response.content
    assert b"png-info-fields" not in response.content


@pytest.mark.django_db
def test_no_file_is_a_400(client_with_credits):
    response = post(client_with_credits, None)
    assert response.status_code == 400
    assert b"Choose a PNG file to read its parameters." in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(("data", "status", "message"), [
    (corpus.jpeg_rgb(), 400, "Parameters are read from PNG files only; this file is a JPEG."),
    (corpus.webp_rgb(), 400, "Parameters are read from PNG files only; this file is a WebP."),
    (b"", 400, "The file is empty."),
    (corpus.gif_named_png(), 400, "This file is a GIF image"),
    (corpus.svg_with_script(), 400, "This file is an SVG image"),
    (corpus.html_named_png(), 400, "This file is an HTML or XML document"),
    (corpus.truncated_png(), 400, "damaged or incomplete"),
    (corpus.animated_png(), 400, "Animated images are not accepted"),
    (corpus.header_claims_enormous_size(), 413, "too many pixels"),
    (corpus.decompression_bomb(), 413, "the limit is 4096×4096"),
], ids=["jpeg", "webp", "empty", "gif", "svg", "html", "truncated", "animated", "huge-header", "bomb"])
def test_anything_but_a_sound_png_is_refused_with_its_message(client_with_credits, data, status, message):
    for htmx in (True, False):
        response = post(client_with_credits, data, htmx=htmx)
        assert response.status_code == status
        assert message in response.content.decode()


@pytest.mark.django_db
def test_a_file_over_the_byte_limit_is_a_413(client_with_credits, settings):
    data = corpus.png_with_text(parameters=corpus.A1111_PARAMETERS)
    settings.STUDIO_UPLOAD_MAX_BYTES = len(data) - 1
    response = post(client_with_credits, data)
    assert response.status_code == 413
    assert b"The file is larger than" in response.content


@pytest.mark.django_db
def test_the_polyglot_png_reads_without_echoing_its_html(client_with_credits):
    data = corpus.png_with_text(parameters="<script>alert(1)</script>\nSteps: 20, Seed: 1, Size: 512x512") \
        + b"<html><script>alert(2)</script></html>"
    response = post(client_with_credits, data)
    assert response.status_code == 200
    assert b"<script>alert" not in response.content  # escaped in the page and in the JSON
    assert fields_json(response)["prompt"] == "<script>alert(1)</script>"


@pytest.mark.django_db
def test_plain_post_re_renders_create_with_the_form_prefilled(client_with_credits):
    response = post(client_with_credits, corpus.png_with_text(parameters=corpus.A1111_PARAMETERS), htmx=False)
    assert response.status_code == 200
    assert response.templates[0].name == "generation/create.html"
    form = response.context["form"]
    assert form.initial["prompt"] == "a lighthouse on a cliff, (storm:1.2), dramatic light"
    assert form.initial["steps"] == 28 and form.initial["sampler"] == "dpmpp_2m_karras"
    assert form.initial["aspect"] == "2:3" and "width" not in form.initial
    body = response.content.decode()
    assert re.search(r">\s*a lighthouse on a cliff, \(storm:1.2\), dramatic light</textarea>", body)
    assert re.search(r'<input type="number" name="steps" value="28"', body)
    assert re.search(r'<option value="dpmpp_2m_karras" selected>', body)
    assert re.search(r'<input type="radio" name="aspect" value="2:3" id="[^"]+" checked>', body)
    assert "The form is filled in" in body and "Could not use:" in body


@pytest.mark.django_db
def test_plain_post_with_a_custom_size(client_with_credits):
    data = corpus.png_with_text(parameters="x\nSteps: 20, Seed: 3, Size: 640x448")
    form = post(client_with_credits, data, htmx=False).context["form"]
    assert (form.initial["width"], form.initial["height"]) == (640, 448)


@pytest.mark.django_db
def test_create_page_has_the_png_info_form(client_with_credits):
    body = client_with_credits.get(reverse("generation:create")).content.decode()
    assert f'action="{URL}" enctype="multipart/form-data"' in body
    assert 'type="file" name="image" accept="image/png"' in body
    assert "js/png-info.js" in body and "css/png-info.css" in body
    # It is not inside the Create form (forms do not nest): it comes before it.
    assert body.index('id="png-info"') < body.index('id="create-form"')
    assert body.index("</section>", body.index('id="png-info"')) < body.index('id="create-form"')


@pytest.mark.django_db
def test_plain_post_keeps_the_remembered_destination(client_with_credits):
    from generation import services
    from generation.views import DESTINATION_KEY

    team = services.team_create(user=client_with_credits.user, name="Lighthouse keepers")
    session = client_with_credits.session
    session[DESTINATION_KEY] = {"save_to": str(team.pk), "bill_team": True}
    session.save()
    form = post(client_with_credits, corpus.png_with_text(parameters=corpus.A1111_PARAMETERS), htmx=False).context["form"]
    assert form.initial["save_to"] == str(team.pk) and form.initial["bill_team"] is True
    assert form.initial["steps"] == 28


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [True, False], ids=["fragment", "page"])
def test_the_only_inline_script_is_json_data(client_with_credits, htmx):
    """CSP: no inline script runs; the fields travel in a JSON script element, which is data."""
    body = post(client_with_credits, corpus.png_with_text(parameters=corpus.A1111_PARAMETERS), htmx=htmx).content
    inline = re.findall(rb"<script(?![^>]*\bsrc=)[^>]*>", body, re.IGNORECASE)
    assert inline == [b'<script id="png-info-fields" type="application/json">']
    assert not re.search(rb"<[^>]+\s(style|on\w+)=", body, re.IGNORECASE)
