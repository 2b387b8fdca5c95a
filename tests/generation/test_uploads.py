"""The upload service against a corpus of hostile and odd files (tests/generation/upload_corpus.py):
each one is refused with its message and status, or comes out as a clean, upright, 8-bit sRGB PNG
with no metadata at all."""

from __future__ import annotations

import io
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from generation.services.uploads import UploadedImage, UploadRefused, upload_read_image, upload_read_png_text
from tests.generation import upload_corpus as corpus

CLEAN_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}


def as_upload(data: bytes, name: str = "picture.png", content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def decoded(result: UploadedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.png))
    image.load()
    return image


def assert_clean(result: UploadedImage) -> Image.Image:
    """A PNG of pixels only: no text, EXIF, ICC, gamma, time or any other ancillary chunk."""
    assert set(corpus.chunk_types(result.png)) <= CLEAN_CHUNKS
    image = decoded(result)
    assert image.format == "PNG"
    assert image.mode in ("RGB", "RGBA")
    assert (image.width, image.height) == (result.width, result.height)
    assert not image.info.get("icc_profile") and not image.getexif() and not getattr(image, "text", {})
    return image


REFUSED = [
    # (file, name it is uploaded under, status, words of the message)
    pytest.param(b"", "empty.png", 400, "The file is empty.", id="zero-bytes"),
    pytest.param(corpus.truncated_png(), "cut.png", 400, "damaged or incomplete", id="truncated-png"),
    pytest.param(corpus.truncated_jpeg(), "cut.jpg", 400, "damaged or incomplete", id="truncated-jpeg"),
    pytest.param(corpus.png_magic_then_garbage(), "x.png", 400, "damaged or incomplete", id="png-magic-garbage"),
    pytest.param(corpus.webp_magic_then_garbage(), "x.webp", 400, "damaged or incomplete", id="webp-magic-garbage"),
    pytest.param(corpus.gif_named_png(), "really-a-gif.png", 400, "This file is a GIF image", id="gif-named-png"),
    pytest.param(corpus.tiff_named_png(), "tiff.png", 400, "This file is a TIFF image", id="tiff-named-png"),
    pytest.param(corpus.eps_named_png(), "eps.png", 400, "This file is a PostScript (EPS) file", id="eps-named-png"),
    pytest.param(corpus.svg_with_script(), "vector.png", 400, "This file is an SVG image", id="svg-with-script"),
    pytest.param(corpus.html_named_png(), "page.png", 400, "This file is an HTML or XML document", id="html-named-png"),
    pytest.param(b"just some text", "notes.png", 400, "not an image we can read", id="text"),
    pytest.param(corpus.animated_png(), "anim.png", 400, "Animated images are not accepted", id="animated-png"),
    pytest.param(corpus.animated_webp(), "anim.webp", 400, "Animated images are not accepted", id="animated-webp"),
    pytest.param(corpus.header_claims_enormous_size(), "huge.png", 413, "too many pixels", id="header-10-gigapixels"),
    pytest.param(corpus.decompression_bomb(), "bomb.png", 413, "5000×5000 pixels; the limit is 4096×4096",
                 id="decompression-bomb"),
]


@pytest.mark.parametrize(("data", "name", "status", "message"), REFUSED)
def test_hostile_files_are_refused_with_a_message_and_status(data, name, status, message):
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=as_upload(data, name))
    assert message in refused.value.message
    assert str(refused.value) == refused.value.message
    assert refused.value.status == status


@pytest.mark.parametrize(("data", "name", "status", "message"), REFUSED)
def test_hostile_files_are_refused_as_bytes_too(data, name, status, message):
    with pytest.raises(UploadRefused, match=None) as refused:
        upload_read_image(data=data)
    assert message in refused.value.message


def test_the_refusal_names_the_accepted_formats():
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=corpus.gif_named_png())
    assert refused.value.message == "This file is a GIF image: upload a PNG, JPEG or WebP image."


def test_the_bomb_is_refused_before_its_pixels_are_decoded(monkeypatch):
    """The header check comes first: decoding the 5000x5000 bomb would call ImageFile.load."""
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=corpus.decompression_bomb())
    assert refused.value.status == 413


def test_pillows_bomb_warning_is_an_error(settings, monkeypatch):
    """With our own limit out of the way, Pillow's warning zone (between its limit and twice it)
    must refuse the file too, not just warn."""
    settings.STUDIO_UPLOAD_MAX_PIXELS = 10**12
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=corpus.png_rgb((40, 40)))  # 1600 pixels: Pillow would only warn
    assert refused.value.status == 413
    assert "too many pixels" in refused.value.message


def test_over_the_pixel_limit_but_under_the_byte_limit(settings):
    settings.STUDIO_UPLOAD_MAX_PIXELS = 64 * 64
    data = corpus.png_rgb((65, 64))
    assert len(data) < settings.STUDIO_UPLOAD_MAX_BYTES
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=data)
    assert refused.value.message == "The image is 65×64 pixels; the limit is 64×64 pixels."
    assert refused.value.status == 413
    assert upload_read_image(data=corpus.png_rgb((64, 64))).width == 64


def test_the_pixel_limit_counts_the_upright_picture_too(settings):
    settings.STUDIO_UPLOAD_MAX_PIXELS = 40 * 20
    assert upload_read_image(data=corpus.exif_rotated_jpeg()).height == 40
    settings.STUDIO_UPLOAD_MAX_PIXELS = 40 * 20 - 1
    with pytest.raises(UploadRefused):
        upload_read_image(data=corpus.exif_rotated_jpeg())


def test_over_the_byte_limit(settings):
    data = corpus.png_rgb((64, 64))
    settings.STUDIO_UPLOAD_MAX_BYTES = len(data) - 1
    for form in (data, as_upload(data)):
        with pytest.raises(UploadRefused) as refused:
            upload_read_image(data=form)
        assert refused.value.status == 413
        assert refused.value.message.startswith("The file is larger than")
    settings.STUDIO_UPLOAD_MAX_BYTES = len(data)
    assert upload_read_image(data=as_upload(data)).width == 64


class EndlessStream(io.RawIOBase):
    """A file of unknown size that never ends, counting what was read from it."""

    def __init__(self):
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        buffer[:] = b"\x89" * len(buffer)
        self.bytes_read += len(buffer)
        return len(buffer)


def test_never_reads_more_than_the_limit_plus_one_byte(settings):
    settings.STUDIO_UPLOAD_MAX_BYTES = 10_000
    stream = EndlessStream()
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=stream)
    assert refused.value.status == 413
    assert stream.bytes_read <= 10_001


def test_a_declared_size_over_the_limit_is_refused_before_reading(settings):
    settings.STUDIO_UPLOAD_MAX_BYTES = 100
    upload = as_upload(corpus.png_rgb())
    upload.file = EndlessStream()  # the size Django declared is enough; nothing is read
    upload.size = 5000
    with pytest.raises(UploadRefused):
        upload_read_image(data=upload)
    assert upload.file.bytes_read == 0


# -- accepted files come out clean --------------------------------------------------------------------


@pytest.mark.parametrize(("data", "fmt"), [
    (corpus.png_rgb(), "PNG"), (corpus.jpeg_rgb(), "JPEG"), (corpus.webp_rgb(), "WEBP"),
], ids=["png", "jpeg", "webp"])
def test_png_jpeg_and_webp_are_re_encoded_as_png(data, fmt):
    result = upload_read_image(data=as_upload(data, "whatever.bin", "application/octet-stream"))
    assert (result.width, result.height, result.format) == (32, 24, fmt)
    image = assert_clean(result)
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((5, 5))
    assert red > 180 and green < 70 and blue < 70


def test_a_jpeg_named_png_is_judged_by_its_content():
    result = upload_read_image(data=as_upload(corpus.jpeg_rgb(), "photo.png", "image/png"))
    assert result.format == "JPEG"


