"""ftprop_cuda.rules: the rule registry's documented path, the very module ftprop_cuda.ops.rules
(torch-free). New code imports ftprop_cuda.ops.rules."""
import sys

from .ops import rules

sys.modules[__name__] = rules
