"""The dashboard's views, charts and the labels it shows for states (es-AR through gettext)."""
