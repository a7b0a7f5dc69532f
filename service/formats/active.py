"""Active content out of a searchable PDF: what a viewer would run or launch on opening or clicking.

An archive's copy of a document must only show it. Removed: the document's open action and its
additional actions (/AA: on open, close, print, save, page visits, field events), the document-level
JavaScript name tree, XFA forms (scripted), and every action that runs code or leaves the viewer
(JavaScript, Launch, SubmitForm, ImportData, rich-media and rendition actions, which can carry
scripts) wherever one is referenced: annotations, form fields, outlines, chained /Next actions.
Links to pages and to URIs stay: they act only when clicked, and only as a link does.
"""

from __future__ import annotations

import pikepdf

ACTIVE = {"/JavaScript", "/Launch", "/SubmitForm", "/ImportData", "/RichMediaExecute", "/Rendition"}
# Keys whose value is an action (or an action's chain): cleared when the action is active.
ACTION_KEYS = ("/A", "/OpenAction", "/PA")


def _is_active(action: pikepdf.Object) -> bool:
    return isinstance(action, pikepdf.Dictionary) and str(action.get("/S", "")) in ACTIVE


def _clean(holder: pikepdf.Dictionary) -> None:
    """One dictionary's own keys: additional actions go, active actions are unhooked, and an
    action's /Next chain keeps only its harmless links."""
    if "/AA" in holder:
        del holder["/AA"]
    for key in ACTION_KEYS:
        if key in holder and _is_active(holder[key]):
            del holder[key]
    if "/Next" in holder:
        chain = holder["/Next"]
        if _is_active(chain):
            del holder["/Next"]
        elif isinstance(chain, pikepdf.Array):
            kept = [a for a in chain if not _is_active(a)]
            if len(kept) != len(chain):
                holder["/Next"] = pikepdf.Array(kept)
    if str(holder.get("/S", "")) == "/JavaScript" and "/JS" in holder:
        del holder["/JS"]  # a script action reached some way not listed here still has no script


def _direct(value: object) -> bool:
    return isinstance(value, (pikepdf.Dictionary, pikepdf.Array)) and not value.is_indirect


def _walk(obj: object) -> None:
    """`obj` and the direct objects inside it (indirect ones are visited on their own)."""
    if isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
        holder = obj.stream_dict if isinstance(obj, pikepdf.Stream) else obj
        _clean(holder)
        for _, value in holder.items():
            if _direct(value):
                _walk(value)
    elif isinstance(obj, pikepdf.Array):
        for value in obj:
            if _direct(value):
                _walk(value)


def scrub(pdf: pikepdf.Pdf) -> None:
    """Remove every active part from `pdf`, in place."""
    root = pdf.Root
    if "/Names" in root and "/JavaScript" in root.Names:
        del root.Names["/JavaScript"]
    if "/OpenAction" in root:
        del root["/OpenAction"]
    if "/AcroForm" in root and "/XFA" in root.AcroForm:
        del root.AcroForm["/XFA"]
    _walk(pdf.trailer)
    for obj in pdf.objects:
        _walk(obj)
