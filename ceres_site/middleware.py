"""A request larger than `UPLOAD_MAX_BYTES` is answered 413 before anything reads its body: Django
would otherwise store its files in temporary files when the CSRF check first reads the form."""

from django.conf import settings
from django.shortcuts import render


class UploadSizeLimit:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.UPLOAD_MAX_BYTES:
            return render(request, "413.html", {"mb": settings.UPLOAD_MAX_BYTES // (1024 * 1024)}, status=413)
        return self.get_response(request)
