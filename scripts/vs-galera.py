#!/usr/bin/env python3
"""Issue 3's comparison with MariaDB Galera, in alternating pairs.

    scripts/vs-galera.py [--pairs 3] [--duration 20] [DIR]

Each pair runs Galera (../shared/bench/galera/bench.sh through
scripts/galera-cpu.py: 16 clients over three nodes, then one client on one
node) and quorate (scripts/bench-ab.py, one round of the build in DIR,
default target/release), every other pair in reverse order, and prints the
three ratios the issue sets targets for:

- throughput with 16 clients, quorate / Galera (target >= 2);
- p99 with 16 clients, quorate / Galera (target <= 0.5);
- one-client p50, quorate on its leader / Galera (target <= 1); the
  follower's is printed beside it.

This machine's speed changes from minute to minute, so a single pair
decides nothing: the summary gives the median of each ratio and in how many
pairs it met its target. Nothing else may run meanwhile (both systems use
both cores); the script stops any quorated or mariadbd it finds first.
"""
import argparse, os, re, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def stop_all():
    for name in ("quorated", "mariadbd"):
        subprocess.run(["pkill", "-9", "-x", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


def galera(seconds):
    out = run([sys.executable, f"{HERE}/galera-cpu.py", "--time", str(seconds)])
    m = re.search(r"results (\S+results\.md)", out)
    if not m:
        sys.exit(f"galera-cpu.py printed no results path:\n{out}")
    rows = {}
    with open(m.group(1)) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            # | config | case | ports | reps | TPS | avg | p50 | p95 | p99 | ...
            if len(cells) > 8 and cells[0] == "galera":
                rows[cells[1]] = {"tps": float(cells[4].split()[0]),
                                  "p50": float(cells[6].split()[0]),
                                  "p99": float(cells[8].split()[0])}
    try:
        many, one = rows["upd_nonidx_16t_3n"], rows["upd_nonidx_1t_1n"]
    except KeyError:
        sys.exit(f"{m.group(1)} lacks a case:\n{out}")
    return {"tps": many["tps"], "p99": many["p99"], "p50_1c": one["p50"]}


def quorate(bindir, seconds):
    out = run([sys.executable, f"{HERE}/bench-ab.py", "--rounds", "1",
               "--duration", str(seconds), bindir])
    m = re.search(r"clients\s+(\d+) tps .* p99\s+([\d.]+) .*leader ([\d.]+) follower ([\d.]+)",
                  out)
    if not m:
        sys.exit(f"bench-ab.py printed no result line:\n{out}")
    return {"tps": float(m.group(1)), "p99": float(m.group(2)),
            "p50_1c": float(m.group(3)), "p50_1c_follower": float(m.group(4))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default=os.path.join(ROOT, "target", "release"),
                    help="directory holding quorated and quorate")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=20, help="seconds of each measured run")
    args = ap.parse_args()
    for b in ("quorated", "quorate"):
        if not os.access(f"{args.dir}/{b}", os.X_OK):
            sys.exit(f"{args.dir}/{b}: not an executable (build with cargo build --release)")
    ratios = []
    print("| pair | Galera 16c tps / p99 ms | quorate 16c tps / p99 ms | Galera 1c p50 | "
          "quorate 1c p50 leader / follower | tps x (>= 2) | p99 x (<= 0.5) | 1c p50 x (<= 1) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in range(1, args.pairs + 1):
        order = ("galera", "quorate") if p % 2 else ("quorate", "galera")
        got = {}
        for who in order:
            stop_all()
            got[who] = galera(args.duration) if who == "galera" else quorate(args.dir, args.duration)
        stop_all()
        g, q = got["galera"], got["quorate"]
        r = (q["tps"] / g["tps"], q["p99"] / g["p99"], q["p50_1c"] / g["p50_1c"])
        ratios.append(r)
        print(f"| {p} ({order[0]} first) | {g['tps']:.0f} / {g['p99']:.1f} | "
              f"{q['tps']:.0f} / {q['p99']:.1f} | {g['p50_1c']:.2f} | "
              f"{q['p50_1c']:.2f} / {q['p50_1c_follower']:.2f} | "
              f"{r[0]:.2f} | {r[1]:.2f} | {r[2]:.2f} |", flush=True)
    met = (lambda x: x >= 2, lambda x: x <= 0.5, lambda x: x <= 1)
    names = ("throughput", "p99", "one-client p50")
    for i, name in enumerate(names):
        col = [r[i] for r in ratios]
        print(f"{name}: median ratio {statistics.median(col):.2f}, "
              f"target met in {sum(1 for x in col if met[i](x))} of {len(col)} pairs")


if __name__ == "__main__":
    main()
