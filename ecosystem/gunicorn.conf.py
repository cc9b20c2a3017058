"""gunicorn settings for the `web` process (environment: WEB_PORT, WEB_BIND, WEB_WORKERS)."""

import os

bind = os.environ.get("WEB_BIND", f"127.0.0.1:{os.environ.get('WEB_PORT', '8000')}")
workers = int(os.environ.get("WEB_WORKERS", "3"))
preload_app = True  # Django is imported once and the workers share its pages (a third of the web's memory)
graceful_timeout = 30  # a stop lets requests in flight finish
timeout = 60
accesslog = "-"
forwarded_allow_ips = "127.0.0.1"  # trust X-Forwarded-* from the local nginx only
