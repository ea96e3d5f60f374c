"""verify_lean: does lean mode train this model, on this batch, bitwise like the standard path?

    result = ftprop_cuda.memory.verify_lean(model, (x, y), torch.nn.functional.cross_entropy)
    if not result:
        print(result)        # names the first layer whose output, gradient or buffer differs

It runs one training forward and backward twice, standard then lean, from the same parameters,
buffers, gradients and RNG states (CPU and CUDA), records every module's output, the gradient
reaching it, every parameter's gradient and every buffer, compares them bitwise, and restores
everything it touched: parameters, buffers, gradients, RNG states, training mode and whether the
model was lean. No optimizer step is taken.
"""
import contextlib

import torch

from .hooks import is_lean, lean
from .records import same_bits


class VerifyResult:
    """The outcome of verify_lean. True (bool) when bitwise equal.

    equal: bool; layer: the qualified name of the first module whose output, incoming gradient,
    parameter gradient or buffer differs ('(model)' for the model itself), or None; what: which
    of those differs ('output', 'output gradient', 'parameter gradient', 'buffer', 'error');
    error: the exception lean mode raised where the standard path did not (or the standard
    path's, which lean mode cannot be checked against), or None."""

    __slots__ = ("equal", "layer", "what", "error")

    def __init__(self, equal, layer=None, what=None, error=None):
        self.equal, self.layer, self.what, self.error = equal, layer, what, error

    def __bool__(self):
        return self.equal

    def __repr__(self):
        return (f"VerifyResult(equal={self.equal}, layer={self.layer!r}, what={self.what!r}, "
                f"error={self.error!r})")

    def __str__(self):
        if self.equal:
            return "lean mode is bitwise the standard path on this batch"
        if self.what == "error":
            where = f" in layer {self.layer!r}" if self.layer else ""
            return (f"lean mode raised {type(self.error).__name__}{where} where the standard "
                    f"path did not: {self.error}")
        if self.what == "standard error":
            return f"the standard path itself raised {type(self.error).__name__}: {self.error}"
        return f"lean mode differs from the standard path: the {self.what} of layer {self.layer!r}"


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return []


class _Recorder:
    """Per-module outputs (in call order) and the gradients reaching them, of one run."""

    def __init__(self, model):
        self.names = {m: n or "(model)" for n, m in model.named_modules()}
        self.outputs, self.grads, self.calls = [], {}, []
        self.handles = [m.register_forward_pre_hook(self.pre) for m in self.names]
        # not always_call: after an error, calls still lists the modules it was raised in
        self.handles += [m.register_forward_hook(self.post) for m in self.names]

    def pre(self, module, args):
        self.calls.append(self.names[module])

    def post(self, module, args, output):
        name = self.calls.pop() if self.calls else self.names[module]
        key = (name, len(self.outputs))
        tensors = _tensors(output)
        self.outputs.append((key, [t.detach().clone() for t in tensors]))
        for i, t in enumerate(tensors):
            if t.requires_grad:
                t.register_hook(lambda g, k=key, i=i: self.grads.__setitem__((k, i), g.clone()))

    def close(self):
        for h in self.handles:
            h.remove()


def _rng_states():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states):
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _run(model, batch, loss_fn, context, rng):
    """One forward and backward from the saved RNG states: (recorder, param grads, buffers,
    error, the layer being called when it raised)."""
    _set_rng_states(rng)
    for p in model.parameters():
        p.grad = None
    rec = _Recorder(model)
    error = layer = None
    try:
        x, rest = (batch[0], tuple(batch[1:])) if isinstance(batch, (tuple, list)) \
            else (batch, ())
        with context():
            out = model(x)
        loss = loss_fn(out, *rest)
        loss.backward()
    except Exception as exc:  # noqa: BLE001 - the outcome under comparison
        error, layer = exc, (rec.calls[-1] if rec.calls else None)
    finally:
        rec.close()
    grads = {n: None if p.grad is None else p.grad.detach().clone()
             for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    return rec, grads, buffers, error, layer


def _owner(name):
    """The module owning a parameter or buffer, by its qualified name."""
    return name.rpartition(".")[0] or "(model)"


def _first_difference(std, lean_run):
    """(layer, what) of the first difference between two runs, or None."""
    (rec_s, grads_s, bufs_s, _, _), (rec_l, grads_l, bufs_l, _, _) = std, lean_run
    for (key, outs_s), (key_l, outs_l) in zip(rec_s.outputs, rec_l.outputs):
        if key != key_l or len(outs_s) != len(outs_l) or \
                not all(same_bits(a, b) for a, b in zip(outs_s, outs_l)):
            return key[0], "output"
    for key, _ in reversed(rec_s.outputs):  # the backward meets the last layers first
        i = 0
        while (key, i) in rec_s.grads or (key, i) in rec_l.grads:
            if not same_bits(rec_s.grads.get((key, i)), rec_l.grads.get((key, i))):
                return key[0], "output gradient"
            i += 1
    for name in reversed(list(grads_s)):
        if not same_bits(grads_s[name], grads_l.get(name)):
            return _owner(name), "parameter gradient"
    for name in bufs_s:
        if not same_bits(bufs_s[name], bufs_l.get(name)):
            return _owner(name), "buffer"
    return None


def verify_lean(model, batch, loss_fn, context=None):
    """One training step standard and lean, compared bitwise; everything restored after.

    model: an nn.Module (lean or not; it is left as it was). batch: the input tensor, or a
    tuple/list (input, *targets). loss_fn(output, *targets) -> a scalar tensor. context: a
    context-manager factory around the forward (e.g. autocast), or None. Returns a VerifyResult:
    true when outputs, every gradient and every buffer are bitwise equal; else it names the
    first layer that differs, or the error lean mode raised."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    context = context or contextlib.nullcontext
    was_lean = [m for m in model.modules() if is_lean(m)]  # the model, or some of its parts
    was_training = model.training
    rng = _rng_states()
    with torch.no_grad():
        params = [(p, p.detach().clone()) for p in model.parameters()]
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, p.grad) for p in model.parameters()]
    runs = []
    try:
        model.train()
        for mode in (False, True):
            for m in was_lean or [model]:
                lean(m, enabled=mode)
            with torch.enable_grad():
                runs.append(_run(model, batch, loss_fn, context, rng))
            _restore(params, buffers)
    finally:
        _restore(params, buffers)
        for p, g in grads:
            p.grad = g
        for m in was_lean or [model]:
            lean(m, enabled=bool(was_lean))
        model.train(was_training)
        _set_rng_states(rng)
    (_, _, _, err_s, _), (_, _, _, err_l, layer_l) = runs
    if err_s is not None:
        return VerifyResult(False, None, "standard error", err_s)
    if err_l is not None:
        return VerifyResult(False, layer_l, "error", err_l)
    diff = _first_difference(*runs)
    return VerifyResult(True) if diff is None else VerifyResult(False, *diff)


def _restore(params, buffers):
    with torch.no_grad():
        for t, saved in params + buffers:
            if t.shape == saved.shape and t.dtype == saved.dtype:
                t.copy_(saved)
            else:  # the step replaced or resized it: back to the saved tensor
                t.data = saved.clone()
