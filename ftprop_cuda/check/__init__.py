"""`python -m ftprop_cuda`: the install's info screen, self-test and short benchmark.

    info.py         versions, compiled architectures, CPU kernel level, GPUs and their coverage
    grids.py        docs/spec.md's boundary grids and the comparisons (bitwise, tolerances)
    results.py      one record per check; pass / fail / not run / skip; the exit status
    op_checks.py    a one-element call of every op, kernel = reference on the grids, layouts
    code_checks.py  codes made on a device decoded on the CPU and back
    model_checks.py lean = standard, autocast, no host syncs, CUDA graphs, a second GPU
    selftest.py     which checks run on which device
    bench.py        a short op benchmark against a plain copy
    cli.py          the command line
"""
