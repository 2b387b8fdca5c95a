"""Public links: made and revoked by their owners (signed in), opened by anyone (no login).

A public page answers only after `share_selectors.share_link_live`; its files go through
generation.serving, the same functions as private files. Every public answer says noindex (meta
and X-Robots-Tag), sends its URL (the token) as Referer to no other site and is never cached; an
unknown, revoked, expired or hidden link is a 404 page that says so.
"""

from __future__ import annotations

from functools import wraps

from allauth.account.adapter import get_adapter
from allauth.core import ratelimit
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from generation import permissions, serving, share_selectors
from generation.gallery_forms import decode_cursor, encode_cursor
from generation.models import Collection, Image, ShareLink
from generation.services import moderation, sharing
from generation.share_forms import ReportForm, ShareLinkForm

REPORT_RATE_ACTION = "share_report"  # ACCOUNT_RATE_LIMITS["share_report"] (studio/settings.py)


# --- Making and revoking links (the owner's side) ---------------------------------------------------

def _share_url(request: HttpRequest, link: ShareLink) -> str:
    return request.build_absolute_uri(reverse("generation:share", args=[link.token]))


def share_panel_context(request: HttpRequest, *, image: Image | None = None,
                        collection: Collection | None = None, form: ShareLinkForm | None = None) -> dict:
    """What the share panel of an image or a collection shows this user: the form if they may
    share it, and the links they may revoke (with their full URL to copy)."""
    user = request.user
    if image is not None:
        can_share = permissions.can_share_image(user, image)
        links = share_selectors.share_links_of_image(user, image)
        create_url = reverse("generation:image_share_create", args=[image.pk])
        panel_id = f"share-image-{image.pk}"
    else:
        can_share = permissions.can_share_collection(user, collection)
        links = share_selectors.share_links_of_collection(user, collection)
        create_url = reverse("generation:collection_share_create", args=[collection.pk])
        panel_id = f"share-collection-{collection.pk}"
    rows = [{"link": link, "url": _share_url(request, link), "state": share_selectors.share_link_state(link)}
            for link in links]
    return {
        "can_share": can_share, "rows": rows, "form": form or ShareLinkForm(), "create_url": create_url,
        "panel_id": panel_id, "what": "image" if image is not None else "collection",
        "here": request.get_full_path(),
    }