def test_one_by_one():
    result = upload_read_image(data=corpus.one_by_one())
    assert (result.width, result.height) == (1, 1)
    assert assert_clean(result).getpixel((0, 0)) == (10, 20, 30)


def test_exif_orientation_is_applied_then_exif_is_gone():
    result = upload_read_image(data=as_upload(corpus.exif_rotated_jpeg(), "photo.jpg", "image/jpeg"))
    assert (result.width, result.height) == (20, 40)  # turned 90° clockwise
    image = assert_clean(result)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert b"SecretCam" not in result.png


def test_every_bit_of_png_metadata_is_stripped():
    original = corpus.png_with_metadata()
    assert len(original) > 2 * 1024 * 1024
    result = upload_read_image(data=original)
    assert_clean(result)
    for secret in (b"secret-xmp", b"SecretCam", b"private tool", "秘密".encode(), b"xxxxxxxx"):
        assert secret not in result.png
    assert len(result.png) < 10_000


def test_an_icc_profile_is_applied_and_dropped():
    result = upload_read_image(data=corpus.png_with_metadata())
    image = assert_clean(result)
    red, green, blue = image.getpixel((1, 1))  # sRGB to sRGB keeps the colour
    assert abs(red - 200) <= 2 and abs(green - 40) <= 2 and abs(blue - 40) <= 2


def test_a_broken_icc_profile_is_ignored():
    result = upload_read_image(data=corpus.png_with_broken_icc())
    assert assert_clean(result).getpixel((1, 1)) == (200, 40, 40)


def test_cmyk_jpeg_becomes_rgb():
    result = upload_read_image(data=corpus.cmyk_jpeg())
    image = assert_clean(result)
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((8, 8))
    assert red > 220 and green < 40 and blue < 40


def test_16_bit_grey_is_scaled_not_clipped():
    result = upload_read_image(data=corpus.png_16bit_grey())
    image = assert_clean(result)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in (0, 64, 128, 255)] == [0, 64, 128, 255]
    assert image.getpixel((5, 1)) == (128, 128, 128)


def test_16_bit_rgb():
    result = upload_read_image(data=corpus.png_16bit_rgb())
    image = assert_clean(result)
    assert [image.getpixel((x, 0)) for x in range(4)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)]


def test_palette_transparency_becomes_rgba():
    result = upload_read_image(data=corpus.palette_png_with_transparency())
    image = assert_clean(result)
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0
    assert [image.getpixel((x, 0)) for x in (1, 2, 3)] == [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255)]


def test_alpha_is_kept():
    result = upload_read_image(data=corpus.rgba_png())
    image = assert_clean(result)
    assert image.mode == "RGBA"
    assert image.getpixel((1, 1)) == (0, 128, 0, 255)
    assert image.getpixel((6, 1))[3] == 0


def test_an_opaque_alpha_channel_is_dropped():
    """What a browser canvas exports: RGBA with every pixel opaque. Kept, its alpha would turn a
    black-and-white mask into a mask of everything."""
    picture = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    picture.paste((255, 255, 255, 255), (2, 2, 6, 6))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    image = assert_clean(upload_read_image(data=buffer.getvalue()))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((3, 3)) == (255, 255, 255)


def test_html_appended_to_a_png_does_not_survive():
    result = upload_read_image(data=as_upload(corpus.png_with_html_appended()))
    assert_clean(result)
    assert b"<script" not in result.png and b"<html" not in result.png
    assert (result.width, result.height) == (32, 24)


def test_a_multi_picture_jpeg_keeps_its_primary_picture():
    result = upload_read_image(data=corpus.mpo_jpeg())
    assert result.format == "JPEG"
    red, _green, blue = assert_clean(result).getpixel((8, 8))
    assert red > 220 and blue < 40


