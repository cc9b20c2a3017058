"""A request larger than `UPLOAD_MAX_BYTES` is answered 413 before anything reads its body: Django
would otherwise store its files in temporary files when the CSRF check first reads the form.

A body sent with chunked transfer encoding carries no Content-Length: Django would read it as empty
and `UploadSizeLimit` could not judge it. `ChunkedBodyLimit`, around the whole WSGI application
(`ceres_site.wsgi`), reads such a body first, counting, and hands it on with the length it found;
it reads at most one byte past the limit, and a body that goes that far is handed on unread, so
that `UploadSizeLimit` answers the same 413. nginx refuses large bodies itself (`client_max_body_size`);
this covers gunicorn exposed directly.
"""

import io
import tempfile

from django.conf import settings
from django.shortcuts import render

BLOCK = 64 * 1024  # bytes read at a time


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


class ChunkedBodyLimit:
    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not environ.get("CONTENT_LENGTH"):
            environ["wsgi.input"], length = _read_counting(environ["wsgi.input"], settings.UPLOAD_MAX_BYTES)
            environ["CONTENT_LENGTH"] = str(length)
        return self.application(environ, start_response)


def _read_counting(stream, limit: int):
    """(the body, its length), or (nothing, limit + 1) for a body longer than `limit`. The body is
    kept in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then in a temporary file, deleted when closed
    (with the request's environ, at the latest)."""
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
    length = 0
    while length <= limit and (block := stream.read(min(BLOCK, limit + 1 - length))):
        body.write(block)
        length += len(block)
    if length > limit:
        body.close()
        return io.BytesIO(), length
    body.seek(0)
    return body, length
