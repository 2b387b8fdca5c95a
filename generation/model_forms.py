"""Staff's forms for the model registry (docs/models.md, "Several models")."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from generation.engine.contracts import MAX_GUIDANCE, MAX_STEPS, MIN_GUIDANCE, MIN_STEPS, SAMPLERS
from generation.models import SDModel


class ModelForm(forms.Form):
    """Register a model, or change one (`instance`: its name is then fixed, jobs and prices keep it)."""

    name = forms.SlugField(max_length=100, help_text="Its API name and the PNG's “Model”; fixed once registered.")
    title = forms.CharField(max_length=200, required=False, help_text="What users see on Create (empty: the name).")
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    path = forms.CharField(max_length=1000, help_text="A diffusers folder or a .safetensors file, on the worker hosts "
                                                      "and readable here when registering.")
    price_multiplier = forms.DecimalField(min_value=Decimal(0), max_value=Decimal(1000), max_digits=7,
                                          decimal_places=3, initial=Decimal(1))
    default_steps = forms.IntegerField(required=False, min_value=MIN_STEPS, max_value=MAX_STEPS,
                                       help_text="Empty: the model's own.")
    default_guidance_scale = forms.FloatField(required=False, min_value=MIN_GUIDANCE, max_value=MAX_GUIDANCE)
    default_sampler = forms.ChoiceField(required=False, choices=[("", "the model's own"), *SAMPLERS.items()])
    default_width = forms.IntegerField(required=False, min_value=64, max_value=4096, help_text="Multiples of 8.")
    default_height = forms.IntegerField(required=False, min_value=64, max_value=4096)
    enabled = forms.BooleanField(required=False, initial=True, help_text="Offered on Create and the API.")
    is_default = forms.BooleanField(required=False, label="Default model", help_text="What Create starts with.")

    def __init__(self, *args, instance: SDModel | None = None, **kwargs):
        self.instance = instance
        super().__init__(*args, **kwargs)
        if instance is not None:
            self.fields["name"].disabled = True

    def clean_path(self) -> str:
        path = self.cleaned_data["path"].strip()
        if path.lower().endswith((".ckpt", ".pt", ".pth", ".bin", ".pkl")):
            raise forms.ValidationError("Pickle checkpoints are refused (loading one can run code): convert it to "
                                        ".safetensors first.")
        return path

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        taken = SDModel.objects.filter(name=name)
        if self.instance is None and taken.exists():
            raise forms.ValidationError("A model of that name is registered already.")
        return name

    def clean(self):
        data = super().clean()
        width, height = data.get("default_width"), data.get("default_height")
        if (width is None) != (height is None):
            self.add_error("default_height", "Give both a default width and height, or neither.")
        for name in ("default_width", "default_height"):
            if data.get(name) and data[name] % 8:
                self.add_error(name, "A multiple of 8.")
        if not data.get("enabled") and data.get("is_default"):
            self.add_error("enabled", "The default model must be offered.")
        return data

    def model_fields(self) -> dict:
        """What model_register / model_update take from this form."""
        data = self.cleaned_data
        return {
            "title": data["title"] or data["name"], "description": data["description"], "path": data["path"],
            "default_steps": data["default_steps"], "default_guidance_scale": data["default_guidance_scale"],
            "default_sampler": data["default_sampler"], "default_width": data["default_width"],
            "default_height": data["default_height"], "price_multiplier": data["price_multiplier"],
        }
