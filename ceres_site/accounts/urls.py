from django.contrib.auth.views import LoginView, LogoutView, PasswordResetCompleteView
from django.urls import path

from . import views
from .limits import limited

app_name = "accounts"
urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("signup/done/", views.signup_done, name="signup_done"),
    path("verify/", views.verify, name="verify"),
    path("verify/resend/", views.resend, name="resend"),
    path("login/", limited("login", "username")(LoginView.as_view(template_name="accounts/login.html")), name="login"),
    path("logout/", LogoutView.as_view(next_page="home"), name="logout"),
    path("password/reset/", views.password_reset, name="password_reset"),
    path("password/reset/done/", views.password_reset_done, name="password_reset_done"),
    path("password/reset/link/", views.password_reset_link, name="password_reset_link"),
    # Only the token-less address of Django's view: the token comes in the session (`password_reset_link`).
    path(
        "password/reset/<uidb64>/set-password/",
        views.PasswordResetConfirm.as_view(),
        {"token": views.PasswordResetConfirm.reset_url_token},
        name="password_reset_confirm",
    ),
    path(
        "password/reset/complete/",
        PasswordResetCompleteView.as_view(template_name="accounts/password_reset_complete.html"),
        name="password_reset_complete",
    ),
    path("profile/", views.profile, name="profile"),
    path("profile/<str:size>.img", views.profile_picture, name="profile_picture"),
]
