"""The one registry helper (lowbit.registry) and the registries built on it."""
import pytest

from lowbit.registry import Registry, UnknownNameError


def test_registry_add_get_list_and_errors():
    r = Registry("widget")
    r.add("b", 2)

    @r.register()
    def a():
        return 1

    assert r.get("a") is a and r.get("b") == 2
    assert r.names() == ["a", "b"] and "a" in r and "zz" not in r and len(r) == 2
    with pytest.raises(UnknownNameError, match=r"^unknown widget 'c'; allowed: a, b$"):
        r.get("c")
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        r.add("a", 3)
    with pytest.raises(ValueError, match="non-empty string"):
        r.add("", 3)


def test_ordered_registry_keeps_registration_order():
    r = Registry("thing", ordered=True)
    for k in ("z", "a", "m"):
        r.add(k, k)
    assert r.names() == ["z", "a", "m"]


@pytest.mark.parametrize("module, attr, what", [
    ("lowbit.formats.registry", "FORMATS", "format"), ("lowbit.models.registry", "MODELS", "model"),
    ("lowbit.data.registry", "DATASETS", "dataset"), ("lowbit.data.augment", "AUGMENTATIONS", "augmentation"),
    ("lowbit.search.strategies", "STRATEGIES", "strategy"), ("lowbit.export", "EXPORTERS", "export target")])
def test_every_family_uses_the_helper(module, attr, what):
    import importlib
    reg = getattr(importlib.import_module(module), attr)
    assert isinstance(reg, Registry) and reg.what == what and len(reg) > 0
    with pytest.raises(UnknownNameError, match=f"unknown {what} 'no-such-name'; allowed: "):
        reg.get("no-such-name")
