"""One training step (forward, backward, optimizer) and its memory, kernel vs reference.

    python benchmarks/bench_train.py                       # default config for the device
    python benchmarks/bench_train.py --device cuda         # paper batch sizes (64/128/256)
    python benchmarks/bench_train.py --markdown docs/performance.md
    python benchmarks/bench_train.py --smoke --out /tmp/b  # tiny, for CI

The paper's networks on synthetic batches of the paper's shapes: convnet4 (CIFAR-10, 3x32x32,
batch 64 as in the paper's code), convnet8 (CIFAR-10, batch 128) and resnet18 (ImageNet,
3x224x224, batch 256 on GPU; a smaller default batch on CPU, stated in the output). Hidden units
are `nonlin` (default 'step', sign units with the soft-hinge rule). Variants: the model with
backend='reference', the same under torch.compile, backend='kernel' in the standard and the lean
memory mode (ftprop_cuda.lean; its gradients must equal the standard kernel path's bitwise), and
both compiled (inside torch.compile the units run as aten ops the compiler can fuse; the lean
one is compiled by ftprop_cuda.memory.compile_lean, with an activation-memory budget). The
variants are timed round by round, interleaved, one training step per sample.

Before timing, each variant runs forward+backward on the same batch from the same initial
weights (and dropout seed) and is compared with the eager reference model: eager variants must
match its loss to rounding and its gradients to 1e-3 relative L2 error; compiled variants get a
sanity check (loss within 10%, gradient norm within 2x), because reordered conv/BN arithmetic
flips a few near-zero hard-threshold units and deep nets' gradients then decorrelate (the ops'
own exactness under torch.compile is checked by bench_ops). A variant that fails is reported and
not timed (exit code 1).

Memory: on CUDA the peak of torch.cuda.max_memory_allocated during one step (and its rise above
the memory held at the step's start). On CPU two honest proxies: the bytes autograd saved for
backward in one step (unique storages packed by saved_tensors_hooks, parameters excluded), and the
rise of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) above its
resident set at the step's start -- a lower bound, since the allocator reuses memory it kept.
"""
import argparse
import contextlib
import os
import sys
import time
import traceback

# cuBLAS's deterministic mode (used by the checks below) needs a fixed workspace, read when its
# first handle is made: set before any CUDA work, for every variant alike.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import held_memory  # noqa: E402
from train_models import (CPU_BATCH, SHAPES, arch_bn, build, initial_state,  # noqa: E402
                          make_batch, make_train_step)
from train_report import markdown, mib, plot  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ftprop_cuda.ops import extension  # noqa: E402

VARIANTS, VARIANT_LABEL = common.VARIANTS, common.VARIANT_LABEL
# Checks against the eager reference model. Eager variants run the same conv/BN arithmetic and
# a bit-exact unit forward, so the loss must agree to rounding and the gradients to the units'
# backward tolerance. A compiled graph reorders conv/BN arithmetic: that flips a few near-zero
# pre-activations of the hard-threshold units, each flip moves the next layer, and in a deep net
# (resnet18, convnet8) the gradients decorrelate from eager although both are right. So compiled
# variants get a sanity check (finite, loss within 10%, gradient norm within 2x) and the measured
# gradient error is reported; the ops' exactness under torch.compile is bench_ops' check.
GRAD_TOL = {"eager": 1e-3}
LOSS_RTOL = {"eager": 1e-5, "compiled": 1e-1}
GRAD_NORM_RATIO = 2.0
CHECK_SEED = 1234  # the same dropout masks for every eager variant


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", default="convnet4,convnet8,resnet18")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batch", default=None, help="per-arch batch sizes, e.g. "
                   "'resnet18=32,convnet4=64', or one number for all (default: the paper's; "
                   f"on CPU {CPU_BATCH})")
    p.add_argument("--nonlin", default="step", help="hidden unit (ftprop_cuda.models.NONLINS)")
    p.add_argument("--rule", default="soft_hinge")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--min-time", type=float, default=None,
                   help="CPU: seconds of timed steps per measurement (default 2, smoke 0.05)")
    p.add_argument("--smoke", action="store_true",
                   help="convnet4, batch 4, eager variants only: for CI")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "results"))
    p.add_argument("--tag", default=None)
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write this run's section into PATH (e.g. docs/performance.md)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-held", action="store_true",
                   help="skip the held-for-backward measurement (a child process per variant)")
    bn = p.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_true", default=None,
                    help="batch norm in every network (default: as the paper, convnet4 without)")
    bn.add_argument("--no-bn", dest="bn", action="store_false")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: rewrite the Markdown/PNG (and --markdown section) of "
                   "an earlier run from its JSON")
    args = p.parse_args(argv)

    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if args.smoke:
        args.archs = "convnet4" if args.archs == p.get_default("archs") else args.archs
        if args.variants == p.get_default("variants"):
            args.variants = "ref,kernel,kernel_lean"
        args.batch = args.batch or "4"
    args.archs = common.parse_list(args.archs)
    args.variants = common.parse_list(args.variants)
    for name, values, accepted in (("archs", args.archs, tuple(SHAPES)),
                                   ("variants", args.variants, VARIANTS)):
        bad = [v for v in values if v not in accepted]
        if bad:
            raise SystemExit(f"--{name}: unknown {bad}; accepted: {', '.join(accepted)}")
    args.batch_sizes = _batch_sizes(args)
    if args.min_time is None:
        args.min_time = 0.05 if args.smoke else 2.0
    if args.tag is None:
        thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
        args.tag = args.device.type + ("_thp" if thp else "") + ("_smoke" if args.smoke else "")
    return args


