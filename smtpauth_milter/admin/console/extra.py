"""Whether the ``[console]`` extra is installed, without importing any of it."""

from __future__ import annotations

import importlib.util

from smtpauth_milter.core.errors import ConfigError

# Import name -> the distribution that provides it (all in the [console] extra).
MODULES = {
    "starlette": "starlette",
    "jinja2": "Jinja2",
    "uvicorn": "uvicorn",
    "itsdangerous": "itsdangerous",
    "argon2": "argon2-cffi",
    "multipart": "python-multipart",
}


def require(command: str) -> None:
    """Raise one clear line when a module of the extra is missing."""
    missing = [dist for name, dist in MODULES.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"`smtpauth-milter {command}` needs the console extra (missing: "
            f"{', '.join(missing)}): pip install 'smtpauth-milter[console]'"
        )
