"""bench_train's outputs: the Markdown section and the plot of a result."""
import common

VARIANTS, VARIANT_LABEL = common.VARIANTS, common.VARIANT_LABEL


def mib(b):
    """Bytes as MiB for a table ('–' for none)."""
    return "–" if b is None else f"{b / 2**20:.0f}" if b >= 2**24 else f"{b / 2**20:.1f}"


def _table(rows, cuda, width):
    """The rows of the Markdown table (times and memory also as ratios to the kernel's)."""
    kernel_rows = {r["arch"]: r for r in rows if r["variant"] == "kernel" and r["status"] == "ok"}

    def ratio(r, key):
        k = kernel_rows.get(r["arch"])
        if k is None or r.get(key) is None or not k.get(key):
            return "–"
        return f"{r[key] / k[key]:.2f}"

    table = []
    for r in rows:
        if r["status"] != "ok":
            table.append([r["arch"], "x".join(map(str, r["shape"])), VARIANT_LABEL[r["variant"]],
                          "**" + r["status"][:90] + "**"] + [""] * (width - 4))
            continue
        mem = ([mib(r["peak_allocated_bytes"]), mib(r["peak_rise_bytes"])] if cuda
               else [mib(r.get("peak_rss_bytes")),
                     mib(r.get("peak_rss_rise_bytes"))])
        check = r.get("check", "–")
        if r.get("bitwise_vs_kernel"):
            check += ", bitwise = kernel"
        table.append([r["arch"], "x".join(map(str, r["shape"])), VARIANT_LABEL[r["variant"]],
                      common.fmt_ms(r["median_s"]), ratio(r, "median_s"),
                      f"{r['images_per_s']:.1f}", f"{r['first_call_s']:.1f}",
                      mib(r.get("held_bytes")), ratio(r, "held_bytes")] + mem
                     + [check, f"{r['loss_rel_diff']:.1e}", f"{r['grad_rel_l2_err']:.1e}"])
    return table


def markdown(result, plot_rel=None):
    env, cfg, rows = result["environment"], result["config"], result["rows"]
    cuda = env["device"].startswith("cuda")
    thp = env["THP_MEM_ALLOC_ENABLE"]
    out = [f"### bench_train: {env['device_name']} ({env['device']}), "
           f"THP_MEM_ALLOC_ENABLE={thp if thp is not None else 'unset'}", "",
           common.env_markdown(env)]
    warning = common.load_warning(env)
    if warning:
        out += ["", warning]
    if common.partial_note(result):
        out += ["", common.partial_note(result)]
    small = [f"{r['arch']} batch {r['batch']} (paper: {r['paper_batch']})" for r in rows
             if r["batch"] != r["paper_batch"] and r["variant"] == cfg["variants"][0]]
    out += ["", f"Command: `{result['command']}` ({result['elapsed_s']:.0f} s). One training "
            f"step = zero_grad, forward, cross-entropy, backward, {cfg['optimizer']} step, on a "
            f"synthetic batch; hidden units nonlin='{cfg['nonlin']}', rule='{cfg['rule']}'. "
            "Median step time. The check columns compare one forward+backward with the eager "
            "reference model from the same weights and dropout seed: eager variants must match "
            "(loss to 1e-5, gradients to 1e-3 relative L2); compiled variants only get a sanity "
            "check (loss within 10%, gradient norm within 2x) because reordered conv/BN "
            "arithmetic flips near-zero hard-threshold units and a deep net's gradients then "
            "decorrelate (bench_ops checks the ops themselves under torch.compile)."]
    if small:
        out += ["", "**Batch sizes below the paper's on this device:** " + "; ".join(small) + "."]
    if result["failures"]:
        out += ["", "**FAILURES (not timed):**", ""] + [f"- {f}" for f in result["failures"]]
    if cuda:
        mem_head = ["peak allocated MiB", "rise in step MiB"]
    else:
        mem_head = ["process peak RSS in step MiB", "RSS rise in step MiB"]
    headers = (["arch", "input", "variant", "ms/step", "vs kernel", "images/s", "first call s",
                "held for backward MiB", "vs kernel"] + mem_head
               + ["check", "loss rel diff", "grad rel err"])
    out += ["", common.md_table(headers, _table(rows, cuda, len(headers)))]
    if not cuda:
        out += ["", "CPU memory columns: *held for backward* is what one training forward "
                "leaves alive for the backward, measured the same way for every variant by "
                "benchmarks/held_memory.py in a fresh process: the rise of the resident set over "
                "the forward, with glibc returning freed memory at once "
                "(MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0; parameters and the "
                "input batch excluded; median of three). *Process peak RSS* is the whole "
                "process's resident-set high-water mark during one step (VmHWM, reset through "
                "/proc/self/clear_refs just before it: torch's own ~0.5-1 GB, compiled code and "
                "memory the allocator kept from earlier steps included); *RSS rise* is that peak "
                "minus the RSS at the step's start, a lower bound of the step's footprint, often "
                "0 because glibc reuses memory kept from earlier steps."]
    if plot_rel:
        out += ["", f"![bench_train plot]({plot_rel})"]
    return "\n".join(out) + "\n"


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env, cfg, rows = result["environment"], result["config"], result["rows"]
    cuda = env["device"].startswith("cuda")
    archs = cfg["archs"]
    mem_key = "held_bytes"
    mem_label = "held for backward MiB"
    fig, axes = plt.subplots(2, len(archs), squeeze=False,
                             figsize=(max(8.0, 3.6 * len(archs)), 6.6))
    colors = {"ref": "tab:gray", "ref_compiled": "tab:blue", "kernel": "tab:red",
              "kernel_lean": "tab:green", "kernel_compiled": "tab:orange",
              "kernel_lean_compiled": "tab:olive"}
    for j, arch in enumerate(archs):
        sel = {r["variant"]: r for r in rows if r["arch"] == arch}
        names = [v for v in VARIANTS if v in sel]
        for i, (key, scale, label) in enumerate((("median_s", 1e3, "ms / training step"),
                                                 (mem_key, 1 / 2**20, mem_label))):
            ax = axes[i][j]
            vals = [sel[v].get(key) if sel[v]["status"] == "ok" else None for v in names]
            heights = [0 if v is None else v * scale for v in vals]
            bars = ax.bar(range(len(names)), heights, color=[colors[v] for v in names])
            for b, v in zip(bars, vals):
                ax.annotate("FAILED" if v is None else f"{v * scale:.3g}" if v * scale < 1000
                            else f"{v * scale:.0f}",
                            (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=8, color="red" if v is None else "black")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([VARIANT_LABEL[v].replace(" ", "\n", 1) for v in names],
                               fontsize=8)
            ax.set_ylabel(label)
            ax.margins(y=0.15)
            if i == 0:
                r0 = next(iter(sel.values()))
                ax.set_title(f"{arch}, batch {r0['batch']} x {r0['shape'][2]}px", fontsize=10)
    thp = env["THP_MEM_ALLOC_ENABLE"]
    fig.suptitle(f"ftprop_cuda training step\n{env['device_name']} ({env['device']}), "
                 f"torch {env['torch']}, THP_MEM_ALLOC_ENABLE="
                 f"{thp if thp is not None else 'unset'}, {env['date_utc']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
