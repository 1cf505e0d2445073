"""pyproject lists every package (the list is explicit so that search_spaces/ ships as
hybridmoo.search_spaces) and ships every declarative space file."""

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "hybridmoo").rglob("__init__.py")}
    listed = set(SETUPTOOLS["packages"])
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert SETUPTOOLS["package-dir"]["hybridmoo.search_spaces"] == "search_spaces"


def test_every_space_file_is_package_data():
    patterns = SETUPTOOLS["package-data"]["hybridmoo.search_spaces"]
    folder = ROOT / "search_spaces"
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
             if p.suffix in (".yaml", ".md")]
    assert any(f.startswith("supernets/") for f in files)
    missing = [f for f in files if not any(fnmatch(f, pat) and f.count("/") == pat.count("/")
                                           for pat in patterns)]
    assert not missing, missing
