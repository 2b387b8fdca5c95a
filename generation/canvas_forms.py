"""The canvas form: the Create form plus a source image, a mask and the inpaint options.

One form and one `job_submit` for every mode (docs/canvas.md). The source comes as an upload or
as one of the user's images; uploads (source and mask) go through the upload service, which
refuses anything but a real PNG, JPEG or WebP within the limits and re-encodes it without
metadata. The size generated follows from the source: the source itself (img2img scales it down
to the model's maximum), the padded canvas (outpaint), or the model's native size around the
mask ("only masked").
"""

from __future__ import annotations

import io

from django import forms
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from generation.engine.contracts import (
    MASKED_CONTENT,
    MAX_MASK_BLUR,
    MAX_ONLY_MASKED_PADDING,
    GenerationRequest,
    InvalidRequest,
)
from generation.engine.inpainting import check_canvas, load_source, outpaint_canvas
from generation.forms import CreateForm
from generation.models import CANVAS_FIELDS, Image, JobMode
from generation.services import CanvasInput
from generation.services.uploads import UploadRefused, upload_read_image

CANVAS_MODES = [(mode.value, mode.label) for mode in JobMode if mode != JobMode.TXT2IMG]
MAX_OUTPAINT = 512  # pixels per side; the padded canvas must still fit the model's maximum


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _multiple_of_8(value: int) -> int:
    return max(8, value - value % 8)


