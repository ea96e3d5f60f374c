// Operator schemas of ftprop_cuda. Kernels live in cpu/ and cuda/; autograd and fake (meta)
// implementations are registered from Python (ftprop_cuda/_ops.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import ftprop_cuda._C` loads this shared library, which runs the TORCH_LIBRARY registrations
// below; the module itself is empty (the ops are reached through torch.ops.ftprop_cuda).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "ftprop_cuda operator library", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(ftprop_cuda, m) {
  // Forward passes. rule and grad_scale do not change the output; they are part of the schema so
  // that the autograd formula registered in Python knows which surrogate backward to run.
  m.def("step(Tensor z, str rule, bool zero_one, bool grad_scale) -> Tensor");
  m.def("staircase(Tensor z, int steps, float lo, float hi, str rule, bool grad_scale) -> Tensor");
  // Fused backward passes: target t = -sign(grad), the rule's slope and the weighting in one pass.
  m.def("_step_backward(Tensor grad, Tensor z, str rule, bool zero_one, bool grad_scale) -> Tensor");
  m.def(
      "_staircase_backward(Tensor grad, Tensor z, int steps, float lo, float hi, str rule, "
      "bool grad_scale) -> Tensor");
  // Forward passes that also return a compact code of z (bit-packed where the rule's slope only
  // depends on which interval z lies in, an 8-bit slope code for the smooth rules), so that the
  // backward needs neither z nor y; and the backward passes that read the code.
  m.def("_step_saved(Tensor z, str rule, bool zero_one, bool grad_scale) -> (Tensor, Tensor)");
  m.def(
      "_step_backward_saved(Tensor grad, Tensor state, str rule, bool zero_one, bool grad_scale) "
      "-> Tensor");
  m.def(
      "_staircase_saved(Tensor z, int steps, float lo, float hi, str rule, bool grad_scale) -> "
      "(Tensor, Tensor)");
  m.def(
      "_staircase_backward_saved(Tensor grad, Tensor state, int steps, float lo, float hi, "
      "str rule, bool grad_scale) -> Tensor");
  // Lean memory mode: a 2-D max-pool's int64 indices as window-local offsets of `bits` bits
  // (pool_offsets.h), and back.
  m.def(
      "_pool_offsets_pack(Tensor indices, int in_w, int[2] kernel, int[2] stride, int[2] padding, "
      "int[2] dilation, int bits) -> Tensor");
  m.def(
      "_pool_offsets_unpack(Tensor packed, int[] size, int in_w, int[2] kernel, int[2] stride, "
      "int[2] padding, int[2] dilation, int bits) -> Tensor");
  // A contiguous input's max-pool gradient from the packed offsets (CPU), bitwise ATen's from the
  // int64 indices.
  m.def(
      "_pool_offsets_backward(Tensor grad, Tensor packed, int[] input_size, int in_w, "
      "int[2] kernel, int[2] stride, int[2] padding, int[2] dilation, int bits) -> Tensor");
  // A contiguous CPU input's max-pool (floor mode) with its indices as packed offsets, made in
  // one pass: (output, packed), bitwise ATen's output and the offsets of ATen's indices.
  m.def(
      "_max_pool_offsets(Tensor input, int[2] kernel, int[2] stride, int[2] padding, "
      "int[2] dilation, int bits) -> (Tensor, Tensor)");
  // Lean memory mode: a training batch norm's output from its input and saved batch statistics,
  // in one pass (cpu/batch_norm.cpp; CPU float32, used after a bitwise probe).
  m.def(
      "_batch_norm_rebuild(Tensor input, Tensor mean, Tensor invstd, Tensor? weight, "
      "Tensor? bias) -> Tensor");
  // Lean memory mode: a unit's output as the index of its level (NaN: one past the last level),
  // in bit planes, and back (cpu/level_codes.cpp; CPU only: other devices use torch ops).
  m.def("_level_code_pack(Tensor y, Tensor levels) -> Tensor");
  m.def("_level_code_unpack(Tensor planes, Tensor table, int n) -> Tensor");
}
