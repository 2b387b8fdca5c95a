"""The Create form: what a user may ask for, checked against the current model's limits."""

from __future__ import annotations

import secrets

from django import forms

from generation.engine.contracts import (
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_STEPS,
    SAMPLERS,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    validate_request,
)
from generation.models import REQUEST_FIELDS

ASPECT_RATIOS = {"1:1": (1, 1), "3:2": (3, 2), "2:3": (2, 3), "16:9": (16, 9), "9:16": (9, 16)}


def size_for_aspect(aspect: str, info: ModelInfo) -> tuple[int, int]:
    """Short side at the model's native resolution, long side by the ratio, multiples of 8."""
    across, down = ASPECT_RATIOS[aspect]
    short = min(info.native_width, info.native_height)
    long_side = min(int(round(short * max(across, down) / min(across, down) / 8)) * 8,
                    max(info.max_width, info.max_height))
    return (long_side, short) if across > down else (short, long_side) if down > across else (short, short)


class PromptField(forms.CharField):
    """Text whose line breaks arrive as LF: a plain form post sends a textarea's breaks as CRLF."""

    def to_python(self, value):
        value = super().to_python(value)
        return value.replace("\r\n", "\n").replace("\r", "\n")


class CreateForm(forms.Form):
    prompt = PromptField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "a small red star in the top left on a blue background"}),
    )
    negative_prompt = PromptField(
        max_length=1000, required=False, widget=forms.Textarea(attrs={"rows": 2, "placeholder": "what to avoid"})
    )
    aspect = forms.ChoiceField(choices=[(key, key) for key in ASPECT_RATIOS], initial="1:1")
    width = forms.IntegerField(required=False, min_value=8, help_text="Overrides the aspect ratio.")
    height = forms.IntegerField(required=False, min_value=8)
    steps = forms.IntegerField(min_value=MIN_STEPS, max_value=MAX_STEPS)
    guidance_scale = forms.FloatField(min_value=MIN_GUIDANCE, max_value=MAX_GUIDANCE, label="Guidance scale")
    sampler = forms.ChoiceField(choices=list(SAMPLERS.items()))  # initial values: the model's defaults
    seed = forms.IntegerField(required=False, min_value=0, max_value=MAX_SEED, help_text="Empty: random.")
    num_images = forms.IntegerField(min_value=1, max_value=4, initial=1, label="Images")
    # Where the images go and who pays (docs/teams.md): choices are the teams the user may save into.
    save_to = forms.ChoiceField(
        required=False, label="Save to",
        error_messages={"invalid_choice": "You cannot create images in that team (only its members can)."},
    )
    bill_team = forms.BooleanField(required=False, label="Bill to team")

    def __init__(self, *args, model_info: ModelInfo, teams=(), **kwargs):
        """`teams`: those the user may save into (generation.permissions.teams_user_may_save_into)."""
        super().__init__(*args, **kwargs)
        self.model_info = model_info
        self.teams = {str(team.pk): team for team in teams}
        choices = [(key, team.name) for key, team in self.teams.items()]
        self.fields["save_to"].choices = [("", "My images"), *choices]
        self.fields["steps"].initial = model_info.default_steps
        self.fields["guidance_scale"].initial = model_info.default_guidance_scale
        self.fields["sampler"].initial = model_info.default_sampler
        self.fields["width"].widget.attrs["step"] = 8
        self.fields["height"].widget.attrs["step"] = 8
        self.fields["width"].widget.attrs["placeholder"] = "auto"
        self.fields["height"].widget.attrs["placeholder"] = "auto"
        self.fields["seed"].widget.attrs["placeholder"] = "random"

    def clean(self):
        data = super().clean()
        if data.get("bill_team") and not data.get("save_to") and "save_to" not in self.errors:
            self.add_error("bill_team", "Choose a team under “Save to” to bill it.")
        if self.errors:
            return data
        data["width"], data["height"] = self.size_asked(data)
        if data.get("seed") is None:
            data["seed"] = secrets.randbelow(MAX_SEED + 1)
        try:
            validate_request(GenerationRequest(**self.request_fields()), self.model_info)
        except InvalidRequest as error:
            field = error.field if error.field in self.fields else None
            if field in ("width", "height") and self.data.get(field) in (None, ""):
                field = "aspect"  # the size came from the aspect ratio
            self.add_error(field, error.message)
        return data

    def size_asked(self, data: dict) -> tuple[int, int]:
        """The size to generate: width and height if given, else the aspect ratio's."""
        width, height = data.get("width"), data.get("height")
        if (width is None) != (height is None):
            raise forms.ValidationError("Give both width and height, or neither to use the aspect ratio.")
        if width is None:
            return size_for_aspect(data["aspect"], self.model_info)
        return width, height

    def clean_save_to(self):
        value = self.cleaned_data["save_to"]
        return self.teams.get(value) if value else None

    def destination(self) -> dict:
        """job_submit's `team` and `bill_team`; billing a team needs a team to save into."""
        team = self.cleaned_data.get("save_to")
        return {"team": team, "bill_team": bool(team and self.cleaned_data.get("bill_team"))}

    def request_fields(self) -> dict:
        """The cleaned values a Job (and its GenerationRequest) is made of."""
        return {name: self.cleaned_data[name] for name in REQUEST_FIELDS}