def _back_to(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    ours = {request.get_host()}
    if url_has_allowed_host_and_scheme(target, allowed_hosts=ours, require_https=request.is_secure()):
        return target
    return fallback


def _panel_response(request: HttpRequest, *, status: int = 200, **target) -> HttpResponse:
    context = share_panel_context(request, **target)
    context["here"] = request.POST.get("next", "")
    return render(request, "generation/_share_panel.html", context, status=status)


def _create(request: HttpRequest, *, image: Image | None = None, collection: Collection | None = None,
            fallback: str) -> HttpResponse:
    target = {"image": image} if image is not None else {"collection": collection}
    form = ShareLinkForm(request.POST)
    if not form.is_valid():
        if request.htmx:
            return _panel_response(request, status=400, form=form, **target)
        return HttpResponseBadRequest("; ".join(e for errors in form.errors.values() for e in errors))
    try:
        link = sharing.share_link_create(
            user=request.user, show_parameters=form.cleaned_data["show_parameters"],
            expires_at=form.expires_at(), **target,
        )
    except sharing.ShareNotAllowed as error:
        raise PermissionDenied(str(error)) from None
    if request.htmx:
        return _panel_response(request, status=201, **target)
    messages.success(request, f"Public link made: {_share_url(request, link)}")
    return redirect(_back_to(request, fallback))


@login_required
@require_POST
def image_share_create(request: HttpRequest, image_id) -> HttpResponse:
    try:
        image = Image.objects.visible_to(request.user).get(pk=image_id)
    except Image.DoesNotExist:
        raise Http404("No such image.") from None
    return _create(request, image=image, fallback=reverse("generation:image_detail", args=[image.pk]))


@login_required
@require_POST
def collection_share_create(request: HttpRequest, collection_id) -> HttpResponse:
    try:
        collection = Collection.objects.visible_to(request.user).get(pk=collection_id)
    except Collection.DoesNotExist:
        raise Http404("No such collection.") from None
    fallback = reverse("generation:collection_detail", args=[collection.pk])
    return _create(request, collection=collection, fallback=fallback)


def _link_the_user_can_see(request: HttpRequest, link_id) -> ShareLink:
    """A link whose image or collection the user can see (else 404), whatever its state."""
    link = ShareLink.objects.select_related("image", "collection").filter(pk=link_id).first()
    visible = link is not None and (
        Image.objects.visible_to(request.user).filter(pk=link.image_id).exists() if link.image_id
        else Collection.objects.visible_to(request.user).filter(pk=link.collection_id).exists()
    )
    if not visible:
        raise Http404("No such link.")
    return link


@login_required
@require_POST
def share_link_revoke(request: HttpRequest, link_id) -> HttpResponse:
    link = _link_the_user_can_see(request, link_id)
    try:
        sharing.share_link_revoke(user=request.user, link=link)
    except sharing.ShareNotAllowed as error:
        raise PermissionDenied(str(error)) from None
    target = {"image": link.image} if link.image_id else {"collection": link.collection}
    if request.htmx:
        return _panel_response(request, **target)
    messages.success(request, "Link revoked: it no longer opens.")
    fallback = (reverse("generation:image_detail", args=[link.image_id]) if link.image_id
                else reverse("generation:collection_detail", args=[link.collection_id]))
    return redirect(_back_to(request, fallback))


# --- The public side (no login) ----------------------------------------------------------------------

def public_link_response(view):
    """Headers every public answer carries, and a 404 page that says the link is gone."""
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except Http404:
            response = render(request, "generation/share_gone.html", status=404)
        response["X-Robots-Tag"] = "noindex, nofollow"
        # The token is in the URL: never sent to another site. Not "no-referrer": browsers then send
        # `Origin: null` with the report form's POST, which Django's CSRF check rightly refuses.
        response["Referrer-Policy"] = "same-origin"
        response.setdefault("Cache-Control", "no-store")
        return response
    return wrapped


def _live_link(token: str) -> ShareLink:
    try:
        return share_selectors.share_link_live(token)
    except ShareLink.DoesNotExist:
        raise Http404("No such link.") from None


def _open_graph(request: HttpRequest, link: ShareLink, images: list[Image]) -> dict:
    if link.image_id:
        title = link.image.job.prompt[:120] if link.show_parameters else "An image made with Studio"
    else:
        title = f"{link.collection.name} · a collection on Studio"
    cover = images[0] if images else None
    return {
        "title": title,
        "description": "Made with Studio, open self-hosted image generation.",
        "url": request.build_absolute_uri(reverse("generation:share", args=[link.token])),
        "image": cover and request.build_absolute_uri(
            reverse("generation:share_image_file", args=[link.token, cover.pk])),
        "image_width": cover.width if cover else None,
        "image_height": cover.height if cover else None,
    }


@public_link_response
@require_safe  # GET, and HEAD for link-preview fetchers
def share_page(request: HttpRequest, token: str) -> HttpResponse:
    link = _live_link(token)
    after = None
    if cursor := request.GET.get("after"):
        try:
            after = decode_cursor(cursor)
        except ValueError:
            return render(request, "generation/share_gone.html", {"bad_request": True}, status=400)
    images, next_after = share_selectors.share_link_images(link, after=after)
    next_url = None
    if next_after is not None:
        next_url = f"{reverse('generation:share', args=[link.token])}?after={encode_cursor(*next_after)}"
    context = {
        "link": link, "images": images, "image": link.image if link.image_id else None,
        "collection": link.collection, "show_parameters": link.show_parameters, "next_url": next_url,
        "og": _open_graph(request, link, images),
    }
    return render(request, "generation/share_page.html", context)


def _shared_image(token: str, image_id) -> tuple[ShareLink, Image]:
    link = _live_link(token)
    try:
        return link, share_selectors.share_link_image(link, image_id)
    except Image.DoesNotExist:
        raise Http404("No such image in this link.") from None


@public_link_response
@require_safe  # GET, and HEAD for link-preview fetchers
def share_image_file(request: HttpRequest, token: str, image_id) -> HttpResponse:
    link, image = _shared_image(token, image_id)
    # Without show_parameters the PNG's own "parameters" chunk (the prompt) is left out too.
    return serving.image_original(image, download="download" in request.GET,
                                  cache_control=serving.SHARED_CACHE, strip_png_text=not link.show_parameters)


@public_link_response
@require_safe  # GET, and HEAD for link-preview fetchers
def share_image_thumbnail(request: HttpRequest, token: str, image_id) -> HttpResponse:
    _, image = _shared_image(token, image_id)
    return serving.image_thumbnail(image, cache_control=serving.SHARED_CACHE)


# --- Reports ------------------------------------------------------------------------------------------

@public_link_response
@require_http_methods(["GET", "POST"])
def share_report(request: HttpRequest, token: str) -> HttpResponse:
    """Anyone viewing a link can report it, signed in or not; a few reports per address an hour."""
    link = _live_link(token)
    form = ReportForm(request.POST if request.method == "POST" else None)
    if request.method == "GET" or not form.is_valid():
        status = 400 if request.method == "POST" else 200
        return render(request, "generation/share_report.html", {"link": link, "form": form}, status=status)
    if not ratelimit.consume(request, action=REPORT_RATE_ACTION):
        form.add_error(None, "You have sent several reports in a short time. Please try again later.")
        return render(request, "generation/share_report.html", {"link": link, "form": form}, status=429)
    moderation.report_create(
        link=link, reason=form.cleaned_data["reason"], details=form.cleaned_data["details"],
        reporter=request.user, address=get_adapter(request).get_client_ip(request),
    )
    return redirect("generation:share_report_done", token=link.token)


@public_link_response
@require_safe  # GET, and HEAD for link-preview fetchers
def share_report_done(request: HttpRequest, token: str) -> HttpResponse:
    """The thank-you page. It shows nothing of the link, so it needs no check."""
    return render(request, "generation/share_report_done.html", {"token": token})
