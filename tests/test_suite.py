"""The test suite's own rule: test modules share helpers through support modules, never each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
# An import of a test module, also inside the code a test hands to a child process as a string.
IMPORT_LINE = re.compile(
    r"^\s*(?:from\s+tests\.test_\w+\s+import|import\s+tests\.test_\w+|from\s+tests\s+import\s+.*\btest_\w+)",
    re.M,
)


def imported_test_modules(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.startswith("tests.test_"):
                found.add(node.module)
            elif node.module == "tests":
                found.update(f"tests.{a.name}" for a in node.names if a.name.startswith("test_"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tests.test_"))
    found.update(m.group(0).strip() for m in IMPORT_LINE.finditer(source))
    return found


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    offenders = {
        path.name: sorted(imported)
        for path in sorted(TESTS.glob("*.py"))
        if (imported := imported_test_modules(path.read_text()))
    }
    assert offenders == {}, "move what they share into a support module (tests/apps.py, builders.py, ...)"


def test_the_check_sees_every_spelling_of_such_an_import() -> None:
    for source in (
        "from tests.test_store import event\n",
        "import tests.test_store\n",
        "from tests import payloads, test_store\n",
        'CHILD = """\nfrom tests.test_store import event\n"""\n',
    ):
        assert imported_test_modules(source), source
    assert not imported_test_modules("from tests.builders import event\nfrom tests import console_data\n")
