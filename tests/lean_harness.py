"""Standard vs lean, bitwise: a model built twice from one seed, one run of a step each way.

    outcome = compare(build, step)      # build() -> nn.Module; step(model) -> tensors

step(model) runs a forward and a backward and returns what to compare (a tensor, or a tuple,
list or dict of them). compare() checks that either both runs succeed with bitwise-equal returned
tensors, every parameter's gradient and every buffer, or both raise the same exception class
(and, where `layer` is given, that lean's message names that layer). It returns the two
exceptions, or None, so a test can assert on the error it expects.
"""
import torch

import ftprop_cuda

from helpers import assert_same_bits


def twins(build, seed=0):
    """(standard model, lean model): build() run twice from the same seed."""
    torch.manual_seed(seed)
    standard = build()
    torch.manual_seed(seed)
    lean = ftprop_cuda.lean(build())
    return standard, lean


def run(model, step, seed):
    """(returned tensors, None) or (None, the exception) of one step from a fixed RNG state."""
    torch.manual_seed(seed)
    try:
        return step(model), None
    except Exception as exc:  # noqa: BLE001 - the outcome under comparison
        return None, exc


def _leaves(tree):
    if isinstance(tree, torch.Tensor) or tree is None:
        return [tree]
    if isinstance(tree, dict):
        return [v for k in sorted(tree) for v in _leaves(tree[k])]
    if isinstance(tree, (tuple, list)):
        return [v for item in tree for v in _leaves(item)]
    raise TypeError(f"step must return tensors (in tuples, lists, dicts); got {type(tree)}")


def assert_same_state(standard, lean):
    """Every gradient and every buffer bitwise equal (same names, same presence)."""
    params_s, params_l = dict(standard.named_parameters()), dict(lean.named_parameters())
    assert params_s.keys() == params_l.keys()
    for name, p in params_s.items():
        g_s, g_l = p.grad, params_l[name].grad
        assert (g_s is None) == (g_l is None), name
        if g_s is not None:
            assert_same_bits(g_l, g_s)
        assert_same_bits(params_l[name].detach(), p.detach())
    buffers_s, buffers_l = dict(standard.named_buffers()), dict(lean.named_buffers())
    assert buffers_s.keys() == buffers_l.keys()
    for name, b in buffers_s.items():
        if b.is_floating_point():
            assert_same_bits(buffers_l[name], b)
        else:
            assert torch.equal(buffers_l[name], b), name


def compare(build, step, seed=0, layer=None, models=None):
    """Standard vs lean: bitwise the same, or the same exception class (see the module doc).

    models: (standard, lean) to use instead of building them from build."""
    standard, lean = models if models is not None else twins(build, seed)
    out_s, err_s = run(standard, step, seed + 1)
    out_l, err_l = run(lean, step, seed + 1)
    if err_s is not None or err_l is not None:
        assert type(err_l) is type(err_s), f"standard: {err_s!r}\nlean: {err_l!r}"
        if layer is not None:
            assert layer in str(err_l), f"lean's error does not name {layer!r}: {err_l}"
        return err_s, err_l
    leaves_s, leaves_l = _leaves(out_s), _leaves(out_l)
    assert len(leaves_s) == len(leaves_l)
    for a, b in zip(leaves_l, leaves_s):
        assert (a is None) == (b is None)
        if a is not None:
            assert_same_bits(a, b)
    assert_same_state(standard, lean)
    return None


def backward_sum(out, *inputs):
    """Backward of out.sum(); returns out and the inputs' gradients for comparison."""
    out.float().sum().backward()
    return (out.detach(),) + tuple(x.grad for x in inputs)
