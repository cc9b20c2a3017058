"""Everything marked for translation has its es-AR text, and the compiled catalogs are the current ones;
and what makemessages cannot see, text a person reads that was never marked, is looked for in the
code (Spanish anywhere, English where a person reads it) and in the templates."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import BASE_DIR

CATALOG = "locale/es_AR/LC_MESSAGES/django"
OVERRIDES = "locale_django/es_AR/LC_MESSAGES"  # Django's own texts in our voice (README, Translations)


def entries(po, *flags) -> list[str]:
    out = subprocess.run(["msgattrib", *flags, "--no-wrap", str(po)], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("msgid ") and line != 'msgid ""']


def test_every_string_has_its_spanish_text_and_the_catalog_is_compiled(tmp_path):
    """`makemessages` on a copy of the project (so new source strings count), then no entry may be
    untranslated or fuzzy; and the committed .mo must be what msgfmt makes of the committed .po."""
    for name in ("ceres_site", "jobs", "templates", "locale", "locale_django"):
        shutil.copytree(BASE_DIR / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(BASE_DIR / "manage.py", tmp_path)
    for domain in ("django", "djangojs"):
        subprocess.run([sys.executable, "manage.py", "makemessages", "-l", "es_AR", "-d", domain], cwd=tmp_path,
                       env={**os.environ, "DJANGO_SECRET_KEY": "makemessages"}, capture_output=True, check=True)  # fmt: skip
    for po in sorted((BASE_DIR / OVERRIDES).glob("*.po")):  # kept by hand: makemessages must leave them be
        assert (tmp_path / OVERRIDES / po.name).read_bytes() == po.read_bytes(), po.name

    po = tmp_path / f"{CATALOG}.po"
    assert entries(po, "--untranslated") == []
    assert entries(po, "--only-fuzzy") == []
    compiled = tmp_path / "fresh.mo"
    subprocess.run(["msgfmt", "-o", str(compiled), str(BASE_DIR / f"{CATALOG}.po")], check=True)
    assert compiled.read_bytes() == (BASE_DIR / f"{CATALOG}.mo").read_bytes(), "run msgfmt (see README)"


def test_both_catalogs_compile_with_their_placeholders():
    """A msgstr that drops or renames a `%(x)s` fails here; the English catalog is compiled too."""
    for lang in ("es_AR", "en"):
        catalog = BASE_DIR / f"locale/{lang}/LC_MESSAGES/django"
        fresh = subprocess.run(["msgfmt", "--check-format", "-o", "-", f"{catalog}.po"], capture_output=True)
        assert fresh.returncode == 0, fresh.stderr.decode()
        assert fresh.stdout == catalog.with_suffix(".mo").read_bytes(), f"run make messages ({lang})"


DJANGO_CATALOGS = {"django": ("conf", "contrib/admin", "contrib/auth"), "djangojs": ("contrib/admin",)}
# How Django's Spanish catalogs address the reader (usted); an override in our voice has none of it.
USTED = re.compile(r"\b(Seleccione|Elija|Escriba|Introduzca|Ingrese|Haga|Empiece|usted|Ud\.|Puede|Asegúrese"
                   r"|Corrija|Confirme|Mantenga|Desea|Olvidó|su|sus|Su|Sus|le|Le)\b")  # fmt: skip


def test_django_s_own_texts_are_overridden_in_voseo_by_a_catalog_kept_by_hand():
    """locale_django/ holds msgids of Django's catalogs (admin, auth, forms) with our es-AR text: each must
    still be Django's (an upgrade that rewords one shows here), none may be shadowed by locale/ (read
    first), all translated, in voseo and compiled."""
    import django

    ours = set(entries(BASE_DIR / f"{CATALOG}.po"))
    for domain, packages in DJANGO_CATALOGS.items():
        po = BASE_DIR / OVERRIDES / f"{domain}.po"
        assert entries(po, "--untranslated") == [] and entries(po, "--only-fuzzy") == []
        fresh = subprocess.run(["msgfmt", "--check-format", "-o", "-", str(po)], capture_output=True)
        assert fresh.returncode == 0, fresh.stderr.decode()
        assert fresh.stdout == po.with_suffix(".mo").read_bytes(), "run make messages"

        sources = Path(django.__file__).parent
        djangos = {msgid for package in packages for language in ("es", "es_AR")
                   for msgid in entries(sources / package / "locale" / language / "LC_MESSAGES" / f"{domain}.po")}  # fmt: skip
        overridden = set(entries(po))
        assert overridden - djangos == set(), "not (or no longer) Django's"
        assert overridden & ours == set(), "locale/ translates these first: keep one of the two"
        texts = subprocess.run(["msgattrib", "--no-wrap", str(po)], capture_output=True, text=True, check=True).stdout
        said = [line for line in texts.splitlines() if line.startswith("msgstr")]
        assert [line for line in said if USTED.search(line)] == []


# --- what makemessages cannot see: text a person reads that was never marked ---------------------

GETTEXT = {"_", "gettext", "gettext_lazy", "gettext_noop", "ngettext", "ngettext_lazy", "pgettext", "pgettext_lazy",
           "npgettext", "npgettext_lazy"}  # fmt: skip
# Spanish letters or common Spanish words: English code never needs them. "Córdoba" is the place's name.
SPANISH = re.compile(r"[áéíóúüñÁÉÍÓÚÜÑ¿¡]|\b(de|del|la|las|los|el|tu|una|que|por|con|sus|ya|hay|Ver|Hola"
                     r"|Prueba|Reporte|intentos|cola|usuario|cuenta|enviado|omitido)\b")  # fmt: skip
SPANISH_ALLOWED = {
    ("ceres_site/settings.py", "Español (Argentina)"): "LANGUAGES names each language in itself, like Django's",
}
# Where an English literal would reach a person untranslated: callee -> (positional indexes, keywords).
SINKS = {
    "Rejected": ((0,), ()),  # an upload's reason, shown to its owner
    "ValidationError": ((0,), ("message",)),
    "message_user": ((1,), ("message",)),
    "success": ((1,), ("message",)), "info": ((1,), ("message",)), "warning": ((1,), ("message",)),
    "error": ((1,), ("message",)), "add_message": ((2,), ("message",)),
    "EmailMultiAlternatives": ((0,), ("subject",)),
    "enqueue_slack_alert": ((), ("text",)),
}  # fmt: skip
LABEL_KEYWORDS = {"description", "verbose_name", "verbose_name_plural", "label", "help_text", "empty_value_display"}
CLASS_LABELS = {"verbose_name", "verbose_name_plural", "empty_value_display"}  # an AppConfig's `label` is an id


def project_modules():
    for top in ("jobs", "ceres_site"):
        for path in sorted((BASE_DIR / top).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(BASE_DIR).as_posix(), ast.parse(path.read_text(), str(path))


def callee(call: ast.Call) -> str | None:
    return getattr(call.func, "id", None) or getattr(call.func, "attr", None)


def marked_and_docstrings(tree) -> set[int]:
    """ids of the nodes inside a gettext call, and of the docstrings (for developers, not people)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and callee(node) in GETTEXT:
            skip.update(id(sub) for sub in ast.walk(node))
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))
    return skip


