"""The package under test is the installed one (the wheel, or the sdist's build), not
the source tree, and it is what the workspace builds."""

from __future__ import annotations

import re
from pathlib import Path

import bidlock
from bidlock import _native
from conftest import REPO


def test_the_package_under_test_is_installed_not_the_source_tree():
    source = (REPO / "crates" / "bidlock-py" / "python").resolve()
    installed = Path(bidlock.__file__).resolve()
    assert source not in installed.parents, f"imported from the source tree: {installed}"
    assert Path(_native.__file__).name == "_native.abi3.so", _native.__file__


def test_the_version_is_the_workspace_one():
    workspace = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', workspace, flags=re.M | re.S)
    assert version and bidlock.__version__ == version.group(1)
