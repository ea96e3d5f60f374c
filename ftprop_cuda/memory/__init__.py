"""Lean memory mode: the same training step, keeping far less for the backward pass.

    model = ftprop_cuda.lean(model)          # one line, any model with Step/Staircase units
    print(ftprop_cuda.lean_report(model))    # after a training forward: what was made lean

Between a training forward and its backward, autograd keeps the tensors each layer saved. In a
hard-threshold network most of them are cheap to rebuild exactly, and lean mode rebuilds them in
the backward instead of keeping them (docs/spec.md, "Lean memory mode"):

* a unit's output, saved by the next layer (conv, linear, batch norm, pooling, ...), is rebuilt
  from the unit's kept z with the same kernel, or, where the unit keeps only a code, from a
  code of the output (2 bits for a step unit, ceil(log2(K + 2)) for a K-step staircase:
  each level, and NaN);
* a training-mode batch norm's output, kept by the unit after it (directly or through a
  residual add), is rebuilt from the batch norm's own kept input: in one pass from the batch
  statistics its backward keeps anyway (contiguous float32 CPU, after a bitwise probe against
  F.batch_norm), else by running the whole batch norm again;
* a 2-D max-pool keeps neither its input (its backward reads only the input's shape) nor int64
  indices: their window-local offsets, in 1, 2, 4 or 8 bits each (2 for a 2x2 window, 4 for 3x3);
  on a contiguous CPU input its forward makes the output and the offsets in one compiled pass
  (floor mode, no dilation, after a bitwise probe against ATen's max-pool).

Every rebuilt tensor is bitwise the one the standard path keeps, so the forward and every
gradient are bitwise identical. Anything lean mode does not recognise is kept as usual. It works
in eager mode; under torch.compile the compiler chooses what to keep, and it stands aside
(compile_lean gives the compiler an activation-memory budget instead).
Second derivatives (create_graph=True) through a rebuilt tensor raise: the rebuilt tensor has no
history to differentiate.

    codes.py    bit-plane packing; the level codes of unit outputs
    pool.py     max-pool indices as window offsets; the lean max-pool Function
    batch_norm.py  a batch norm's output in one pass from its kept statistics
    records.py  rebuildable entries, their sources, the tokens saved in place of tensors
    mode.py     the torch-function mode and saved-tensor hooks; lean_memory()
    hooks.py    lean(), is_lean(), lean_report()
    compile.py  compile_lean(), params_channels_last()
    verify.py   verify_lean(): one step standard and lean on a model, compared bitwise
"""
from .compile import LEAN_COMPILE_BUDGET, compile_lean, params_channels_last
from .hooks import is_lean, lean, lean_report
from .mode import lean_memory
from .verify import VerifyResult, verify_lean

lean.verify = verify_lean  # ftprop_cuda.lean.verify(model, batch, loss_fn)

__all__ = ["lean", "lean_memory", "lean_report", "is_lean", "compile_lean",
           "params_channels_last", "LEAN_COMPILE_BUDGET", "verify_lean", "VerifyResult"]
