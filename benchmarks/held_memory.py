"""Bytes a training forward leaves alive for the backward, measured the same way for every variant.

    python benchmarks/held_memory.py --arch convnet4 --nonlin step --rule soft_hinge \
        --variants ref,kernel,kernel_lean --batch 64 --no-bn

Each variant is measured in a fresh child process. On CPU the child reads the process's resident
set (VmRSS) before and after one training forward (the loss kept alive, its graph not yet run
backward) and reports the rise, after two warm-up steps; glibc is told to serve every allocation
of 64 KiB or more with its own mapping and to trim freed heap at once
(MALLOC_MMAP_THRESHOLD_=65536, MALLOC_TRIM_THRESHOLD_=0), so memory freed during the forward
leaves the resident set and what remains is what the graph keeps (parameters and the input batch
exist before and are not counted). On CUDA it reads torch.cuda.memory_allocated instead. The
median of three forwards is reported. Output: one JSON object per variant on stdout (or --json).
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_child(spec):
    """Runs in the child: builds the variant and returns its held bytes (median of three)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, HERE)
    import train_models  # the same models and batches as the training benchmark

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    args = argparse.Namespace(nonlin=spec["nonlin"], rule=spec["rule"], device=device,
                              optimizer="sgd", bn=spec.get("bn"))
    state = train_models.initial_state(spec["arch"], args)
    model, fwd, _ = train_models.build(spec["arch"], spec["variant"], args, state)
    x, y = train_models.make_batch(spec["arch"], spec["batch"], device)

    def forward():
        return F.cross_entropy(fwd(x), y)

    for _ in range(2):  # warm-up: lazy initialisation, compilation, the allocator's pools
        forward().backward()
        model.zero_grad(set_to_none=False)
    rises = []
    for _ in range(3):
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
        else:
            before = _rss_bytes()
        loss = forward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            rises.append(torch.cuda.memory_allocated(device) - before)
        else:
            rises.append(_rss_bytes() - before)
        loss.backward()
        del loss
        model.zero_grad(set_to_none=False)
    return {"held_bytes": int(statistics.median(rises)), "samples": rises,
            "method": "torch.cuda.memory_allocated rise" if device.type == "cuda" else
            "VmRSS rise (MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0)"}


def held_bytes(arch, variant, nonlin="step", rule="soft_hinge", batch=None, device="cpu",
               bn=None, timeout=900):
    """Runs one variant's measurement in a fresh process; returns its result dict."""
    spec = {"arch": arch, "variant": variant, "nonlin": nonlin, "rule": rule, "device": device,
            "batch": batch, "bn": bn}
    env = dict(os.environ, **MALLOC_ENV)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"held_memory child for {arch}/{variant} failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--arch", default="convnet4")
    p.add_argument("--variants", default="ref,kernel,kernel_lean")
    p.add_argument("--nonlin", default="step")
    p.add_argument("--rule", default="soft_hinge")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--device", default="cpu")
    bn = p.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_true", default=None)
    bn.add_argument("--no-bn", dest="bn", action="store_false")
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure_child(json.loads(args.child))))
        return 0
    for variant in args.variants.split(","):
        r = held_bytes(args.arch, variant, args.nonlin, args.rule, args.batch, args.device,
                       args.bn)
        print(json.dumps(dict(r, arch=args.arch, variant=variant,
                              held_mib=round(r["held_bytes"] / 2**20, 2))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
