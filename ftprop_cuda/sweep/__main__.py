"""python -m ftprop_cuda.sweep: ftprop-sweep."""
import sys

from .cli import main

sys.exit(main())
