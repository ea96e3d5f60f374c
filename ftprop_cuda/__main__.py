"""`python -m ftprop_cuda`: what this install is (versions, compiled architectures, GPUs);
`--check` runs the self-test, `--bench` a short benchmark, `--json` prints one JSON document
(ftprop_cuda/check/)."""
import sys

from ftprop_cuda.check.cli import main

if __name__ == "__main__":
    sys.exit(main())
