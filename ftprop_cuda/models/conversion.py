"""Turn any model's ReLU-like activation modules into hard-threshold units.

    model, report = ftprop_cuda.convert(torchvision.models.resnet18(), nonlin="step")
    print(report)

Which activations are replaced: by default the piecewise-linear ones with a kink at 0 that a
threshold unit stands in for (ReLU, ReLU6, Hardtanh, LeakyReLU, RReLU). The smooth or gating
ones (SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh, ELU, ...) are left alone and listed in
the report: in MobileNetV3/EfficientNet they gate channels (squeeze-excitation) or carry
negative values a sign unit would erase; pass `types=` to replace them too. PReLU is left
alone by default because it holds a learned parameter that replacing it would drop.

Only modules can be swapped. An activation called as a function inside a forward
(torch.relu(x), F.relu(x), x.relu()) stays a ReLU; convert traces the model with torch.fx to
find such calls and lists them in report.unconverted (a model fx cannot trace is reported as
unchecked).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import Callable, Iterable, Optional, Union

import torch

from ..ops import functional as F
from ..ops.nn import Staircase, Step
from .units import HARD_THRESHOLD, make_unit

DEFAULT_TYPES = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardtanh, torch.nn.LeakyReLU,
                 torch.nn.RReLU)
# Activation modules that convert leaves alone unless `types` names them; the report lists them.
OTHER_ACTIVATIONS = (torch.nn.SiLU, torch.nn.GELU, torch.nn.Hardswish, torch.nn.Hardsigmoid,
                     torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.ELU, torch.nn.CELU, torch.nn.SELU,
                     torch.nn.Mish, torch.nn.Softplus, torch.nn.PReLU, torch.nn.Threshold)

_FUNCTIONAL_ACTIVATIONS = {
    torch.relu, torch.relu_, torch.nn.functional.relu, torch.nn.functional.relu_,
    torch.nn.functional.relu6, torch.nn.functional.leaky_relu, torch.nn.functional.hardtanh,
    torch.nn.functional.rrelu, torch.clamp_min,
}
_METHOD_ACTIVATIONS = {"relu", "relu_", "clamp_min", "clamp_min_"}

NameFilter = Union[None, str, Callable[[str], bool]]


@dataclasses.dataclass
class Replacement:
    """One activation module replaced: every name it was reachable by, old and new module."""
    names: list
    old: str
    new: str
    calls: Optional[int] = None  # calls in the forward (from the torch.fx trace), if known

    def __str__(self):
        uses = max(len(self.names), self.calls or 0)
        shared = f"  (used at {uses} places: one unit, shared)" if uses > 1 else ""
        return f"{', '.join(self.names)}: {self.old} -> {self.new}{shared}"


@dataclasses.dataclass
class ConvertReport:
    """What convert did: replaced modules, activation modules left alone, functional calls
    that module swapping cannot reach, and whether the forward could be checked for those."""
    replaced: list = dataclasses.field(default_factory=list)
    left_alone: list = dataclasses.field(default_factory=list)
    unconverted: list = dataclasses.field(default_factory=list)
    functional_check: str = "not run"

    def lines(self) -> list:
        out = [f"replaced {len(self.replaced)} activation module(s):"]
        out += [f"  {r}" for r in self.replaced]
        if self.left_alone:
            out.append(f"left alone ({len(self.left_alone)}, not in types or filtered by name):")
            out += [f"  {name}: {what}" for name, what in self.left_alone]
        if self.unconverted:
            out.append(f"not converted ({len(self.unconverted)} functional calls in a forward):")
            out += [f"  {u}" for u in self.unconverted]
        out.append(f"functional activations: {self.functional_check}")
        return out

    def __str__(self):
        return "\n".join(self.lines())


def _name_matcher(name_filter, arg):
    if name_filter is None:
        return lambda name: True
    if isinstance(name_filter, str):
        try:
            pattern = re.compile(name_filter)
        except re.error as exc:
            raise ValueError(f"{arg} must be a regular expression or a callable; "
                             f"{name_filter!r} does not compile: {exc}") from None
        return lambda name: pattern.search(name) is not None
    if callable(name_filter):
        return lambda name: bool(name_filter(name))
    raise TypeError(f"{arg} must be None, a regular expression string or a callable taking a "
                    f"module name; got {type(name_filter).__name__}")


def _check_types(types):
    types = tuple(types) if isinstance(types, Iterable) else (types,)
    if not types or not all(isinstance(t, type) and issubclass(t, torch.nn.Module)
                            for t in types):
        raise TypeError(f"types must be a non-empty tuple of torch.nn.Module subclasses; "
                        f"got {types!r}")
    return types


class _UnitsAsLeaves(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (Step, Staircase)) or super().is_leaf_module(m, qualname)


def _functional_calls(model):
    """(functional ReLU-like calls, calls per module name, a one-line account of the check)."""
    try:
        graph = _UnitsAsLeaves().trace(model)
    except Exception as exc:  # any failure to trace means the check could not run
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return [], {}, (f"unchecked: torch.fx could not trace the model "
                        f"({type(exc).__name__}: {first})")
    found, calls = [], {}
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_ACTIVATIONS:
            found.append(f"{node.name}: {getattr(node.target, '__name__', node.target)}(...)")
        elif node.op == "call_method" and node.target in _METHOD_ACTIVATIONS:
            found.append(f"{node.name}: Tensor.{node.target}()")
        elif node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    account = "checked with torch.fx: " + (f"{len(found)} found" if found else "none found")
    return found, calls, account


def _module_edges(model):
    """Every (parent, attribute, child) edge of the model, and every name of each child (by
    id), so that a module reused at several places is seen under all its names."""
    names, edges = {}, []
    for parent_name, parent in model.named_modules(remove_duplicate=False):
        for attr, child in parent._modules.items():
            if child is None:
                continue
            name = f"{parent_name}.{attr}" if parent_name else attr
            names.setdefault(id(child), []).append(name)
            edges.append((parent, attr, child))
    return names, edges


def _swap_modules(model, make, types, wanted):
    """Puts one make() unit in every place of each module of `types` that wanted(its names)
    accepts; a ConvertReport of the modules replaced and the activations left alone."""
    names, edges = _module_edges(model)
    report = ConvertReport()
    new_units, seen = {}, set()
    for parent, attr, child in edges:
        key = id(child)
        if key not in new_units and key not in seen:
            seen.add(key)
            child_names = list(dict.fromkeys(names[key]))
            if isinstance(child, types) and wanted(child_names):
                new_units[key] = make()
                report.replaced.append(Replacement(child_names, repr(child),
                                                   repr(new_units[key])))
            elif isinstance(child, types + OTHER_ACTIVATIONS + DEFAULT_TYPES):
                report.left_alone.append((", ".join(child_names), repr(child)))
        if key in new_units:
            parent._modules[attr] = new_units[key]
    return report


def convert(model: torch.nn.Module, nonlin: str = "step", rule: str = "soft_hinge",
            grad_scale: bool = True, backend: str = "auto", save: str = "auto",
            types: Iterable[type] = DEFAULT_TYPES, include: NameFilter = None,
            exclude: NameFilter = None, inplace: bool = False,
            check_functional: bool = True) -> tuple[torch.nn.Module, ConvertReport]:
    """Replaces the activation modules of `model` by hard-threshold units; returns (model, report).

    nonlin: 'step' (sign, +-1), 'step01' (0/1), 'qrelu' (staircase, 3 steps on [0, 1]) or
    'qrelu5' (5 steps); rule, grad_scale, backend, save: passed to the units (see Step and
    Staircase). types: the module classes replaced (subclasses too; default DEFAULT_TYPES).
    include / exclude: a regular expression searched in the module's qualified name, or a
    callable name -> bool; a module is replaced when some name of it is included and none
    excluded. inplace=False (default) converts a deep copy and leaves `model` untouched.
    A module object used at several places (torchvision's BasicBlock calls one self.relu
    twice) becomes one unit shared by those places: the units hold no state, so sharing one
    computes what separate units would. check_functional traces the model with torch.fx to
    list ReLU-like calls inside forward methods, which module swapping cannot replace.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    # a hard-threshold name (units.HARD_THRESHOLD); one unit made validates the other arguments
    F.check_choice("nonlin", nonlin, tuple(HARD_THRESHOLD))
    make_unit(nonlin, rule, grad_scale, backend, save)
    types = _check_types(types)
    included = _name_matcher(include, "include")
    excluded = _name_matcher(exclude, "exclude") if exclude is not None else lambda n: False
    F.check_bool("inplace", inplace)
    F.check_bool("check_functional", check_functional)
    if not inplace:
        model = copy.deepcopy(model)

    def wanted(child_names):
        return any(included(n) for n in child_names) and not any(excluded(n)
                                                                 for n in child_names)

    report = _swap_modules(model, lambda: make_unit(nonlin, rule, grad_scale, backend, save),
                           types, wanted)
    if check_functional:
        report.unconverted, calls, report.functional_check = _functional_calls(model)
        for r in report.replaced:
            r.calls = sum(calls.get(n, 0) for n in r.names)
    return model, report


__all__ = ["convert", "ConvertReport", "Replacement", "DEFAULT_TYPES", "OTHER_ACTIVATIONS"]
