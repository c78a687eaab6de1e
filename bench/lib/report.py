"""Turns bench/run.sh's raw measurements into the Markdown report (stdout).

raw.tsv: workload, variant, rep, value, status ("ok" or why it failed), one line per run.
mem.tsv: the depsetfs variant, files walked, VmHWM kB, VmRSS kB, walk seconds, find exit status,
then VmRSS kB after the kernel forgot the inodes, VmHWM kB and VmRSS kB after a second walk (one
line per variant measured, or empty; lines without the variant, from before, are `depsetfs`).
"""

import argparse
import statistics
from collections import defaultdict

TITLES = {
    "python": "interpreter start-up (10 x python3 -c 'import ...')",
    "cc": "C compilation (gcc -O1 -c, generated files, many headers)",
    "find": "metadata walk (find -printf %s over /usr/share /usr/include)",
    "tar": "bulk read (tar cf - /usr/lib/x86_64-linux-gnu \\| cat)",
    "churn": "small-file churn (create+rename+unlink, then big write + fsync)",
    "nginx": "nginx static files to wrk, requests/s (higher is better)",
}
QUICK_TITLES = {
    "cc": "C compilation (gcc -O1 -c, 4 generated files)",
    "find": "metadata walk (find -printf %s over /usr/include)",
    "tar": "bulk read (tar cf - /usr/lib/gcc \\| cat)",
    "churn": "small-file churn (1000 files, 50 MB write + fsync)",
}


def main():
    ap = argparse.ArgumentParser()
    for opt in ("raw", "mem", "notes", "date", "machine", "reps", "quick", "variants",
                "workloads", "nginx-secs", "unavailable", "binary"):
        ap.add_argument("--" + opt, default="")
    a = ap.parse_args()
    quick = a.quick == "1"
    variants = a.variants.split()
    workloads = a.workloads.split()
    unavailable = dict(line.split("=", 1) for line in a.unavailable.splitlines() if "=" in line)

    values = defaultdict(list)
    failures = defaultdict(list)
    with open(a.raw) as f:
        for line in f:
            w, v, _rep, val, status = line.rstrip("\n").split("\t")
            if status == "ok":
                values[(w, v)].append(float(val))
            else:
                failures[(w, v)].append(status)

    out = []
    out.append(f"## Tracing overhead, {a.date}")
    out.append("")
    out.append(f"Machine: {a.machine}. depsetfs: {a.binary}. {a.reps} repetition(s), interleaved"
               f"{', --quick (smaller inputs)' if quick else ''}. Each cell: median, then the ratio "
               "to native (time workloads: variant / native, lower is better; nginx: variant "
               "requests/s / native, higher is better). Times are measured inside the chroot or "
               "tracer by the workload itself: mount, unmount, tracer start-up and log "
               "post-processing are not counted. The machine is shared; numbers are noisy.")
    out.append("")
    out.append("| workload | " + " | ".join(variants) + " |")
    out.append("|---|" + "---|" * len(variants))
    for w in workloads:
        title = (QUICK_TITLES.get(w) if quick else None) or TITLES.get(w, w)
        if w == "nginx":
            title = title.replace("wrk,", f"wrk ({a.nginx_secs} s),")
        native = values.get((w, "native"))
        base = statistics.median(native) if native else None
        cells = []
        for v in variants:
            vals = values.get((w, v))
            if v in unavailable:
                cells.append("n/a")
            elif not vals:
                why = "; ".join(sorted(set(failures.get((w, v), ["not run"]))))
                cells.append(f"failed ({why})")
            else:
                m = statistics.median(vals)
                unit = " req/s" if w == "nginx" else " s"
                txt = f"{m:.0f}{unit}" if w == "nginx" else f"{m:.3f}{unit}"
                if base and v != "native":
                    txt += f" ({m / base:.2f}x)"
                if failures.get((w, v)):
                    txt += f" [{len(failures[(w, v)])} failed]"
                cells.append(txt)
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    out.append("")

    mem_lines = [line.split() for line in open(a.mem)] if a.mem else []
    for mem in mem_lines:
        variant = "depsetfs"
        if mem and not mem[0].isdigit():
            variant, mem = mem[0], mem[1:]
        if len(mem) < 5:
            continue
        n, hwm, rss, secs, status = mem[:5]
        out.append(f"{variant} daemon memory while `find -printf '%s\\n'` walks {int(n):,} files "
                   f"(a stat of every file, so every file is looked up): VmHWM {int(hwm) / 1024:.0f} MiB, "
                   f"VmRSS at the end of the walk {int(rss) / 1024:.0f} MiB; the walk took {secs} s"
                   + ("." if status == "0" else f" and FAILED (find exit {status}, see the notes)."))
        if len(mem) == 8:
            forgot, hwm2, rss2 = (int(x) / 1024 for x in mem[5:])
            out.append(f"After the kernel forgot the walked inodes (drop_caches=2, FORGETs to the "
                       f"daemon): VmRSS {forgot:.0f} MiB. After a second walk of the same tree: "
                       f"VmHWM {hwm2:.0f} MiB, VmRSS {rss2:.0f} MiB.")
        out.append("")

    notes = [line.rstrip() for line in open(a.notes)] if a.notes else []
    if notes:
        out.append("Notes from this run:")
        out.append("")
        for line in notes:
            out.append(f"- {line}")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
