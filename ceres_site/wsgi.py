import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ceres_site.settings")
application = get_wsgi_application()

from ceres_site.middleware import ChunkedBodyLimit  # noqa: E402  (settings are set up)

application = ChunkedBodyLimit(application)  # counts a chunked body against the upload limit
