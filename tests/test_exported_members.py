"""The public API: ``evertrain.__all__`` is sorted and everything in it can be imported."""

from __future__ import annotations

import importlib

import evertrain


def test_all_is_sorted_and_unique() -> None:
    assert list(evertrain.__all__) == sorted(set(evertrain.__all__))


def test_every_exported_name_is_importable() -> None:
    module = importlib.import_module("evertrain")
    for name in evertrain.__all__:
        assert hasattr(module, name), name
        exec(f"from evertrain import {name}", {})


def test_public_classes_say_where_they_come_from() -> None:
    for name in evertrain.__all__:
        value = getattr(evertrain, name)
        if isinstance(value, type):
            assert value.__module__.startswith("evertrain."), (name, value.__module__)
            assert not name.startswith("_")
