# One way to write a moment for staff and people, in admin's lists as in the dashboard (whose times
# also show UTC on hover): 29/11/2026 20:55:05, in Córdoba time (TIME_ZONE).
DATE_FORMAT = SHORT_DATE_FORMAT = "d/m/Y"
DATETIME_FORMAT = "d/m/Y H:i:s"
SHORT_DATETIME_FORMAT = "d/m/Y H:i"
TIME_FORMAT = "H:i:s"
