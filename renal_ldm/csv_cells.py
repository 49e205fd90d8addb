"""CSV cells that a spreadsheet will not run: every CSV the product writes goes through here.

A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and
Google Sheets ("CSV injection"): a survey title or a file name such as `=HYPERLINK("http://…")` would run
when a researcher opens the export. Such text cells get a leading apostrophe, which spreadsheets show as
plain text (OWASP's advice). Numbers are left alone (`-0.25` is a kappa, not a formula), and
`restore_cell` undoes the apostrophe, so the product reads its own exports back unchanged.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def neutralise_cell(value: object) -> object:
    """The value as it may stand in a CSV cell: text that a spreadsheet would evaluate gets a leading "'"."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def restore_cell(value: str) -> str:
    """The original text of a cell written by neutralise_cell."""
    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text (header first, "\\n" line ends) with every cell neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([neutralise_cell(h) for h in header])
    for row in rows:
        writer.writerow([neutralise_cell(v) for v in row])
    return out.getvalue()
