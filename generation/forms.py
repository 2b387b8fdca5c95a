"""The Create form: what a user may ask for, checked against the current model's limits."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from django import forms

from generation.engine.contracts import (
    MAX_GUIDANCE,
    MAX_LORA_WEIGHT,
    MAX_LORAS,
    MAX_SEED,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_LORA_WEIGHT,
    MIN_STEPS,
    SAMPLERS,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    validate_request,
)
from generation.engine.prompt_tags import lora_tags, with_lora_tags
from generation.models import REQUEST_FIELDS, LoRA, SDModel
from generation.permissions import can_use_lora
from generation.services.jobs import LoraChoice

ASPECT_RATIOS = {"1:1": (1, 1), "3:2": (3, 2), "2:3": (2, 3), "16:9": (16, 9), "9:16": (9, 16)}


# SDXL was trained on these buckets of about one megapixel (its "aspect buckets"): each ratio's
# size at 1024 px native, scaled for a model of another native size.
SDXL_BUCKETS = {"1:1": (1024, 1024), "3:2": (1216, 832), "2:3": (832, 1216), "16:9": (1344, 768), "9:16": (768, 1344)}


def size_for_aspect(aspect: str, info: ModelInfo) -> tuple[int, int]:
    """SDXL: the ratio's bucket. Others: short side at the model's native resolution, long side by
    the ratio. Multiples of 8."""
    if info.family == "sdxl":
        scale = min(info.native_width, info.native_height) / 1024
        return tuple(max(8, int(round(side * scale / 8)) * 8) for side in SDXL_BUCKETS[aspect])
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


def usable_loras(user) -> list[LoRA]:
    """The LoRAs `user` may apply on Create: their own first, then those shared with a team in
    which they create (LoRA.objects.visible_to filtered by can_use_lora), by name."""
    if user is None:
        return []
    rows = LoRA.objects.visible_to(user).select_related("team")
    usable = [lora for lora in rows if can_use_lora(user, lora)]
    return sorted(usable, key=lambda lora: (lora.owner_id != user.pk, lora.name.lower(), str(lora.team_id)))


@dataclass(frozen=True)
class LoraRow:
    """One row of the LoRA picker as drawn: the chosen LoRA's id ("" for none) and its weight."""

    lora_id: str
    weight: float


def _getlist(data, name: str) -> list:
    if hasattr(data, "getlist"):
        return data.getlist(name)
    value = data.get(name, [])
    return list(value) if isinstance(value, (list, tuple)) else [value]


class ModelField(forms.ModelChoiceField):
    """The model picker: offered models by name (SDModel.name), each option carrying its defaults
    (static/js/model-picker.js applies them when another model is picked)."""

    def __init__(self, **kwargs):
        super().__init__(queryset=SDModel.objects.none(), to_field_name="name", required=False, empty_label=None,
                         error_messages={"invalid_choice": "That model is not offered (any more); choose another."},
                         **kwargs)

    def label_from_instance(self, obj: SDModel) -> str:
        return obj.title