def unmarked_text(node) -> bool:
    """Words written in the code (a constant, an f-string, a sum or choice of those), not through gettext."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and bool(re.search(r"[A-Za-z]{2,}", node.value))
    if isinstance(node, ast.JoinedStr):
        return any(unmarked_text(part) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return unmarked_text(node.left) or (isinstance(node.op, ast.Add) and unmarked_text(node.right))
    if isinstance(node, ast.IfExp):
        return unmarked_text(node.body) or unmarked_text(node.orelse)
    return False


def task_functions() -> set[str]:
    """Functions whose return value is the job's result, which the dashboard shows to staff."""
    from jobs.config import crons, task_names

    hooks = set(task_names.ON_FINAL_FAILURE.values())
    return set(task_names.TASKS) | {spec.task for spec in crons.SPECS.values()} | hooks


def test_no_spanish_text_outside_gettext():
    """Spanish in code is text a person reads that skips the catalog (English msgids, es-AR in locale/)."""
    found = []
    for path, tree in project_modules():
        skip = marked_and_docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if SPANISH.search(node.value.replace("Córdoba", "")) and (path, node.value) not in SPANISH_ALLOWED:
                    found.append(f"{path}:{node.lineno}: {node.value!r}")
    assert found == [], "write these in English inside _()/ngettext(), Spanish in locale/es_AR:\n" + "\n".join(found)


