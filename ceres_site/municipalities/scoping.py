"""Admin pages of the domain, for staff limited to one municipality (`models.staff_scope`)."""

from .models import staff_scope


class ScopedToMunicipality:
    """A ModelAdmin mixin: staff limited to one municipality list, open and change its rows alone
    (another's row is "not found", whatever the URL); `municipality_path` leads from a row to it."""

    municipality_path = "municipality"

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        limited = staff_scope(request.user)
        return rows if limited is None else rows.filter(**{self.municipality_path: limited})

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if staff_scope(request.user) is not None and self.municipality_path == "municipality":
            return (*fields, "municipality")  # they cannot move a row to another municipality
        return fields

    def save_model(self, request, obj, form, change):
        limited = staff_scope(request.user)
        if limited is not None and self.municipality_path == "municipality":
            obj.municipality_id = limited  # what they add is their municipality's
        super().save_model(request, obj, form, change)