def _batch_sizes(args):
    """arch -> batch: the paper's (smaller ImageNet batches on CPU), unless --batch says."""
    batch = {a: SHAPES[a][3] for a in args.archs}
    if args.device.type == "cpu":
        batch.update({a: b for a, b in CPU_BATCH.items() if a in batch})
    if args.batch:
        if "=" in args.batch:
            for item in common.parse_list(args.batch):
                a, b = item.split("=")
                batch[a.strip()] = int(b)
        else:
            batch = {a: int(args.batch) for a in args.archs}
    return batch


# ---------------------------------------------------------------------------------------------
# Memory probes
# ---------------------------------------------------------------------------------------------
def _proc_status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_memory(step, device):
    """Runs step() once; returns the memory figures of that step (bytes) and their labels."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_allocated_bytes": peak, "peak_rise_bytes": peak - before,
                "memory_kind": "torch.cuda.max_memory_allocated"}
    ok = _reset_peak_rss()
    rss0 = _proc_status_kib("VmRSS")
    step()
    hwm = _proc_status_kib("VmHWM")
    if not ok or hwm is None or rss0 is None:
        return {"peak_rss_bytes": None, "peak_rss_rise_bytes": None, "memory_kind": None}
    # VmHWM is updated lazily, so it can trail VmRSS read just after the reset by a few pages
    return {"peak_rss_bytes": hwm * 1024, "peak_rss_rise_bytes": max(0, hwm - rss0) * 1024,
            "memory_kind": "process VmHWM during the step (reset via /proc/self/clear_refs)"}


# ---------------------------------------------------------------------------------------------
# Checks against the reference, and the benchmark of one architecture
# ---------------------------------------------------------------------------------------------
def grads_of(model):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def compare(loss, grads, ref_loss, ref_grads, kind):
    """(problem or None, figures): loss relative difference and gradient relative L2 error."""
    dloss = abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(grads, ref_grads))
    den = sum(float(b.double().pow(2).sum()) for b in ref_grads)
    gerr = (num / max(den, 1e-300)) ** 0.5
    norm = sum(float(a.double().pow(2).sum()) for a in grads) ** 0.5
    ratio = norm / max(den ** 0.5, 1e-300)
    figs = {"loss_rel_diff": dloss, "grad_rel_l2_err": gerr, "grad_norm_ratio": ratio,
            "check": "match" if kind == "eager" else "sanity"}
    problems = []
    if not (dloss <= LOSS_RTOL[kind]):
        problems.append(f"loss {loss:.6g} vs reference {ref_loss:.6g} (rel diff {dloss:.2e} > "
                        f"{LOSS_RTOL[kind]:.0e})")
    if kind in GRAD_TOL and not (gerr <= GRAD_TOL[kind]):
        problems.append(f"gradient relative L2 error {gerr:.2e} > {GRAD_TOL[kind]:.0e}")
    if not (1 / GRAD_NORM_RATIO <= ratio <= GRAD_NORM_RATIO):
        problems.append(f"gradient norm {ratio:.3g}x the reference's (finite, within "
                        f"{GRAD_NORM_RATIO:g}x expected)")
    return "; ".join(problems) or None, figs


@contextlib.contextmanager
def deterministic(device):
    """The checks' flags: on CUDA, cuDNN's deterministic algorithms without autotuning and
    torch's deterministic implementations (warn_only: an op without one warns instead of
    raising), so that lean = kernel can be asked bitwise; restored afterwards, so the timings run
    with the usual flags. On the CPU the kernels are deterministic already."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def _first_step(fwd, model, x, y, device):
    t0 = time.perf_counter()
    torch.manual_seed(CHECK_SEED)
    loss = F.cross_entropy(fwd(x), y)
    loss.backward()
    common.synchronize(device)
    return float(loss.detach()), grads_of(model), time.perf_counter() - t0


