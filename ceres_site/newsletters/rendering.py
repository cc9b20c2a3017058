"""A newsletter's bodies are Django templates filled in per recipient (`{{ name }}`, `{{ unsubscribe_url }}`).

One way to render them for the sends, the test copy and the preview, and one check when staff save
them: a body that cannot render is refused then, with its line, rather than found by the first job.
"""

from functools import lru_cache

from django.template import Context, Engine, Template, TemplateDoesNotExist, TemplateSyntaxError, engines
from django.template.base import VariableDoesNotExist
from django.urls import NoReverseMatch

# What a body can do wrong: a syntax error, a missing template or URL name, a filter given the wrong value.
# The context holds two strings, so these fail the same way for every person; anything else (a
# misconfigured site) is not the body's fault.
ERRORS = (TemplateSyntaxError, TemplateDoesNotExist, NoReverseMatch, VariableDoesNotExist, TypeError, ValueError,
          AttributeError, LookupError, ArithmeticError)  # fmt: skip
NO_NAME = "\x00"  # stands for an empty first name while rendering: it goes, with the space before it
SAMPLE = {"name": "Ana", "unsubscribe_url": "https://ceres.example/newsletters/unsubscribe/sample/"}


class BrokenTemplate(Exception):
    """A body that does not compile or does not render; `line` when the engine could tell."""

    def __init__(self, detail: str, line: int | None = None):
        super().__init__(detail if line is None else f"line {line}: {detail}")
        self.detail, self.line = detail, line


def render(source: str, *, html: bool, name: str, unsubscribe_url: str) -> str:
    """The body for one person; for a person without a first name "Hola {{ name }}:" reads "Hola:"."""
    try:
        context = Context({"name": name or NO_NAME, "unsubscribe_url": unsubscribe_url}, autoescape=html)
        text = _compiled(source).render(context)
    except ERRORS as error:
        check(source, html=html)  # raises the same error, with its line
        raise BrokenTemplate(str(error)) from error  # (in case the check passes: a context-dependent error)
    return text if name else text.replace(" " + NO_NAME, "").replace(NO_NAME, "")


def check(source: str, *, html: bool) -> None:
    """Raise `BrokenTemplate` if the body would fail to render, with the line of the error."""
    try:
        Template(source, engine=_checking_engine()).render(Context(SAMPLE, autoescape=html))
    except ERRORS as error:
        line = (getattr(error, "template_debug", None) or {}).get("line")
        raise BrokenTemplate(str(error), line) from error


@lru_cache(maxsize=32)
def _compiled(source: str) -> Template:
    """Compiled once per process and body (a campaign renders the same body for every recipient)."""
    return Template(source)


@lru_cache(maxsize=1)
def _checking_engine() -> Engine:
    """The site's template engine with debug on, which tells the line of an error."""
    site = engines["django"].engine  # type: ignore[attr-defined]
    return Engine(
        debug=True,
        dirs=site.dirs,
        loaders=site.loaders,
        context_processors=site.context_processors,
        string_if_invalid=site.string_if_invalid,
        file_charset=site.file_charset,
        libraries=site.libraries,
        builtins=[name for name in site.builtins if name not in Engine.default_builtins],
        autoescape=site.autoescape,
    )
