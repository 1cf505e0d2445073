"""Errors that mean "the user's input is wrong" (the CLI turns them into one line + exit 2)."""


def one_line(text: object) -> str:
    """``text`` with its lines joined by single spaces (messages that fit one terminal line)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


class HybridMooError(Exception):
    """Base class of every error hybridmoo raises on purpose."""


class ConfigError(HybridMooError, ValueError):
    """Bad input: an unknown key or name, a wrong type, an empty space, a bad budget, ..."""


class RunDirError(HybridMooError):
    """The run directory cannot be used: locked by another process, or holds another run."""


class MissingExtraError(HybridMooError, ImportError):
    """A feature needs an optional dependency that is not installed (the message names the
    ``pip install "hybridmoo[EXTRA]"`` command that installs it)."""
