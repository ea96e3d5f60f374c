"""ftprop_cuda.reference: the reference's documented path, the very module
ftprop_cuda.ops.reference. New code imports ftprop_cuda.ops.reference."""
import sys

from .ops import reference

sys.modules[__name__] = reference
