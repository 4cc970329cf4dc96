"""Every public function and method of the engine and the divergences says what it takes and returns: the
contracts between the rooms are typed."""
import importlib
import inspect
import pkgutil

import pytest

import comfyui_unlearn.divergences
import comfyui_unlearn.unlearning

PACKAGES = (comfyui_unlearn.unlearning, comfyui_unlearn.divergences)


def modules():
    for package in PACKAGES:
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def public_functions():
    """(qualified name, function) of each public function and method defined in these packages."""
    seen = set()
    for module in modules():
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            members = [(name, value)] if inspect.isfunction(value) else [
                (f"{name}.{attribute}", inspect.unwrap(function)) for attribute, member in vars(value).items()
                if not attribute.startswith("_") or attribute == "__init__"
                for function in [getattr(member, "__func__", member)]
                if inspect.isfunction(function) and function.__qualname__ == f"{name}.{attribute}"   # its own
            ] if inspect.isclass(value) else []
            for qualified, function in members:
                if id(function) not in seen:
                    seen.add(id(function))
                    yield f"{module.__name__}.{qualified}", function


def unannotated(function) -> list:
    """The parameters (and 'return') of a function without annotations; an override inherits its base's."""
    signature = inspect.signature(function)
    missing = [p.name for p in signature.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if signature.return_annotation is inspect.Signature.empty and function.__name__ != "__init__":
        missing.append("return")
    return missing


def overrides_typed_base(qualified, function) -> bool:
    """A method that overrides an annotated method of a base class (an objective's loss, say) keeps its contract."""
    module = importlib.import_module(function.__module__)
    owner = getattr(module, function.__qualname__.split(".")[0], None)
    for base in inspect.getmro(owner)[1:] if inspect.isclass(owner) else ():
        inherited = getattr(base, function.__name__, None)
        if inspect.isfunction(inherited) and not unannotated(inherited):
            return True
    return False


@pytest.mark.parametrize("qualified,function", list(public_functions()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_functions_are_annotated(qualified, function):
    missing = unannotated(function)
    assert not missing or overrides_typed_base(qualified, function), \
        f"{qualified} has no annotation for: {', '.join(missing)}"
