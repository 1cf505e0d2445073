"""Loading what configs name: YAML text (plain data only) and ``"module:attribute"`` targets.

Modules are imported with a given directory (a config file's) placed first on ``sys.path``
only while they are resolved, so a ``my_module.py`` next to the config is found; a module of the
same name imported earlier from elsewhere is replaced by that file.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from hybridmoo.errors import ConfigError, one_line


def load_yaml(text: str) -> Any:
    """Parse YAML with a safe loader that also rejects a key given twice in one mapping."""
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {_yaml_problem(exc)}") from None


def read_yaml_file(path: str | Path) -> Any:
    """The data a YAML file holds; a missing or unreadable file and bad YAML become one-line
    ConfigErrors that start with the path."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{source}: cannot read the config file: {reason}") from None
    try:
        return load_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def resolve(target: str, base_dir: Path | None = None) -> Any:
    """The object ``"module:attribute"`` names (``attribute`` may be dotted)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"must be 'module:attribute', got {target!r}")
    obj: Any = import_module(module_name, base_dir)
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}"
                              f"{did_you_mean(part, public)}")
        obj = getattr(obj, part)
    return obj


def import_module(name: str, base_dir: Path | None = None) -> ModuleType:
    """Import ``name``, looking in ``base_dir`` first; failures are one-line ConfigErrors."""
    where = f"{base_dir.resolve()} and sys.path" if base_dir else "sys.path"
    with _first_on_path(base_dir):
        if base_dir is not None:
            _forget_shadowed(name, base_dir)
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise ConfigError(f"cannot import module {name!r}: no such module "
                                  f"(searched {where})") from None
            raise ConfigError(f"importing module {name!r} failed: {exc}") from None
        except Exception as exc:  # the user's module raised while importing
            raise ConfigError(f"importing module {name!r} failed: "
                              f"{type(exc).__name__}: {exc}") from None


@contextmanager
def _first_on_path(directory: Path | None) -> Iterator[None]:
    """``directory`` first on ``sys.path`` for the duration (nothing when ``None``)."""
    if directory is None:
        yield
        return
    entry = str(directory.resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # files written since the last import must be seen
    try:
        yield
    finally:
        sys.path.remove(entry)


def _forget_shadowed(name: str, directory: Path) -> None:
    """Drop an already imported module ``name`` when ``directory`` holds another file of
    that name, so the one next to the config is imported (two configs, two ``evaluate.py``)."""
    top = name.partition(".")[0]
    if top in sys.builtin_module_names:
        return
    local = [directory / f"{top}.py", directory / top / "__init__.py"]
    local_file = next((p.resolve() for p in local if p.is_file()), None)
    loaded = sys.modules.get(top)
    if local_file is None or loaded is None:
        return
    loaded_file = getattr(loaded, "__file__", None)
    if loaded_file is not None and Path(loaded_file).resolve() == local_file:
        return
    for mod in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[mod]


def unknown_name(kind: str, name: object, names: Iterable[str]) -> ConfigError:
    """The error for a name no registry holds, with the closest registered one."""
    names = list(names)
    return ConfigError(f"unknown {kind} {name!r}{did_you_mean(str(name), names)}; "
                       f"choose one of: {', '.join(names)}")


def unknown_key(where: str, key: object, valid: Iterable[str]) -> ConfigError:
    """The error for a config key ``where`` does not take, with the closest valid one and
    all of them."""
    valid = list(valid)
    return ConfigError(f"{where}: unknown key {key!r}{did_you_mean(str(key), valid)}; "
                       f"valid keys: {', '.join(valid)}")


def check_options(owner: str, options: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise a ConfigError naming the first option ``owner`` does not take."""
    allowed = sorted(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{owner} has no option {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], allowed)}; "
                          f"it takes {', '.join(allowed) or 'none'}")


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return one_line(f"{problem}{where}")


@functools.cache
def _unique_key_loader() -> type:
    """A SafeLoader that rejects a key given twice in one mapping (plain YAML keeps the last);
    built on first use so that importing this module does not import yaml."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    given_twice = key in seen
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
                if given_twice:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader
