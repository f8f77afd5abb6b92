"""The package root: every public name is the object its owner defines, whatever was imported before."""

from __future__ import annotations

import importlib
import pkgutil

import facegrid


def test_no_public_name_is_hidden_by_a_subpackage():
    parts = {module.name for module in pkgutil.iter_modules(facegrid.__path__)}
    assert {"core", "data", "train", "infer"} <= parts
    assert not parts & set(facegrid.__all__)  # a subpackage, once imported, would replace the name


def test_every_public_name_is_its_owners_object():
    for part in ("core", "wider", "data", "model", "train", "infer", "eval", "deploy", "scale"):
        importlib.import_module(f"facegrid.{part}")
    for name in facegrid.__all__:
        owner = importlib.import_module(facegrid._OWNERS[name])
        assert getattr(facegrid, name) is getattr(owner, name), name
