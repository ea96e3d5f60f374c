"""The one-line model API: lean(model), is_lean(model), lean_report(model).

lean() installs forward hooks on the model that run its training forward under lean_memory()
(mode.py), which registers the lean context with the ops' observer hook while it runs."""
import contextlib
import threading

import torch

from .mode import lean_memory


class _Call(threading.local):
    """One thread's lean forward of a model (threads run forwards of one model independently)."""
    stack = None
    depth = 0
    ctx = None
    calls = ()  # the modules being called, innermost last


class LeanHooks:
    """Forward hooks that run a module's training forward under lean_memory().

    Only the model itself carries hooks. While a lean forward runs, two global module hooks
    (removed when it ends) keep the name of the module being called, for lean_report. The state
    of a running forward is per thread."""

    def __init__(self, model):
        self.names = {m: n or "(model)" for n, m in model.named_modules()}
        self.handles = []
        self.report = {}
        self.local = _Call()

    def __getstate__(self):  # copy.deepcopy(model): a fresh per-thread state
        state = dict(self.__dict__)
        del state["local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.local = _Call()

    @property
    def ctx(self):
        return self.local.ctx

    def _start(self):
        """Enters lean_memory for the outermost call; the global naming hooks while it runs."""
        stack = contextlib.ExitStack()
        report = {}
        ctx = stack.enter_context(lean_memory(report))
        if ctx is None:
            stack.close()
            return
        from torch.nn.modules import module as nn_module
        stack.callback(nn_module.register_module_forward_pre_hook(self.sub_enter).remove)
        stack.callback(nn_module.register_module_forward_hook(
            self.sub_exit, always_call=True).remove)
        local = self.local
        local.stack, local.ctx, local.calls = stack, ctx, []
        self.report = report

    def enter(self, module, args):
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return
        local = self.local
        if local.depth == 0:
            self._start()
        local.depth += 1

    def exit(self, module, args, output):
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return
        local = self.local
        local.depth -= 1
        if local.depth == 0 and local.stack is not None:
            stack, local.stack, local.ctx = local.stack, None, None
            stack.close()

    def sub_enter(self, module, args):
        local = self.local
        if local.ctx is not None:
            local.calls.append(self.names.get(module))
            local.ctx.module = next((n for n in reversed(local.calls) if n), None)

    def sub_exit(self, module, args, output):
        local = self.local
        if local.ctx is not None and local.calls:
            local.calls.pop()
            local.ctx.module = next((n for n in reversed(local.calls) if n), None)

    def install(self, model):
        self.handles.append(model.register_forward_pre_hook(self.enter))
        self.handles.append(model.register_forward_hook(self.exit, always_call=True))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def lean(model, enabled=True):
    """Puts model in lean memory mode (enabled=False: back to the standard mode); returns it.

    Parameters, buffers, state_dict and outputs are unchanged; only what a training forward
    keeps for the backward is. lean_report(model) says, after a forward, which layers kept less.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False; got {enabled!r}")
    hooks = getattr(model, "_ftprop_lean", None)
    if hooks is not None:
        hooks.remove()
        del model._ftprop_lean
    if enabled:
        hooks = LeanHooks(model)
        hooks.install(model)
        model._ftprop_lean = hooks
    return model


def is_lean(model):
    return getattr(model, "_ftprop_lean", None) is not None


def lean_report(model):
    """What the last training forward of a lean model kept less of, per layer (a string)."""
    hooks = getattr(model, "_ftprop_lean", None)
    if hooks is None:
        return "lean memory mode is off for this model"
    if not hooks.report:
        return "no training forward in lean memory mode yet (or nothing could be made lean)"
    lines = []
    for name, notes in hooks.report.items():
        seen = list(dict.fromkeys(notes))
        lines.append(f"{name}: " + "; ".join(seen))
    return "\n".join(lines)
