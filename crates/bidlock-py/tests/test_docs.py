"""The Python pages, README.md's first screen among them, show code that runs as pasted:
every Python block parses as a module (no top-level `await`), every block that is a
script (it calls `asyncio.run`) runs on memory and on a real Redis, and the guide's
example in docs/PYTHON.md is the file that `mypy --strict` checks
(crates/bidlock-py/examples/guide.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [
    REPO / "README.md",
    REPO / "docs" / "PYTHON.md",
    REPO / "docs" / "MIGRATION.md",
    REPO / "crates" / "bidlock-py" / "README.md",
]
EXAMPLE = REPO / "crates" / "bidlock-py" / "examples" / "guide.py"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


BLOCKS = [(page, i, code) for page in PAGES for i, code in enumerate(python_blocks(page))]
SCRIPTS = [(page, i, code) for page, i, code in BLOCKS if "asyncio.run(" in code]


def test_every_page_has_python_and_the_guide_has_scripts():
    assert all(python_blocks(page) for page in PAGES)
    assert len([s for s in SCRIPTS if s[0].name == "PYTHON.md"]) >= 2


@pytest.mark.parametrize("page,index,code", BLOCKS, ids=[f"{p.relative_to(REPO)}-{i}" for p, i, _ in BLOCKS])
def test_every_python_block_compiles_as_a_module(page, index, code):
    # compile, not ast.parse: a top-level `await` parses, but does not compile.
    compile(code, f"{page.name} block {index}", "exec")


def test_the_guide_page_shows_the_checked_example():
    assert EXAMPLE.read_text() in python_blocks(REPO / "docs" / "PYTHON.md")


def run_script(code: str, env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "pasted.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "USE_REDIS_LOCKS"}}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


@pytest.mark.parametrize("page,index,code", SCRIPTS, ids=[f"{p.relative_to(REPO)}-{i}" for p, i, _ in SCRIPTS])
@pytest.mark.parametrize("where", ["memory", "redis"])
def test_every_script_runs_as_pasted(page, index, code, where, redis_server, tmp_path):
    if where == "redis":
        redis_server.client.flushdb()
        env = {"REDIS_URL": redis_server.url, "USE_REDIS_LOCKS": "true"}
    else:
        env = {"USE_REDIS_LOCKS": "false"}
    out = run_script(code, env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "the script printed nothing"
    assert "Traceback" not in out.stderr, out.stderr
