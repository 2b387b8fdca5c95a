"""The gallery's query string, parsed by a form: a bad value is a 400 with a message, never a 500."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.core.validators import MaxValueValidator
from django.utils import timezone

from generation.engine.contracts import SAMPLERS

SORTS = {"newest": "Newest first", "oldest": "Oldest first"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SEARCH_WORDS = 12


def encode_cursor(created_at: datetime, image_id: uuid.UUID) -> str:
    """The keyset position after one image: microseconds since the epoch and the image id."""
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{image_id.hex}"


def decode_cursor(value: str) -> tuple[datetime, uuid.UUID]:
    micros, _, hex_id = value.partition(".")
    if not (micros.isascii() and micros.isdigit() and len(micros) <= 17):
        raise ValueError("bad cursor time")
    return EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=hex_id)


def _start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class GalleryForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search prompts")
    sampler = forms.ChoiceField(required=False, choices=[("", "Any sampler"), *SAMPLERS.items()])
    size = forms.ChoiceField(required=False, choices=[])
    model = forms.ChoiceField(required=False, choices=[])
    favourites = forms.BooleanField(required=False, label="Favourites only")
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}),
        validators=[MaxValueValidator(date.max - timedelta(days=1), "Choose an earlier “to” date.")],
    )
    sort = forms.ChoiceField(required=False, choices=list(SORTS.items()))
    collection = forms.ChoiceField(required=False, choices=[])
    after = forms.CharField(required=False, max_length=60, widget=forms.HiddenInput)

    def __init__(self, *args, sizes: list[tuple[int, int]], models: list[str] = (), collections=(),
                 favourites: bool = True, **kwargs):
        """`collections`: those this gallery can be filtered by (already checked with
        Collection.objects.visible_to); none on a collection's own page. `favourites`: whether
        the gallery offers "Favourites only" (not a team's: favourites are each owner's marks)."""
        super().__init__(*args, **kwargs)
        if not favourites:
            del self.fields["favourites"]
        self.fields["size"].choices = [("", "Any size"), *((f"{w}x{h}", f"{w}×{h}") for w, h in sizes)]
        self.fields["model"].choices = [("", "Any model"), *((name, name) for name in models)]
        self.collections = {str(collection.pk): collection for collection in collections}
        self.fields["collection"].choices = [
            ("", "Any collection"), *((key, collection.name) for key, collection in self.collections.items())
        ]

    def clean_q(self) -> list[str]:
        words = self.cleaned_data["q"].split()
        if len(words) > MAX_SEARCH_WORDS:
            raise forms.ValidationError(f"Search with at most {MAX_SEARCH_WORDS} words.")
        return words

    def clean_size(self) -> tuple[int, int] | None:
        value = self.cleaned_data["size"]
        if not value:
            return None
        width, height = value.split("x")
        return int(width), int(height)

    def clean_collection(self):
        value = self.cleaned_data["collection"]
        return self.collections.get(value) if value else None

    def clean_after(self) -> tuple[datetime, uuid.UUID] | None:
        value = self.cleaned_data["after"]
        if not value:
            return None
        try:
            return decode_cursor(value)
        except (ValueError, OverflowError):
            message = "This “load more” link is broken: start again from the first page."
            raise forms.ValidationError(message) from None

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The “from” date must not be after the “to” date.")
        return data

    def filters(self) -> dict:
        """Keyword arguments for selectors.gallery_page."""
        data = self.cleaned_data
        return {
            "words": data["q"],
            "sampler": data["sampler"] or None,
            "size": data["size"],
            "model_name": data["model"] or None,
            "favourites_only": data.get("favourites", False),
            "created_from": _start_of_day(data["date_from"]) if data["date_from"] else None,
            "created_before": _start_of_day(data["date_to"] + timedelta(days=1)) if data["date_to"] else None,
            "oldest_first": data["sort"] == "oldest",
            "after": data["after"],
            **({"collection": data["collection"]} if data["collection"] else {}),
        }
