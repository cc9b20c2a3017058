from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import cache_control
from django.views.generic import TemplateView

from ceres_site.accounts.limits import limited
from jobs import views as jobs_views

admin.site.site_header = _("Ceres: administration")
admin.site.site_title = _("Ceres administration")
admin.site.index_title = _("Queues, jobs and accounts")

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    # Browsers ask every site for it, the admin's pages included: an icon rather than a 404 in the logs.
    path(
        "favicon.ico",
        cache_control(max_age=86400)(TemplateView.as_view(template_name="favicon.svg", content_type="image/svg+xml")),
    ),
    path("health", jobs_views.health, name="health"),
    path("health/jobs", jobs_views.jobs_health, name="jobs_health"),
    path("metrics", jobs_views.metrics, name="metrics"),
    path("accounts/", include("ceres_site.accounts.urls")),
    path("newsletters/", include("ceres_site.newsletters.urls")),
    path("admin/login/", limited("login", "username")(admin.site.login)),  # before admin's own route
    path("admin/", admin.site.urls),
]
