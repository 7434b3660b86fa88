"""The method registry: a name is taken once, so `--method NAME` always runs the method that claimed it."""

from __future__ import annotations

import pytest

from steuops import methods


@pytest.fixture()
def registry(monkeypatch):
    """The real registry (built-in methods loaded), restored afterwards: tests may register freely."""
    methods.available()
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    return methods._REGISTRY


def test_a_second_class_cannot_take_a_registered_name(registry):
    @methods.register("probe-method")
    class First:
        config_class = methods.MethodConfig

    class Second:
        config_class = methods.MethodConfig

    with pytest.raises(ValueError, match="'probe-method' is already registered by .*First") as exc:
        methods.register("probe-method")(Second)
    assert "Second" in str(exc.value)
    assert registry["probe-method"] is First and not hasattr(Second, "name")


def test_a_built_in_method_cannot_be_replaced(registry):
    steu = registry["steu"]

    class Impostor:
        config_class = methods.MethodConfig

    with pytest.raises(ValueError, match="'steu' is already registered"):
        methods.register("steu")(Impostor)
    assert type(methods.get("steu")) is steu


def test_the_same_class_registers_again(registry):
    class Again:
        config_class = methods.MethodConfig

    assert methods.register("again")(Again) is Again
    assert methods.register("again")(Again) is Again
    assert registry["again"] is Again and Again.name == "again"


def test_a_reloaded_definition_replaces_itself(registry):
    """importlib.reload re-runs the decorator with a new class object of the same module and name."""

    def define():
        class Reloaded:
            config_class = methods.MethodConfig

        return Reloaded

    first, second = define(), define()
    assert first is not second
    methods.register("reloaded")(first)
    methods.register("reloaded")(second)
    assert registry["reloaded"] is second
