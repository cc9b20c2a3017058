"""Everything marked for translation has its es-AR text, and the compiled catalog is the current one."""

import os
import shutil
import subprocess
import sys

from tests.conftest import BASE_DIR

CATALOG = "locale/es_AR/LC_MESSAGES/django"


def entries(po, *flags) -> list[str]:
    out = subprocess.run(["msgattrib", *flags, "--no-wrap", str(po)], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("msgid ") and line != 'msgid ""']


def test_every_string_has_its_spanish_text_and_the_catalog_is_compiled(tmp_path):
    """`makemessages` on a copy of the project (so new source strings count), then no entry may be
    untranslated or fuzzy; and the committed .mo must be what msgfmt makes of the committed .po."""
    for name in ("ceres_site", "jobs", "templates", "locale"):
        shutil.copytree(BASE_DIR / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(BASE_DIR / "manage.py", tmp_path)
    subprocess.run([sys.executable, "manage.py", "makemessages", "-l", "es_AR"], cwd=tmp_path,
                   env={**os.environ, "DJANGO_SECRET_KEY": "makemessages"}, capture_output=True, check=True)  # fmt: skip

    po = tmp_path / f"{CATALOG}.po"
    assert entries(po, "--untranslated") == []
    assert entries(po, "--only-fuzzy") == []
    compiled = tmp_path / "fresh.mo"
    subprocess.run(["msgfmt", "-o", str(compiled), str(BASE_DIR / f"{CATALOG}.po")], check=True)
    assert compiled.read_bytes() == (BASE_DIR / f"{CATALOG}.mo").read_bytes(), "run msgfmt (see README)"
