"""replication has one error root, drawn in replication/errors.py."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import replication
from replication import errors
from replication.errors import ReplicationError


def test_every_replication_exception_descends_from_the_root() -> None:
    seen = 0
    for info in pkgutil.iter_modules(replication.__path__):
        module = importlib.import_module(f"replication.{info.name}")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                assert issubclass(value, ReplicationError), f"{module.__name__}.{name}"
                if not name.startswith("_"):
                    assert name in (errors.__doc__ or ""), f"{name} is not drawn in replication/errors.py"
                seen += 1
    assert seen >= 10
