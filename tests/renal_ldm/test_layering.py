"""renal_ldm/ is a library: outside its command line (renal_ldm.cli) no module imports db or streamlit.

Two checks: every library module is imported in a fresh interpreter (so modules that other tests imported
earlier count for nothing) and neither package may end up loaded; and the source is scanned for import
statements naming them anywhere, lazy imports inside functions included, which importing alone never runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY = REPO_ROOT / "renal_ldm"
FORBIDDEN = ("db", "streamlit")

IMPORT_EVERY_LIBRARY_MODULE = """
import importlib, json, pkgutil, sys
import renal_ldm

names = sorted(
    info.name for info in pkgutil.walk_packages(renal_ldm.__path__, "renal_ldm.")
    if info.name.split(".")[1] not in ("cli", "__main__")
)
for name in names:
    importlib.import_module(name)
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(json.dumps({{"imported": names, "forbidden": forbidden}}))
"""


def import_library_in_a_fresh_interpreter() -> dict:
    code = IMPORT_EVERY_LIBRARY_MODULE.format(forbidden=FORBIDDEN)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"importing the renal_ldm modules failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def forbidden_imports(path: Path) -> list[str]:
    """'file:line: statement' for each import of db or streamlit in a source file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        if any(m.split(".")[0] in FORBIDDEN for m in modules):
            found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_importing_every_library_module_loads_neither_db_nor_streamlit():
    result = import_library_in_a_fresh_interpreter()
    assert {"renal_ldm.survey", "renal_ldm.survey_images", "renal_ldm.survey_demo"} <= set(result["imported"])
    assert not any(name.startswith("renal_ldm.cli") for name in result["imported"])
    assert result["forbidden"] == [], (
        f"importing the renal_ldm modules (outside renal_ldm.cli) loaded {result['forbidden']}: code that needs "
        "the database or Streamlit belongs in app/"
    )


def test_no_library_source_imports_db_or_streamlit_even_lazily():
    sources = [p for p in sorted(LIBRARY.rglob("*.py")) if "cli" not in p.relative_to(LIBRARY).parts[:1]]
    assert LIBRARY / "survey_images.py" in sources and LIBRARY / "cli" / "db_cmd.py" not in sources
    found = [line for path in sources for line in forbidden_imports(path)]
    assert found == [], "renal_ldm/ outside cli/ must not import db or streamlit; move these into app/:\n" + "\n".join(
        found
    )
