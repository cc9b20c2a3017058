from django.contrib.auth.views import LoginView, LogoutView
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
    path("profile/", views.profile, name="profile"),
    path("profile/<str:size>.img", views.profile_picture, name="profile_picture"),
]
