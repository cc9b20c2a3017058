"""An email's bodies from its templates, each template rendered by Django once per shape.

Emails of one kind differ only in a few values (the recipient's name, their link): Django renders a
template once per language and shape (which of those values are empty, and every other value) with
a marker in place of each, and every email fills the markers in, HTML-escaped where Django escapes
them. Rendering each body took a tenth of the worker's CPU per email.

That holds only where a template uses those values as they are: its source may name them only as
`{{ value }}` and `{% if value %}`, all escaped or none, and the first email of each shape is also
rendered by Django and compared. A template that does anything else renders the Django way every time.
"""

import logging
import re
import secrets

from django.template.loader import get_template, render_to_string
from django.utils.html import conditional_escape
from django.utils.translation import get_language

log = logging.getLogger(__name__)

_MARK = f"ceres{secrets.token_hex(8)}"  # unguessable: no value can hold another's marker
_MARKS = re.compile(rf"{_MARK}(\w+?){_MARK}")
_TAG = re.compile(r"{[{%].*?[}%]}", re.DOTALL)
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")  # a text to translate, in a tag: not a use of a value
_skeletons: dict[tuple, tuple[str, bool] | None] = {}  # key -> (the template with markers, escaped); None: Django's way


def render(template_name: str, context: dict, personal: tuple[str, ...]) -> str:
    """`render_to_string(template_name, context)`, where only the `personal` values (strings) change
    from one email to the next."""
    try:
        key = (
            template_name,
            get_language(),
            frozenset((k, bool(v) if k in personal else v) for k, v in context.items()),
        )
        found = _skeletons.get(key, ())
    except TypeError:  # a value that cannot be part of the shape
        return render_to_string(template_name, context)
    if found:
        return _fill(*found, context)
    rendered = render_to_string(template_name, context)
    if found == ():
        _skeletons[key] = _skeleton(template_name, context, personal, rendered)
    return rendered


def _skeleton(template_name: str, context: dict, personal: tuple[str, ...], rendered: str) -> tuple[str, bool] | None:
    """The template rendered with markers, and whether Django escapes what fills them (all or none),
    if filling it gives what Django rendered for `context`."""
    names = [name for name in personal if context.get(name)]
    if all(_plain_uses(get_template(template_name).template.source, name) for name in personal):
        marked = {name: f"{_MARK}{name}{_MARK}" for name in names}
        skeleton = render_to_string(template_name, {**context, **marked})
        probe = render_to_string(template_name, {**context, **{name: f"{mark}<" for name, mark in marked.items()}})
        escaped, raw = (sum(probe.count(f"{mark}{end}") for mark in marked.values()) for end in ("&lt;", "<"))
        if not (escaped and raw) and _fill(skeleton, bool(escaped), context) == rendered:
            return skeleton, bool(escaped)
    log.warning("email template %s cannot be filled in; Django renders it for every email", template_name)
    return None


def _plain_uses(source: str, name: str) -> bool:
    word = re.compile(rf"\b{re.escape(name)}\b")
    plain = re.compile(rf"{{{{\s*{re.escape(name)}\s*}}}}|{{%\s*if\s+{re.escape(name)}\s*%}}")
    return all(plain.fullmatch(tag) for tag in _TAG.findall(source) if word.search(_QUOTED.sub("", tag)))


def _fill(skeleton: str, escape: bool, context: dict) -> str:
    # One pass: a value filled in is never read again for markers.
    if escape:
        return _MARKS.sub(lambda found: conditional_escape(context[found[1]]), skeleton)
    return _MARKS.sub(lambda found: str(context[found[1]]), skeleton)