def test_text_people_read_goes_through_gettext():
    """English literals count too where a person reads them: upload reasons, admin and form messages,
    email subjects, Slack alerts, labels, and the results of tasks (the dashboard's "result")."""
    tasks, found = task_functions(), []
    for path, tree in project_modules():
        module = path.removesuffix(".py").replace("/", ".")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and callee(node) in SINKS:
                positions, keywords = SINKS[callee(node)]
                args = [node.args[i] for i in positions if i < len(node.args)]
                args += [kw.value for kw in node.keywords if kw.arg in keywords]
                found += [f"{path}:{arg.lineno}: {callee(node)}({ast.unparse(arg)})"
                          for arg in args if unmarked_text(arg)]  # fmt: skip
            if isinstance(node, ast.Call):
                found += [f"{path}:{kw.value.lineno}: {kw.arg}={ast.unparse(kw.value)}"
                          for kw in node.keywords if kw.arg in LABEL_KEYWORDS and unmarked_text(kw.value)]  # fmt: skip
            if isinstance(node, ast.ClassDef):
                found += [f"{path}:{item.lineno}: {ast.unparse(item)}" for item in node.body
                          if isinstance(item, ast.Assign) and unmarked_text(item.value)
                          and any(getattr(t, "id", "") in CLASS_LABELS for t in item.targets)]  # fmt: skip
            if isinstance(node, ast.FunctionDef) and f"{module}.{node.name}" in tasks:
                found += [f"{path}:{ret.lineno}: return {ast.unparse(ret.value)}" for ret in ast.walk(node)
                          if isinstance(ret, ast.Return) and ret.value and unmarked_text(ret.value)]  # fmt: skip
    assert found == [], "wrap these in _()/ngettext(), then make messages:\n" + "\n".join(found)


TEMPLATE_TEXT_ALLOWED = {
    ("base.html", "Ceres"): "the brand, the title when a page sets none",
    ("admin/jobs/dashboard/health.html", "/health/jobs"): "a URL path, the same in every language",
}
TRANSLATED = re.compile(r"{%\s*blocktrans(?:late)?\b.*?{%\s*endblocktrans(?:late)?\s*%}", re.S)
NOT_TEXT = re.compile(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}|{#.*?#}|<!--.*?-->"
                      r"|<script\b.*?</script>|<style\b.*?</style>|{%.*?%}|{{.*?}}", re.S)  # fmt: skip
READ_ATTRIBUTES = re.compile(r"""\b(?:title|placeholder|aria-label|alt)\s*=\s*("[^"]*"|'[^']*')""")


def test_templates_have_no_text_outside_translate():
    """Every template, emails included: once translated blocks, tags, variables, comments, scripts and
    styles are gone, no words may be left, in the text or in attributes a person reads."""
    found = []
    for path in sorted((BASE_DIR / "templates").rglob("*")):
        if path.suffix not in (".html", ".txt"):
            continue
        name = path.relative_to(BASE_DIR / "templates").as_posix()
        rest = NOT_TEXT.sub(" ", TRANSLATED.sub(" ", path.read_text()))
        words = [value.strip("\"'") for value in READ_ATTRIBUTES.findall(rest)]
        words += re.sub(r"&[#\w]+;", " ", re.sub(r"<[^>]*>", " ", rest)).split("\n")
        for text in (" ".join(word for word in text.split() if word not in "·—•|") for text in words):
            if re.search(r"[^\W\d_]{2,}", text) and (name, text) not in TEMPLATE_TEXT_ALLOWED:
                found.append(f"templates/{name}: {text!r}")
    assert found == [], "put these in {% translate %} / {% blocktranslate %} (load i18n):\n" + "\n".join(found)
