from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def credits_page(request):
    return render(request, "billing/credits.html", {})
