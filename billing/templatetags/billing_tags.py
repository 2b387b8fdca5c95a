from django import template
from django.utils.html import format_html

from billing.subjects import subject_split, subject_url

register = template.Library()


@register.filter
def div_floor(value, divisor):
    """Whole number of times `divisor` fits in `value` ("about N images"); '' on bad input."""
    try:
        return int(value) // int(divisor)
    except (TypeError, ValueError, ZeroDivisionError):
        return ""


@register.simple_tag
def subject_link(subject: str):
    """`job 1a2b3c4d`, linked to the subject's page when settings.BILLING_SUBJECTS names one."""
    kind, ident = subject_split(subject or "")
    label = format_html("{} <code>{}</code>", kind, ident[:8])
    url = subject_url(subject) if subject else None
    return format_html('<a href="{}">{}</a>', url, label) if url else label