def bench_arch(args, arch, failures, log):
    in_ch, size, classes, paper_batch, dataset = SHAPES[arch]
    batch = args.batch_sizes[arch]
    state = initial_state(arch, args)
    x, y = make_batch(arch, batch, args.device)
    rows, ready, ref_loss, ref_grads, kernel_grads = [], {}, None, None, None
    for variant in args.variants:  # build and check every variant first
        base = {"arch": arch, "dataset": dataset, "shape": [batch, in_ch, size, size],
                "batch": batch, "paper_batch": paper_batch, "variant": variant,
                "nonlin": args.nonlin, "rule": args.rule, "optimizer": args.optimizer,
                "bn": arch_bn(arch, args)}
        if variant.startswith("kernel") and args.device.type not in extension.KERNEL_DEVICES:
            why = f"no ftprop_cuda kernel for {args.device.type} ({extension.EXT_ERROR})"
            failures.append(f"{arch}/{variant}: unavailable: {why}")
            rows.append(dict(base, status="unavailable: " + why))
            continue
        log(f"{arch} batch {batch} {variant}: build and check")
        try:
            with deterministic(args.device):
                if ref_loss is None:  # the eager reference's loss and gradients: the yardstick
                    ref_model, _, _ = build(arch, "ref", args, state)
                    ref_loss, ref_grads, _ = _first_step(ref_model, ref_model, x, y, args.device)
                    del ref_model
                model, fwd, opt = build(arch, variant, args, state)
                loss, grads, first_call_s = _first_step(fwd, model, x, y, args.device)
            kind = "compiled" if variant.endswith("compiled") else "eager"
            problem, figs = compare(loss, grads, ref_loss, ref_grads, kind)
            if problem is None and variant in ("kernel", "kernel_lean"):
                # lean mode changes only memory: its gradients must equal the kernel's bitwise
                if kernel_grads is None:
                    kernel_grads = grads
                else:
                    figs["bitwise_vs_kernel"] = all(torch.equal(a, b)
                                                    for a, b in zip(grads, kernel_grads))
                    if not figs["bitwise_vs_kernel"]:
                        problem = "lean gradients differ from the standard kernel path's"
            del grads
        except Exception as exc:
            traceback.print_exc()
            problem, figs, first_call_s = f"raised {type(exc).__name__}: {exc}", {}, None
        if problem is not None:
            msg = f"CHECK FAILED {arch}/{variant}: {problem}"
            print("!" * 8 + " " + msg, file=sys.stderr, flush=True)
            failures.append(msg)
            rows.append(dict(base, status="CHECK FAILED: " + problem, **figs))
            continue

        ready[variant] = (model, make_train_step(fwd, opt, x, y))
        rows.append(dict(base, status="ok", first_call_s=first_call_s, **figs))
    _time_ready(args, arch, batch, rows, ready, log)
    return rows


def _time_ready(args, arch, batch, rows, ready, log):
    """Times the variants that passed their check, round by round, and adds their memory."""
    log(f"{arch}: timing {', '.join(ready)} round by round")
    times = common.time_interleaved({v: step for v, (_, step) in ready.items()}, args.device,
                                    args.min_time) if ready else {}
    for row in rows:
        v = row["variant"]
        if v not in ready:
            continue
        t = times[v]
        mem = peak_memory(ready[v][1], args.device)
        held = None
        if not args.no_held:
            try:
                held = held_memory.held_bytes(arch, v, args.nonlin, args.rule, batch,
                                              str(args.device), arch_bn(arch, args))["held_bytes"]
            except Exception as exc:
                log(f"  held-memory measurement failed: {exc}")
        row.update(median_s=t["median_s"], iqr_s=t["iqr_s"], timer=t.get("timer"),
                   blocks=t["blocks"], images_per_s=batch / t["median_s"],
                   held_bytes=held, **mem)
        log(f"  {v}: {t['median_s'] * 1e3:9.1f} ms/step  held {mib(held)} MiB  {mem}")
    ready.clear()


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:  # re-render the outputs of an earlier run, measuring nothing
        result = common.load_result(args.from_json)
        tag = result["config"].get("tag", args.tag)
        common.write_outputs(result, "bench_train", tag, args.out, markdown,
                             plot, args.markdown, args.no_plot)
        return common.report_failures("bench_train", result["failures"])
    try:
        import ftprop_cuda.models  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"bench_train needs ftprop_cuda.models.build_model: {exc}")
    start = time.perf_counter()
    common.raise_dynamo_limits()

    def log(msg):
        print(msg, flush=True)

    env = common.environment(args.device)
    log(common.env_markdown(env))
    config = {"device": str(args.device), "archs": args.archs, "variants": args.variants,
              "batch_sizes": args.batch_sizes, "nonlin": args.nonlin, "rule": args.rule,
              "optimizer": args.optimizer, "min_time": args.min_time, "smoke": args.smoke,
              "tag": args.tag}
    command = "python benchmarks/bench_train.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv)
    if os.environ.get("THP_MEM_ALLOC_ENABLE"):
        command = f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']} {command}"
    rows, failures = [], []

    def result_so_far():
        return {"benchmark": "bench_train", "command": command.strip(), "environment": env,
                "config": config, "failures": failures, "rows": rows,
                "elapsed_s": time.perf_counter() - start}

    for arch in args.archs:
        rows += bench_arch(args, arch, failures, log)
        common.snapshot(args.out, "bench_train", args.tag, result_so_far())
    common.finish_environment(env)
    result = result_so_far()

    common.write_outputs(result, "bench_train", args.tag, args.out, markdown, plot,
                         args.markdown, args.no_plot, log)
    return common.report_failures("bench_train", failures)


if __name__ == "__main__":
    sys.exit(main())
