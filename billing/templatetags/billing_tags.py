from django import template

register = template.Library()


@register.filter
def div_floor(value, divisor):
    """Whole number of times `divisor` fits in `value` ("about N images"); '' on bad input."""
    try:
        return int(value) // int(divisor)
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
