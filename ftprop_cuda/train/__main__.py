"""python -m ftprop_cuda.train (and torchrun -m ftprop_cuda.train): ftprop-train."""
import sys

from .command import main

sys.exit(main())
