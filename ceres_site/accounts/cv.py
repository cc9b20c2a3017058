"""Is an uploaded CV acceptable? Judged from its bytes, never from its name.

PDF (read with pypdf): not encrypted, 1 to `MAX_PAGES` pages, no JavaScript, no embedded files.
DOCX (a ZIP package): a Word document, without macros. Either must carry some text; one without
(a scanned CV) is accepted with a warning. Reasons are for the person who uploaded it: translated.
"""

import io
import zipfile
from dataclasses import dataclass, field
from xml.etree import ElementTree

from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

MAX_BYTES = 5 * 1024 * 1024
MAX_PAGES = 20
MAX_XML_BYTES = 50 * 1024 * 1024  # the document's text, uncompressed
WORD_NS = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


class Rejected(Exception):
    """The file is not an acceptable CV; the message says why, for its owner."""


@dataclass
class Verdict:
    kind: str  # "pdf" or "docx"
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)


def judge(data: bytes, max_bytes: int = MAX_BYTES) -> Verdict:
    if len(data) > max_bytes:
        raise Rejected(_("The file is larger than %(mb)d MB.") % {"mb": max_bytes // (1024 * 1024)})
    if data.startswith(b"%PDF-"):
        return _pdf(data)
    if data.startswith(b"PK\x03\x04"):
        return _docx(data)
    raise Rejected(_("The file is neither a PDF nor a Word document (.docx), whatever its name says."))


def _pdf(data: bytes) -> Verdict:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise Rejected(_("The PDF is protected with a password: upload it without protection."))
        pages = len(reader.pages)
        root = reader.trailer["/Root"].get_object()
        names = root.get("/Names", {})
        names = names.get_object() if hasattr(names, "get_object") else names
        if "/JavaScript" in names or _has_javascript(reader, root):
            raise Rejected(_("The PDF contains JavaScript, which we do not accept for safety."))
        if "/EmbeddedFiles" in names or _has_attachments(reader):
            raise Rejected(_("The PDF carries attached files inside, which we do not accept for safety."))
        text = "".join((page.extract_text() or "") for page in reader.pages[:MAX_PAGES]).strip()
    except Rejected:
        raise
    except (PdfReadError, PyPdfError, KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise Rejected(_("The PDF is damaged or incomplete: it cannot be read.")) from error
    if not 1 <= pages <= MAX_PAGES:
        too_many = ngettext(
            "The CV has %(pages)d page; we accept 1 to %(max)d.",
            "The CV has %(pages)d pages; we accept 1 to %(max)d.",
            pages,
        )
        raise Rejected(too_many % {"pages": pages, "max": MAX_PAGES})
    verdict = Verdict("pdf", pages=pages)
    if not text:
        verdict.warnings.append(_("We found no text in the PDF (is it a scanned image?): we accept it anyway."))
    return verdict


def _has_javascript(reader, root) -> bool:
    actions = [root.get("/OpenAction"), root.get("/AA")]
    for page in reader.pages:
        actions.append(page.get("/AA"))
        for annotation in page.get("/Annots", []) or []:
            annotation = annotation.get_object()
            actions += [annotation.get("/A"), annotation.get("/AA")]
    return any(_is_javascript(action) for action in actions if action is not None)


def _is_javascript(action) -> bool:
    action = action.get_object() if hasattr(action, "get_object") else action
    if not hasattr(action, "get"):
        return False
    if action.get("/S") == "/JavaScript" or "/JS" in action:
        return True
    return any(_is_javascript(value) for key, value in action.items() if key not in ("/Parent", "/P"))


def _has_attachments(reader) -> bool:
    return any(
        annotation.get_object().get("/Subtype") == "/FileAttachment"
        for page in reader.pages
        for annotation in (page.get("/Annots", []) or [])
    )


def _docx(data: bytes) -> Verdict:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            names = set(package.namelist())
            types = (
                package.read("[Content_Types].xml").decode("utf-8", "replace") if "[Content_Types].xml" in names else ""
            )
            if "word/document.xml" not in names or not types:
                raise Rejected(_("The file is not a valid Word document (.docx)."))
            if any(name.lower().endswith("vbaproject.bin") for name in names) or "macroEnabled" in types:
                raise Rejected(
                    _("The document has macros, which we do not accept for safety: save it as a plain .docx.")
                )
            if package.getinfo("word/document.xml").file_size > MAX_XML_BYTES:  # a ZIP bomb
                raise Rejected(_("The document is too large once uncompressed."))
            body = ElementTree.fromstring(package.read("word/document.xml"))
    except Rejected:
        raise
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError, EOFError) as error:
        raise Rejected(_("The document is damaged or incomplete: it cannot be read.")) from error
    verdict = Verdict("docx")
    if not "".join(node.text or "" for node in body.iter(f"{WORD_NS}t")).strip():
        verdict.warnings.append(_("We found no text in the document: we accept it anyway."))
    return verdict
