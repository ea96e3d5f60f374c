"""How far apart two equal training steps time on this machine: separately built copies of
bench_train's variants, timed together.

    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_copies.py --arch resnet18 \
        --variants ref_compiled,kernel_lean_compiled --copies 2 --min-time 10

Each variant is built --copies times (same weights, same batch; every copy its own model,
optimizer and compiled code), and all copies are timed round by round in one process in a
shuffled order (bench_train's common.time_interleaved). The spread between copies of one variant
is the machine's noise for that measurement (memory placement, slow phases); a difference
between variants smaller than that spread is not a measured difference. Prints one line per
copy: median ms per step, the ratio to the first copy of the first variant, and the rounds.
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import train_models  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="convnet4", choices=tuple(train_models.SHAPES))
    p.add_argument("--variants", default="ref_compiled,kernel_compiled")
    p.add_argument("--copies", type=int, default=2)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--nonlin", default="step")
    p.add_argument("--rule", default="soft_hinge")
    p.add_argument("--min-time", type=float, default=8.0,
                   help="seconds of timed steps per copy (default 8)")
    args = p.parse_args(argv)
    variants = common.parse_list(args.variants)
    bad = [v for v in variants if v not in common.VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; accepted: {', '.join(common.VARIANTS)}")
    if args.copies < 1:
        p.error(f"--copies expects a positive integer, got {args.copies}")
    if args.min_time <= 0:
        p.error(f"--min-time expects a positive number, got {args.min_time}")

    device = torch.device("cpu")
    cfg = argparse.Namespace(nonlin=args.nonlin, rule=args.rule, bn=None, device=device,
                             optimizer="adam")
    batch = args.batch or train_models.CPU_BATCH.get(args.arch,
                                                     train_models.SHAPES[args.arch][3])
    state = train_models.initial_state(args.arch, cfg)
    x, y = train_models.make_batch(args.arch, batch, device)
    print(common.env_markdown(common.environment(device)), flush=True)
    print(f"{args.arch} batch {batch}, {args.nonlin}/{args.rule}: {args.copies} copies of "
          f"{', '.join(variants)}", flush=True)
    steps = {}
    for variant in variants:
        for c in range(1, args.copies + 1):
            _, fwd, opt = train_models.build(args.arch, variant, cfg, state)
            step = train_models.make_train_step(fwd, opt, x, y)
            step()  # compile (compiled variants) and allocate before timing
            steps[f"{variant} #{c}"] = step
    times = common.time_interleaved(steps, device, min_run_time=args.min_time)
    first = times[next(iter(steps))]["median_s"]
    for name, t in times.items():
        print(f"  {name:28s} {t['median_s'] * 1e3:9.1f} ms/step  x{t['median_s'] / first:.3f}"
              f"  ({t['blocks']} rounds)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