class CanvasForm(CreateForm):
    mode = forms.ChoiceField(choices=CANVAS_MODES, initial=JobMode.INPAINT)
    source = forms.FileField(required=False, label="Upload an image",
                             help_text="PNG, JPEG or WebP. It stays private, like your other images.")
    source_image = forms.UUIDField(required=False, widget=forms.HiddenInput)
    mask = forms.FileField(required=False, widget=forms.FileInput(attrs={"accept": "image/png", "hidden": True}))
    strength = forms.FloatField(min_value=0, max_value=1, initial=0.75, label="Denoising strength")
    mask_blur = forms.IntegerField(min_value=0, max_value=MAX_MASK_BLUR, initial=4, label="Mask blur")
    masked_content = forms.ChoiceField(choices=list(MASKED_CONTENT.items()), initial="original",
                                       label="Masked content")
    only_masked = forms.BooleanField(required=False, label="Only masked",
                                     help_text="Generate around the mask at the model's size, then paste back.")
    only_masked_padding = forms.IntegerField(min_value=0, max_value=MAX_ONLY_MASKED_PADDING, initial=32,
                                             label="Padding")
    outpaint_left = forms.IntegerField(min_value=0, max_value=MAX_OUTPAINT, initial=0, label="Left")
    outpaint_top = forms.IntegerField(min_value=0, max_value=MAX_OUTPAINT, initial=0, label="Top")
    outpaint_right = forms.IntegerField(min_value=0, max_value=MAX_OUTPAINT, initial=0, label="Right")
    outpaint_bottom = forms.IntegerField(min_value=0, max_value=MAX_OUTPAINT, initial=0, label="Bottom")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, user=user, **kwargs)
        for name in ("aspect", "width", "height"):  # the size follows from the source
            self.fields[name].required = False
        self.user = user
        self.canvas: CanvasInput | None = None
        self._source_png: bytes | None = None
        self._source_size: tuple[int, int] | None = None

    # -- the source and the mask -----------------------------------------------------------------

    def clean_source_image(self) -> Image | None:
        image_id = self.cleaned_data.get("source_image")
        if image_id is None:
            return None
        image = Image.objects.visible_to(self.user).filter(pk=image_id).first()
        if image is None:
            raise ValidationError("No such image.")
        return image

    def _read_upload(self, field: str) -> bytes | None:
        upload = self.files.get(field)
        if upload is None:
            return None
        try:
            return upload_read_image(data=upload).png
        except UploadRefused as error:
            self.add_error(field, str(error))
            return None

    def _source(self, data: dict) -> PILImage.Image | None:
        """The source picture, checked by the upload service (my own images are re-read and
        re-encoded like any upload), or None with the field's error added."""
        if data.get("source_image") is not None:
            with default_storage.open(data["source_image"].file.name, "rb") as handle:
                return load_source(upload_read_image(data=handle.read()).png)
        if self.files.get("source") is not None:
            png = self._read_upload("source")
            return load_source(png) if png is not None else None
        self.add_error("source", "Choose an image to start from: upload one or open one of yours.")
        return None

    # -- the size generated ----------------------------------------------------------------------

    def size_asked(self, data: dict) -> tuple[int, int]:
        """Decided by the source (see the module docstring), never by the aspect ratio."""
        return self._generation_size

    def clean(self):
        data = forms.Form.clean(self)  # the fields alone; CreateForm.clean runs once the size is known
        if self.errors:
            return data
        picture = self._source(data)
        if picture is None:
            return data
        try:
            self._prepare(data, picture)
        except ValidationError as error:
            self.add_error(None, error)
            return data
        data = super().clean()
        if not self.errors:
            self._check_engine_request(data)
        return data

    def _prepare(self, data: dict, picture: PILImage.Image) -> None:
        """Build the CanvasInput and the size to generate for the chosen mode."""
        info = self.model_info
        mode = data["mode"]
        mask_png = self._read_upload("mask") if mode in (JobMode.INPAINT, JobMode.OUTPAINT) else None
        outpaint = tuple(data[f"outpaint_{side}"] for side in ("left", "top", "right", "bottom"))
        only_masked = bool(data.get("only_masked")) and mode == JobMode.INPAINT
        if mode == JobMode.IMG2IMG:
            picture = self._fit(picture, info.max_width, info.max_height)
        elif mode == JobMode.OUTPAINT:
            if not any(outpaint):
                raise ValidationError("Extend the picture on at least one side.")
            picture, mask = outpaint_canvas(self._fit(picture, info.max_width, info.max_height), left=outpaint[0],
                                            top=outpaint[1], right=outpaint[2], bottom=outpaint[3])
            mask_png = _png(mask)
        elif mode == JobMode.INPAINT:
            if mask_png is None:
                if "mask" not in self.errors:
                    self.add_error("mask", "Paint the area to repaint: the mask is empty.")
                raise ValidationError("There is no mask.")
            if not only_masked and (picture.width > info.max_width or picture.height > info.max_height):
                raise ValidationError(
                    f"This image is {picture.width}×{picture.height}; the model inpaints the whole picture up to "
                    f"{info.max_width}×{info.max_height}. Tick “Only masked” to repaint just the masked area."
                )
            if not only_masked:
                picture, mask_png = self._crop_to_multiple_of_8(picture, mask_png)
        if not only_masked and (picture.width > info.max_width or picture.height > info.max_height):
            raise ValidationError(f"The canvas would be {picture.width}×{picture.height}; this model's maximum "
                                  f"is {info.max_width}×{info.max_height}. Extend it by less.")
        self._generation_size = (info.native_width, info.native_height) if only_masked else picture.size
        self.canvas = CanvasInput(
            mode=mode, source_png=_png(picture), mask_png=mask_png, strength=data["strength"],
            mask_blur=data["mask_blur"], masked_content=data["masked_content"], only_masked=only_masked,
            only_masked_padding=data["only_masked_padding"], outpaint=outpaint if mode == JobMode.OUTPAINT else (0,) * 4,
            source_image=data.get("source_image"),
        )

    @staticmethod
    def _fit(picture: PILImage.Image, max_width: int, max_height: int) -> PILImage.Image:
        """Scaled down (never up) to fit the model's maximum, sides multiples of 8."""
        scale = min(1.0, max_width / picture.width, max_height / picture.height)
        size = (_multiple_of_8(round(picture.width * scale)), _multiple_of_8(round(picture.height * scale)))
        return picture if size == picture.size else picture.resize(size, PILImage.Resampling.LANCZOS)

    @staticmethod
    def _crop_to_multiple_of_8(picture: PILImage.Image, mask_png: bytes) -> tuple[PILImage.Image, bytes]:
        """Whole-picture inpainting generates at the source's own size, which must be a multiple
        of 8: the last few rows and columns are trimmed (never resampled, so the kept pixels stay)."""
        size = (_multiple_of_8(picture.width), _multiple_of_8(picture.height))
        if size == picture.size:
            return picture, mask_png
        box = (0, 0, *size)
        mask = PILImage.open(io.BytesIO(mask_png))
        return picture.crop(box), _png(mask.crop(box)) if mask.size == picture.size else mask_png

    def _check_engine_request(self, data: dict) -> None:
        """Decode and check the canvas as the engine will (mask size, empty mask, strength)."""
        fields = {**self.request_fields(), **{name: getattr(self.canvas, name) for name in CANVAS_FIELDS}}
        request = GenerationRequest(**fields, mode=JobMode.INPAINT if self.canvas.mode == JobMode.OUTPAINT
                                    else self.canvas.mode, init_image=self.canvas.source_png, mask=self.canvas.mask_png)
        try:
            check_canvas(request)
        except InvalidRequest as error:
            field = {"init_image": "source", "mask": "mask"}.get(error.field, error.field)
            self.add_error(field if field in self.fields else None, error.message)
