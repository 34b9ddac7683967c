"""The import direction of `docs/architecture.md`, held by an AST walk over the package.

The first test reads `vocalink_lab/` itself. The others build small synthetic
packages in a temporary folder, one forbidden import each (at module level, inside
a function, under ``TYPE_CHECKING``), to show that each rule can fail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import vocalink_lab
from tests.support.architecture import (
    ALLOWED,
    FOUNDATION,
    contract_literals,
    read_imports,
    violations,
)
from vocalink_lab.protocol import JobState, Topic

PACKAGE = Path(vocalink_lab.__file__).parent


def test_the_package_keeps_its_import_rules() -> None:
    assert violations(PACKAGE) == []


def test_the_walk_sees_lazy_and_type_checking_imports_of_the_package() -> None:
    # The Lab loads the widgets lazily and the panels name their controller only for
    # types: both must be in the graph, or the rules above would check too little.
    seen = {(i.source, i.target, i.name) for i in read_imports(PACKAGE)}
    assert ("vocalink_lab.lab", "vocalink_lab.widgets", "Dashboard") in seen  # in a method
    assert ("vocalink_lab.widgets.panel", "vocalink_lab.widgets.controller",
            "Controller") in seen  # under TYPE_CHECKING


def test_every_unit_of_the_package_is_placed() -> None:
    units = {p.stem if p.suffix else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert units - set(ALLOWED) == set()
    assert units >= FOUNDATION


def tree(root: Path, files: dict[str, str]) -> Path:
    """A synthetic package ``pkg`` under ``root`` with these modules."""
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name != "__init__.py" and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(textwrap.dedent(text))
    return package


CLEAN = {
    "errors.py": "class VocalinkError(Exception): ...\n",
    "protocol/__init__.py": "from ..errors import VocalinkError\n",
    "hub/__init__.py": "from ..protocol import x\nfrom ..errors import VocalinkError\n",
    "storage/catalog.py": "import sqlite3\nfrom ..errors import VocalinkError\n",
    "server/app.py": "import tornado.web\nfrom ..hub import Hub\nfrom ..storage import c\n",
    "agent/agent.py": "import websockets\nfrom ..protocol import x\nfrom ..durable import w\n",
    "durable.py": "import os\n",
    "widgets/panel.py": "from ..protocol import Topic\nfrom ..audio import io\n",
    "audio/io.py": "import numpy\n",
}


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    assert violations(tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(("module", "text", "expected"), [
    ("hub/link.py", "import tornado.websocket\n", "hub imports tornado"),
    ("hub/link.py", "def f():\n    import sqlite3\n", "hub imports sqlite3"),
    ("hub/link.py", "from ..storage import catalog\n", "hub imports storage"),
    ("hub/link.py",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..server import app\n",
     "hub imports server"),
    ("storage/files.py", "from ..hub import Hub\n", "storage imports hub"),
    ("audio/io.py", "def f():\n    from ..protocol import x\n", "audio imports protocol"),
    ("protocol/codec.py", "from ..config import Settings\n", "protocol imports config"),
    ("agent/agent.py", "from ..server.app import Server\n", "agent imports server"),
    ("agent/agent.py", "def f():\n    from .. import storage\n", "agent imports storage"),
    ("agent/agent.py", "import tornado\n", "agent imports tornado"),
    ("agent/agent.py", "import pandas\n", "needs pandas, not in the agent's install"),
    ("widgets/panel.py", "from ..hub import Hub\n", "widgets imports hub"),
    ("widgets/panel.py",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..lab import Lab\n",
     "widgets imports lab"),
    ("durable.py", "from .protocol import x\n", "durable is a foundation module"),
    ("server/app.py", "from ..hub.registry import _private_helper\n",
     "imports the private _private_helper of hub"),
    ("server/app.py", "from ..hub._impl import thing\n", "imports the private _impl of hub"),
    ("newthing/__init__.py", "", "newthing: a unit the architecture does not place"),
])
def test_a_forbidden_import_fails(tmp_path: Path, module: str, text: str,
                                  expected: str) -> None:
    found = violations(tree(tmp_path, {**CLEAN, module: text}))
    assert any(expected in line for line in found), found


def test_a_private_name_inside_its_own_unit_is_fine(tmp_path: Path) -> None:
    files = {**CLEAN, "hub/registry.py": "from .link import _helper\n"}
    assert violations(tree(tmp_path, files)) == []


def test_a_cycle_between_units_fails_and_is_named(tmp_path: Path) -> None:
    # Both arrows are allowed one at a time (cli → dashboard, dashboard → cli is not),
    # so the cycle is reported on its own line, as the path around it.
    files = {**CLEAN,
             "cli.py": "from .dashboard import run\n",
             "dashboard/__init__.py": "def f():\n    from ..cli import _signal_waiter\n"}
    found = violations(tree(tmp_path, files))
    assert "import cycle between units: cli → dashboard → cli" in found, found
    assert any("imports the private _signal_waiter of cli" in line for line in found)


def test_topics_and_job_states_are_spelled_only_in_protocol() -> None:
    assert contract_literals(PACKAGE, [t.value for t in Topic]) == []
    # "failed" also names a state of mDNS advertising and of a resumable upload.
    elsewhere = ["discovery", "storage/resumable.py", "server/tus.py", "widgets/render.py"]
    assert contract_literals(PACKAGE, [s.value for s in JobState], exclude=elsewhere) == []


def test_a_spelled_out_topic_is_found(tmp_path: Path) -> None:
    package = tree(tmp_path, {**CLEAN, "widgets/panel.py": "TOPIC = 'device.updated'\n"})
    found = contract_literals(package, ["device.updated"])
    assert found == [f"{package / 'widgets' / 'panel.py'}:1: 'device.updated'"]
