"""python -m ftprop_cuda.train (and torchrun -m ftprop_cuda.train): ftprop-train."""
from .command import program

program()
