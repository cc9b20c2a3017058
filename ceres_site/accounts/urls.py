from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("signup/done/", views.signup_done, name="signup_done"),
    path("verify/", views.verify, name="verify"),
    path("verify/resend/", views.resend, name="resend"),
]
