"""Template slots of public links and moderation: the share panel of an image or a collection,
and the staff's count of open reports. Decisions come from generation.permissions."""

from __future__ import annotations

from django import template

from generation import permissions, share_selectors
from generation.share_views import share_panel_context

register = template.Library()


def _panel(context, **target) -> dict:
    panel = share_panel_context(context["request"], **target)
    panel["csrf_token"] = context.get("csrf_token")
    panel["request"] = context["request"]
    return panel


@register.inclusion_tag("generation/_share_panel.html", takes_context=True)
def image_share_panel(context, image):
    return _panel(context, image=image)


@register.inclusion_tag("generation/_share_panel.html", takes_context=True)
def collection_share_panel(context, collection):
    panel = _panel(context, collection=collection)
    panel["in_details"] = True  # folded on the collection's page; an htmx answer swaps only the section
    return panel


@register.simple_tag(takes_context=True)
def open_reports_count(context) -> int | None:
    """The number of open reports for staff (the header's Reports link); None for anyone else."""
    user = context.get("user")
    if user is None or not permissions.can_moderate_reports(user):
        return None
    return share_selectors.reports_open_count()
