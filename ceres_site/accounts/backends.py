"""Signing in on a municipality's site: citizens with their address, staff with their username."""

from django.contrib.auth.backends import ModelBackend

from .models import User


class MunicipalityBackend(ModelBackend):
    """On a municipality's host the address typed names that municipality's account
    (`User.username_for`); an account of another municipality does not sign in there. Staff sign in
    with their own username on any host."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        municipality = getattr(request, "municipality", None)
        if municipality is None or username is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        user = super().authenticate(
            request, username=User.username_for(username, municipality), password=password, **kwargs
        )
        if user is None and not municipality.is_default:
            user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and (user.municipality_id == municipality.pk or user.is_staff):
            return user
        return None
