"""The forms of fine-tuning (docs/fine-tuning.md, "Pages"): the pictures of a new training, its
captions and settings, the live cost quote's fields, and the LoRA library's forms.

A new training takes two steps. The first (TrainingImagesForm) takes 3-50 pictures, uploaded
(each through the upload service: a checked, re-encoded PNG) or picked from the user's gallery,
and the instance prompt that every caption starts as. The second (TrainingSettingsForm) shows a
caption per picture, the method, a preset and the advanced settings. Nothing is charged until
the second step's submit, which goes through services.training_submit.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from generation.engine.training.spec import (
    MAX_CAPTION_CHARS,
    MAX_CLASS_IMAGES,
    MAX_CLASS_PROMPTS,
    MAX_IMAGES,
    MAX_LEARNING_RATE,
    MAX_PRIOR_LOSS_WEIGHT,
    MAX_RANK,
    MAX_STEPS,
    METHODS,
    MIN_IMAGES,
    MIN_LEARNING_RATE,
    MIN_PRIOR_LOSS_WEIGHT,
    MIN_RANK,
    MIN_STEPS,
    PRESETS,
    TrainingSpec,
    class_prompt_fields,
)
from generation.models import Image
from generation.services.loras import MAX_DESCRIPTION_CHARS, lora_name_problem
from generation.services.uploads import ACCEPTED, UploadRefused, upload_read_image
from generation.upload_handlers import LORA_FIELD

PRESET_HELP = {
    "quick": "a first try in minutes",
    "standard": "a good default",
    "thorough": "more steps, a larger rank",
}
MAX_RESOLUTION = 1024


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Any number of files under one name (Django's documented recipe)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/png,image/jpeg,image/webp"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, (list, tuple)):
            return [super(MultipleFileField, self).clean(item, initial) for item in data if item]
        return [super().clean(data, initial)] if data else []


def clean_lora_name(value: str) -> str:
    value = (value or "").strip()
    problem = lora_name_problem(value)
    if problem:
        raise ValidationError(problem)
    return value


class TrainingImagesForm(forms.Form):
    """Step 1: the pictures and the instance prompt. `gallery` offers the user's own images."""

    images = MultipleFileField(required=False, label="Upload pictures",
                               help_text=f"{ACCEPTED}; {MIN_IMAGES} to {MAX_IMAGES} pictures in all.")
    gallery_images = forms.TypedMultipleChoiceField(required=False, coerce=str, label="Or pick from my images")
    instance_prompt = forms.CharField(
        max_length=MAX_CAPTION_CHARS, label="Instance prompt",
        widget=forms.TextInput(attrs={"placeholder": "a photo of zwx dog"}),
        help_text="What the pictures show, with a rare word for the new thing (zwx). "
                  "Every caption starts as this.",
    )

    def __init__(self, *args, user, gallery: list[Image], **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.gallery = gallery
        self.fields["gallery_images"].choices = [(str(image.pk), str(image.pk)) for image in gallery]
        self.pictures: list[tuple[bytes, Image | None]] = []  # (checked PNG, the gallery image or None)
        self.status = 400

    def clean_images(self) -> list:
        files = self.cleaned_data["images"]
        if len(files) > MAX_IMAGES:
            raise ValidationError(f"{len(files)} files: a training takes at most {MAX_IMAGES} pictures.")
        problems = []
        for upload in files:
            try:
                self.pictures.append((upload_read_image(data=upload).png, None))
            except UploadRefused as refused:
                problems.append(f"{upload.name}: {refused.message}")
                self.status = max(self.status, refused.status)
        if problems:
            raise ValidationError(problems)
        return files

    def clean_gallery_images(self) -> list[Image]:
        chosen = set(self.cleaned_data["gallery_images"])
        images = [image for image in self.gallery if str(image.pk) in chosen]
        for image in images:
            try:
                with image.file.open("rb") as handle:
                    png = upload_read_image(data=handle.read()).png  # its text chunks (the prompt) stay behind
            except (OSError, UploadRefused):
                when = f"{image.created_at:%Y-%m-%d %H:%M}"
                raise ValidationError(f"Your image from {when} could not be read.") from None
            self.pictures.append((png, image))
        return images

    def clean(self):
        cleaned = super().clean()
        count = len(self.pictures)
        if self.errors:
            return cleaned
        if count < MIN_IMAGES:
            raise ValidationError(f"{count} picture{'s' if count != 1 else ''}: a training takes {MIN_IMAGES} to "
                                  f"{MAX_IMAGES}. Upload more, or pick some from your images.")
        if count > MAX_IMAGES:
            raise ValidationError(f"{count} pictures: a training takes at most {MAX_IMAGES}.")
        return cleaned


class TrainingSettingsForm(forms.Form):
    """Step 2: a caption per picture, the name, the method, a preset, the advanced settings.

    Blank advanced fields take the preset's value (PRESETS); the resolution defaults to the
    model's native size. `spec_fields()` is what services.training_submit takes."""

    name = forms.CharField(max_length=64, label="Name",
                           help_text="What the LoRA is called: <lora:name:0.8> in a prompt.")
    instance_prompt = forms.CharField(max_length=MAX_CAPTION_CHARS, label="Instance prompt")
    method = forms.ChoiceField(choices=list(METHODS.items()), initial="lora", widget=forms.RadioSelect)
    preset = forms.ChoiceField(choices=[(key, key.capitalize()) for key in PRESETS], initial="quick",
                               widget=forms.RadioSelect)
    rank = forms.IntegerField(required=False, min_value=MIN_RANK, max_value=MAX_RANK)
    learning_rate = forms.FloatField(required=False, min_value=MIN_LEARNING_RATE, max_value=MAX_LEARNING_RATE,
                                     label="Learning rate", widget=forms.NumberInput(attrs={"step": "any"}))
    steps = forms.IntegerField(required=False, min_value=MIN_STEPS, max_value=MAX_STEPS)
    resolution = forms.IntegerField(required=False, min_value=64, max_value=MAX_RESOLUTION,
                                    widget=forms.NumberInput(attrs={"step": 8}))
    train_text_encoder = forms.BooleanField(required=False, label="Also train the text encoder")
    # DreamBooth
    instance_token = forms.CharField(required=False, max_length=32, label="Instance token",
                                     widget=forms.TextInput(attrs={"placeholder": "zwx"}))
    class_prompt = forms.CharField(
        required=False, max_length=MAX_CLASS_PROMPTS * (MAX_CAPTION_CHARS + 1), label="Class prompt",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "a photo of a dog"}))
    prior_preservation = forms.BooleanField(required=False, initial=True, label="Prior preservation")
    prior_loss_weight = forms.FloatField(
        required=False, min_value=MIN_PRIOR_LOSS_WEIGHT, max_value=MAX_PRIOR_LOSS_WEIGHT, label="Prior weight",
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": f"{TrainingSpec.prior_loss_weight:g}"}))
    num_class_images = forms.IntegerField(required=False, min_value=1, max_value=MAX_CLASS_IMAGES, initial=20,
                                          label="Class images")
    full_finetune = forms.BooleanField(required=False, label="Full fine-tune (a private model variant)")

    def __init__(self, *args, image_count: int, native_resolution: int, may_full_finetune: bool,
                 instance_prompt: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.image_count = image_count
        self.native_resolution = native_resolution
        self.fields["resolution"].widget.attrs["placeholder"] = str(native_resolution)
        if not may_full_finetune:
            del self.fields["full_finetune"]
        for index in range(image_count):
            self.fields[f"caption_{index}"] = forms.CharField(
                max_length=MAX_CAPTION_CHARS, initial=instance_prompt, label=f"Caption {index + 1}",
                widget=forms.Textarea(attrs={"rows": 2}),
                error_messages={"required": "Every picture needs a caption."})

    def clean_name(self) -> str:
        return clean_lora_name(self.cleaned_data["name"])

    def caption_fields(self):
        return [self[f"caption_{index}"] for index in range(self.image_count)]

    def captions(self) -> list[str]:
        return [self.cleaned_data[f"caption_{index}"].strip() for index in range(self.image_count)]

    def clean_class_prompt(self) -> str:
        """One class prompt, or several, one per line (class images are spread over them)."""
        prompts = class_prompt_fields(self.cleaned_data["class_prompt"] or "")
        lines = prompts["class_prompts"] or (prompts["class_prompt"],)
        if len(lines) > MAX_CLASS_PROMPTS:
            raise ValidationError(f"{len(lines)} class prompts: give at most {MAX_CLASS_PROMPTS}, one per line.")
        for number, line in enumerate(lines, 1):
            if len(line) > MAX_CAPTION_CHARS:
                raise ValidationError(f"Class prompt {number} is over {MAX_CAPTION_CHARS} characters.")
        return "\n".join(lines)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("method") == "dreambooth":
            token = (cleaned.get("instance_token") or "").strip()
            if not token or len(token.split()) != 1:
                self.add_error("instance_token", "DreamBooth needs one rare word, for example zwx.")
            elif "instance_prompt" in cleaned and token not in cleaned["instance_prompt"].split():
                self.add_error("instance_prompt",
                               f"The instance prompt must contain the instance token {token!r}.")
            if cleaned.get("prior_preservation") and not (cleaned.get("class_prompt") or "").strip():
                self.add_error("class_prompt", "Prior preservation needs a class prompt, e.g. “a photo of a dog”.")
        resolution = cleaned.get("resolution")
        if resolution and resolution % 8:
            self.add_error("resolution", "The resolution must be a multiple of 8.")
        return cleaned

    def settings(self) -> dict:
        """The preset's values with the advanced fields that were filled in on top."""
        data = self.cleaned_data
        return resolved_settings(data, native_resolution=self.native_resolution)

    def spec_fields(self) -> dict:
        """services.training_submit's settings. Samples (two seeds of the instance prompt) about
        four times per run, a checkpoint as often or every 50 steps, whichever is more often."""
        data = self.cleaned_data
        fields = {**self.settings(), "instance_prompt": data["instance_prompt"].strip()}
        quarter = max(fields["steps"] // 4, 1)
        fields.update(sample_every=quarter, checkpoint_every=min(quarter, 50), validation_seeds=[0, 1])
        if data["method"] == "dreambooth":
            weight = data.get("prior_loss_weight")
            fields.update(instance_token=data["instance_token"].strip(), **class_prompt_fields(data["class_prompt"]),
                          prior_preservation=bool(data["prior_preservation"]),
                          prior_loss_weight=TrainingSpec.prior_loss_weight if weight is None else weight,
                          num_class_images=(data["num_class_images"] or 0) if data["prior_preservation"] else 0,
                          full_finetune=bool(data.get("full_finetune")))
        return fields


def resolved_settings(data: dict, *, native_resolution: int) -> dict:
    """method, preset, steps, rank, learning_rate, resolution, train_text_encoder: the preset's
    values where the advanced fields are blank."""
    preset = data.get("preset") or "standard"
    values = PRESETS.get(preset, PRESETS["standard"])
    return {
        "method": data.get("method") or "lora",
        "preset": preset,
        "steps": data.get("steps") or values["steps"],
        "rank": data.get("rank") or values["rank"],
        "learning_rate": data.get("learning_rate") or values["learning_rate"],
        "resolution": data.get("resolution") or native_resolution,
        "train_text_encoder": bool(data.get("train_text_encoder")),
    }


class TrainingQuoteForm(forms.Form):
    """The fields the price depends on (never the captions or the CSRF token in a GET URL)."""

    method = forms.ChoiceField(choices=list(METHODS.items()), required=False)
    preset = forms.ChoiceField(choices=[(key, key) for key in PRESETS], required=False)
    steps = forms.IntegerField(required=False, min_value=MIN_STEPS, max_value=MAX_STEPS)
    resolution = forms.IntegerField(required=False, min_value=64, max_value=MAX_RESOLUTION)
    train_text_encoder = forms.BooleanField(required=False)
    prior_preservation = forms.BooleanField(required=False)
    num_class_images = forms.IntegerField(required=False, min_value=1, max_value=MAX_CLASS_IMAGES)

    def price_fields(self, *, num_images: int, native_resolution: int) -> dict | None:
        if not self.is_valid():
            return None
        data = self.cleaned_data
        settings = resolved_settings(data, native_resolution=native_resolution)
        dreambooth = settings["method"] == "dreambooth" and data["prior_preservation"]
        return {
            "method": settings["method"], "steps": settings["steps"], "resolution": settings["resolution"],
            "num_images": num_images, "num_class_images": (data["num_class_images"] or 0) if dreambooth else 0,
            "train_text_encoder": settings["train_text_encoder"],
        }


# --- The LoRA library ---------------------------------------------------------------------------

class LoraImportForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="Letters, digits, _ . - : what <lora:name:0.8> calls it.")
    description = forms.CharField(max_length=MAX_DESCRIPTION_CHARS, required=False)
    lora_file = forms.FileField(label="LoRA file", help_text="A .safetensors file (kohya/A1111, diffusers or PEFT "
                                "keys). Pickle files (.ckpt, .pt, .bin) are refused: they can run code.",
                                widget=forms.ClearableFileInput(attrs={"accept": ".safetensors"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assert LORA_FIELD in self.fields  # the upload handler gives this field the LoRA size limit

    def clean_name(self) -> str:
        return clean_lora_name(self.cleaned_data["name"])


class LoraRenameForm(forms.Form):
    name = forms.CharField(max_length=64)
    description = forms.CharField(max_length=MAX_DESCRIPTION_CHARS, required=False)

    def clean_name(self) -> str:
        return clean_lora_name(self.cleaned_data["name"])


class LoraShareForm(forms.Form):
    team = forms.TypedChoiceField(coerce=str, label="Team")
    allow_download = forms.BooleanField(required=False, label="Members may download it")

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [(str(team.pk), team.name) for team in teams]
