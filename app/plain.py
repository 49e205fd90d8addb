"""User-supplied text shown as plain text inside Streamlit elements that render Markdown.

`st.markdown`, alerts (`st.info`, `st.warning`, ...), captions, expander and widget labels all read Markdown,
Streamlit's `:red[...]` / `:material/icon:` directives and `$...$` LaTeX. A model, preset or survey named
`**[click](http://x)**` would otherwise become a bold link. `literal` backslash-escapes every ASCII punctuation
character (CommonMark lets any of them be escaped), so the text renders exactly as typed.
"""

from __future__ import annotations

import string

_ESCAPES = {ord(c): "\\" + c for c in string.punctuation}


def literal(text: object) -> str:
    """The text with Markdown (and Streamlit's directives) neutralised; newlines become spaces."""
    return " ".join(str(text).splitlines()).translate(_ESCAPES)