def test_a_zlib_bomb_in_a_text_chunk_is_refused_not_decompressed():
    """A zTXt chunk that inflates to 200 MB: Pillow stops at its text limit; so do we."""
    bomb = zlib.compress(b"\x00" * (200 * 1024 * 1024), 9)
    data = corpus.png_rgb()
    iend = data.rindex(b"IEND") - 4
    data = data[:iend] + corpus.png_chunk(b"zTXt", b"Comment\x00\x00" + bomb) + data[iend:]
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=data)
    assert refused.value.status == 400


# -- text chunks for PNG info -------------------------------------------------------------------------


def test_png_text_reads_the_original_chunks():
    text = upload_read_png_text(data=as_upload(corpus.png_with_text(parameters="a cat\nSteps: 20, Seed: 1, Size: 8x8")))
    assert text == {"parameters": "a cat\nSteps: 20, Seed: 1, Size: 8x8"}


def test_png_text_reads_itxt_and_ztxt():
    text = upload_read_png_text(data=corpus.png_with_metadata())
    assert text["Description"] == "秘密の説明 — secret"
    assert text["Software"] == "private tool"
    assert type(text["Description"]) is str


@pytest.mark.parametrize(("data", "words"), [
    (corpus.jpeg_rgb(), "this file is a JPEG"), (corpus.webp_rgb(), "this file is a WebP"),
])
def test_png_text_refuses_other_formats(data, words):
    with pytest.raises(UploadRefused) as refused:
        upload_read_png_text(data=data)
    assert refused.value.message == f"Parameters are read from PNG files only; {words}."


@pytest.mark.parametrize(("data", "name", "status", "message"), REFUSED)
def test_png_text_refuses_hostile_files_the_same_way(data, name, status, message):
    with pytest.raises(UploadRefused) as refused:
        upload_read_png_text(data=as_upload(data, name))
    assert refused.value.status == status


# -- Django's own storing of an upload is bounded too ----------------------------------------------------


@pytest.mark.parametrize("memory_limit", [10**7, 100], ids=["in-memory", "temporary-file"])
def test_django_stores_at_most_the_limit_plus_one_byte_of_an_upload(rf, settings, memory_limit):
    settings.STUDIO_UPLOAD_MAX_BYTES = 1000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = memory_limit
    data = corpus.png_rgb() + b"\x00" * 50_000
    request = rf.post("/", {"image": as_upload(data), "after": "kept", "second": as_upload(corpus.png_rgb())})
    stored = request.FILES["image"]
    assert stored.size == 1001
    stored.seek(0, io.SEEK_END)
    assert stored.tell() == 1001
    assert request.POST["after"] == "kept"  # the rest of the form is still read
    assert request.FILES["second"].size == len(corpus.png_rgb())
    with pytest.raises(UploadRefused) as refused:
        upload_read_image(data=stored)
    assert refused.value.status == 413
    assert upload_read_image(data=request.FILES["second"]).width == 32


# -- through the canvas page: every hostile source is a 4xx with its message, never a 500 ----------------


CANVAS_REFUSALS = [pytest.param(data, status, message, id=param.id) for param in REFUSED
                   for data, _name, status, message in [param.values] if data]


@pytest.mark.django_db
@pytest.mark.parametrize(("data", "status", "message"), CANVAS_REFUSALS)
def test_hostile_canvas_sources_are_refused_with_their_message(client_with_credits, data, status, message):
    from django.urls import reverse

    from generation.models import Job

    response = client_with_credits.post(reverse("generation:canvas"), {
        "prompt": "a red circle", "negative_prompt": "", "aspect": "1:1", "steps": 8, "guidance_scale": 3,
        "sampler": "euler", "seed": 1, "num_images": 1, "mode": "img2img", "strength": 0.8, "mask_blur": 4,
        "masked_content": "original", "only_masked_padding": 32, "outpaint_left": 0, "outpaint_top": 0,
        "outpaint_right": 0, "outpaint_bottom": 0, "source": as_upload(data, "source.png"),
    })
    assert response.status_code == 400  # the canvas form answers every refusal with 400
    assert message in response.content.decode()
    assert not Job.objects.exists()