class CreateForm(forms.Form):
    model = ModelField(label="Model")
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

    def __init__(self, *args, model_info: ModelInfo, teams=(), user=None, models=None, **kwargs):
        """`model_info`: the model the form starts with (its defaults; its limits unless another
        model is picked). `models`: the offered SDModels to pick from (none: the default model).
        `teams`: those the user may save into (generation.permissions.teams_user_may_save_into).
        `user`: whose LoRAs the picker offers and the prompt's <lora:...> tags name (none without)."""
        super().__init__(*args, **kwargs)
        self.model_info = model_info
        self.fields["model"].queryset = models if models is not None else SDModel.objects.none()
        self.user = user
        self.usable_loras = usable_loras(user)
        self.loras: list[LoraChoice] = []  # after is_valid(): what job_submit applies
        self.lora_notes: list[str] = []  # reused LoRAs left out of the picker (views._initial_loras)
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

    @property
    def model_choice(self) -> SDModel | None:
        """The offered model the picker shows as chosen (posted, or initial), if any."""
        name = self["model"].value()
        return next((model for model in self.fields["model"].queryset if model.name == name), None) if name else None

    def clean_model(self) -> SDModel | None:
        model = self.cleaned_data.get("model")
        if model is not None:
            self.model_info = model.model_info()  # the size and steps are checked against it
        return model

    def clean(self):
        data = super().clean()
        if data.get("bill_team") and not data.get("save_to") and "save_to" not in self.errors:
            self.add_error("bill_team", "Choose a team under “Save to” to bill it.")
        if "prompt" in data:
            self._resolve_loras(data)
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

    # -- LoRAs: the picker's rows and the prompt's <lora:name:weight> tags --------------------------

    def lora_label(self, lora: LoRA) -> str:
        if self.user is not None and lora.owner_id == self.user.pk:
            return lora.name
        return f"{lora.name} ({lora.team.name if lora.team else 'shared'})"

    def lora_options(self) -> list[tuple[str, str]]:
        return [(str(lora.pk), self.lora_label(lora)) for lora in self.usable_loras]

    def lora_rows(self) -> list[LoraRow]:
        """The picker's rows to draw: those posted (or given as initial "loras"), then one empty
        row to add another without JavaScript (up to MAX_LORAS)."""
        if self.is_bound:
            ids, weights = _getlist(self.data, "lora"), _getlist(self.data, "lora_weight")
            pairs = [(str(lora_id), weights[i] if i < len(weights) else "1") for i, lora_id in enumerate(ids)]
        else:
            pairs = [(str(lora_id), weight) for lora_id, weight in self.initial.get("loras", [])]
        rows = []
        for lora_id, weight in pairs:
            if not lora_id:
                continue
            try:
                rows.append(LoraRow(lora_id, float(weight)))
            except (TypeError, ValueError):
                rows.append(LoraRow(lora_id, 1.0))
        if len(rows) < MAX_LORAS:
            rows.append(LoraRow("", 1.0))
        return rows

    def _slider_choices(self) -> list[LoraChoice]:
        by_id = {str(lora.pk): lora for lora in self.usable_loras}
        ids, weights = _getlist(self.data, "lora"), _getlist(self.data, "lora_weight")
        choices, seen = [], set()
        for index, lora_id in enumerate(ids):
            lora_id = (lora_id or "").strip()
            if not lora_id:
                continue
            try:
                lora = by_id.get(str(uuid.UUID(lora_id)))
            except ValueError:
                lora = None
            if lora is None:
                self.add_error(None, "That LoRA does not exist or you cannot use it.")
                continue
            raw = weights[index] if index < len(weights) else "1"
            try:
                weight = float(raw)
            except (TypeError, ValueError):
                weight = float("nan")
            if not MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
                self.add_error(None, f"The weight of {lora.name} must be a number from {MIN_LORA_WEIGHT:g} "
                                     f"to {MAX_LORA_WEIGHT:g}.")
                continue
            if lora.pk in seen:
                self.add_error(None, f"The LoRA {lora.name} is chosen twice.")
                continue
            seen.add(lora.pk)
            choices.append(LoraChoice(lora=lora, weight=weight))
        return choices

    def _lora_by_name(self, name: str) -> LoRA | list[LoRA] | None:
        """A tag's LoRA: my own of that name, else the one team LoRA of that name (a list when
        several teams' LoRAs share it: ambiguous), else None."""
        same = [lora for lora in self.usable_loras if lora.name == name]
        own = [lora for lora in same if lora.owner_id == self.user.pk] if self.user is not None else []
        if own:
            return own[0]
        if len(same) > 1:
            return same
        return same[0] if same else None

    def _resolve_loras(self, data: dict) -> None:
        """The picker's rows and the prompt's tags become self.loras; a row and a tag naming the
        same LoRA: the row's weight wins (the tag is rewritten to it). The prompt then carries one
        tag per LoRA (with_lora_tags), so the job's infotext and "reuse settings" bring them back."""
        choices = self._slider_choices()
        try:
            tags = lora_tags(data["prompt"])
        except InvalidRequest as error:
            self.add_error("prompt", error.message)
            return
        sliders = [(choice.lora.name, choice.weight) for choice in choices]
        chosen_names = {choice.lora.name for choice in choices}
        unknown, ambiguous = [], []
        for tag in tags:
            if tag.name in chosen_names:
                continue  # the picker's row wins
            found = self._lora_by_name(tag.name)
            if found is None:
                unknown.append(tag.name)
            elif isinstance(found, list):
                ambiguous.append(tag.name)
            elif not MIN_LORA_WEIGHT <= tag.weight <= MAX_LORA_WEIGHT:
                self.add_error("prompt", f"{tag.text}: the weight must be from {MIN_LORA_WEIGHT:g} to "
                                         f"{MAX_LORA_WEIGHT:g}.")
            else:
                choices.append(LoraChoice(lora=found, weight=tag.weight))
                chosen_names.add(found.name)
        if unknown:
            self.add_error("prompt", f"No LoRA you can use is called {', '.join(unknown)} (see your LoRAs page).")
        if ambiguous:
            self.add_error("prompt", f"Several LoRAs shared with your teams are called {', '.join(ambiguous)}: "
                                     f"choose the one you mean in the LoRA picker instead of the tag.")
        if len(choices) > MAX_LORAS:
            self.add_error(None, f"At most {MAX_LORAS} LoRAs at once, not {len(choices)}.")
            return
        self.loras = choices
        if sliders:  # the tags typed stay as written; the rows' tags are (re)written with their weights
            data["prompt"] = with_lora_tags(data["prompt"], sliders)

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

    def submit_fields(self) -> dict:
        """job_submit's keyword arguments from this form (with the caller's user)."""
        return {**self.request_fields(), **self.destination(), "loras": self.loras,
                "model": self.cleaned_data.get("model")}
