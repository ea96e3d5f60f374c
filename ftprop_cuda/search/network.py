"""The sign network: Linear -> Step(+-1) -> ... -> Linear, as numpy weights during the search and
as an ordinary nn.Module built from the package's Step units for the result.

weights is a list of (W, b) per layer, W of shape (n_out, n_in), float64. Hidden units are the
package's step (sign forward, sign(0) = -1); the output layer is linear and its units are read as
signs (one unit: a +-1 label; several: one-vs-rest +-1 targets, argmax for the class).
"""
import numpy as np

from .fit import hinge, sign


def init_weights(sizes, rng):
    """Gaussian weights with variance 1 / fan-in, zero biases, for layer widths sizes."""
    return [(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), np.zeros(n_out))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def _torch_step(z, rule, backend):
    from ..ops.functional import step

    return step(z, rule=rule, values="pm1", backend=backend)


def forward_outputs(X, weights, rule="soft_hinge", backend="auto"):
    """(hidden outputs as numpy +-1 arrays, output pre-activations) through the package's step."""
    import torch

    h = torch.from_numpy(np.asarray(X, dtype=np.float64))
    hidden = []
    with torch.no_grad():
        for k, (W, b) in enumerate(weights):
            z = h @ torch.from_numpy(W).T + torch.from_numpy(b)
            if k == len(weights) - 1:
                return hidden, z.numpy()
            h = _torch_step(z, rule, backend)
            hidden.append(h.numpy().copy())
    raise ValueError("weights must hold at least one layer")


def ftprop_targets(X, Y, weights, rule="soft_hinge", backend="auto"):
    """FTPROP-MB's targets for every hidden layer: t = -sign(g), g the gradient of the output
    layer's hinge loss sum max(0, 1 - y z) at the layer's outputs, by autograd through the
    package's step (whose backward propagates with rule). Where g = 0 the target is the unit's
    own output. Returns (targets, gradients), lists of numpy arrays, one per hidden layer.
    """
    import torch

    h = torch.from_numpy(np.asarray(X, dtype=np.float64))
    outs = []
    for k, (W, b) in enumerate(weights):
        z = h @ torch.from_numpy(W).T + torch.from_numpy(b)
        if k == len(weights) - 1:
            break
        if k == 0:
            z = z.detach().requires_grad_(True)  # the first layer's weights are not needed
        h = _torch_step(z, rule, backend)
        h.retain_grad()
        outs.append(h)
    if not outs:
        return [], []
    y = torch.from_numpy(np.asarray(Y, dtype=np.float64))
    torch.clamp(1 - y * z, min=0).sum().backward()
    targets, grads = [], []
    for h in outs:
        g = h.grad.numpy().copy()
        targets.append(np.where(g != 0, -np.sign(g), h.detach().numpy()))
        grads.append(g)
    return targets, grads


def output_loss(Y, z):
    """The output layer's hinge loss sum max(0, 1 - y z)."""
    return float(hinge(np.asarray(Y) * z).sum())


def build_model(weights, rule="soft_hinge", backend="auto", dtype=None):
    """The trained network as nn.Sequential(Linear, Step, ..., Linear) (float64 by default)."""
    import torch

    from ..ops.nn import Step

    dtype = torch.float64 if dtype is None else dtype
    layers = []
    for k, (W, b) in enumerate(weights):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(W)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b)))
        layers.append(lin)
        if k < len(weights) - 1:
            layers.append(Step(rule=rule, values="pm1", backend=backend))
    return torch.nn.Sequential(*layers).eval()


def model_outputs(model, X):
    """(hidden Step outputs, output pre-activations) of a model from build_model, as numpy."""
    import torch

    from ..ops.nn import Step

    p = next(model.parameters())
    h = torch.as_tensor(np.asarray(X), dtype=p.dtype)
    hidden = []
    with torch.no_grad():
        for module in model:
            h = module(h)
            if isinstance(module, Step):
                hidden.append(h.numpy().copy())
    return hidden, h.numpy()


def predict(z):
    """Labels from output pre-activations: +-1 for one unit, the argmax class for several."""
    z = np.asarray(z)
    return sign(z[:, 0]) if z.shape[1] == 1 else np.argmax(z, axis=1)
