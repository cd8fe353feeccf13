"""The KmsError tree: each class's wire identity, and the drawing in errors.py that names them all."""

from __future__ import annotations

import re

import pytest

from regiond import errors
from regiond.errors import KmsError

CLASSES = {c.__name__: c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, KmsError)}


def _drawn() -> dict[str, int]:
    """Class name -> status, as the module docstring's tree draws them."""
    doc = errors.__doc__ or ""
    tree = doc[doc.index("    KmsError (abstract") : doc.index("(tests/unit/test_errors.py")]
    out: dict[str, int] = {}
    default: int | None = None
    for line in tree.splitlines()[1:]:
        label, sep, names = line.partition(":")
        if sep:
            found = re.search(r"\((\d{3})\)", label)
            default = int(found.group(1)) if found else None
        else:
            names = line
        for name, status in re.findall(r"([A-Z][A-Za-z]+)(?: \((\d{3})\))?", names):
            if name in {"IAM", "API"}:  # words of the labels, not classes
                continue
            out[name] = int(status) if status else default  # type: ignore[assignment]
    return out


def test_the_drawing_names_every_class_with_its_status() -> None:
    drawn = _drawn()
    assert set(drawn) == set(CLASSES) - {"KmsError"}
    for name, status in drawn.items():
        assert CLASSES[name].status == status, name


def test_the_base_is_abstract_and_a_server_fault() -> None:
    assert (KmsError.code, KmsError.status) == ("KMSInternalException", 500)
    with pytest.raises(TypeError, match="code"):
        type("NoCode", (KmsError,), {})


def test_client_faults_default_to_400_and_keep_their_aws_type() -> None:
    made: type[KmsError] = type("Made", (KmsError,), {"code": "MadeException"})
    assert made.status == 400
    assert errors.MissingAuthenticationToken.status == 400
    assert errors.MissingAuthenticationToken.code == "MissingAuthenticationTokenException"
    assert errors.RequestEntityTooLargeException.status == 413
    assert errors.KMSInternalException.status == 500
    assert errors.NotFoundException("gone").message == "gone"
    assert str(errors.NotFoundException()) == "NotFoundException"
    assert all(c.code for c in CLASSES.values())
