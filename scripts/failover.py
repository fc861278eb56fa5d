#!/usr/bin/env python3
"""Write pause seen by a client on a surviving node when one node of three is
SIGKILLed (the leader, or a follower), like ../shared/bench/galera/failover.sh.

    scripts/failover.py [--runs 5] [--victim leader|follower] [--bin target/release]

Each run starts a fresh local cluster (scripts/local-cluster.sh), writes
single-row INSERTs in a loop on a node that survives, kills the victim after
3 s, keeps writing for 10 s, and reports the longest gap between two
successful commits. Prints every run and the median; no write may be lost.
"""
import argparse, json, os, signal, statistics, subprocess, threading, time, urllib.request, urllib.error

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.environ.get("BASE", "/tmp/quorate-failover")


def post(port, body, timeout=15):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/db/execute", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except Exception as e:  # connection refused / timeout: outcome unknown
        return 0, {"error": str(e)}


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.loads(r.read())


def one_run(binary, victim_kind):
    env = dict(os.environ, BIN=binary, BASE=BASE, LOG_LEVEL="warn")
    subprocess.run([f"{HERE}/local-cluster.sh", "up", "3"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        post(4001, ["CREATE TABLE f(id INTEGER PRIMARY KEY, t REAL)"])
        leader = status(4001)["cluster"]["leader"]
        leader_i = int(leader.split("-")[1])
        if victim_kind == "leader":
            victim = leader_i
        else:
            victim = next(i for i in (1, 2, 3) if i != leader_i)
        writer = next(i for i in (1, 2, 3) if i != victim)
        oks, stop, nid = [], threading.Event(), [0]

        def write():
            while not stop.is_set():
                nid[0] += 1
                code, _ = post(4000 + writer, [["INSERT INTO f(id, t) VALUES(?, ?)", nid[0], time.time()]])
                if code == 200:
                    oks.append((time.monotonic(), nid[0]))

        th = threading.Thread(target=write)
        th.start()
        time.sleep(3)
        pid = int(open(f"{BASE}/node-{victim}/pid").read())
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        time.sleep(10)
        stop.set()
        th.join()
        times = [t for t, _ in oks]
        gaps = [b - a for a, b in zip(times, times[1:]) if b >= killed_at - 1]
        acked = {i for _, i in oks}
        rows = status(4000 + writer)  # still serving
        code, body = post(4000 + writer, ["SELECT 1"])
        req = urllib.request.Request(f"http://127.0.0.1:{4000 + writer}/db/query?level=linearizable",
                                     json.dumps(["SELECT id FROM f"]).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            present = {v[0] for v in json.loads(r.read())["results"][0].get("values", [])}
        lost = acked - present
        return max(gaps) if gaps else float("nan"), len(oks), len(lost), victim == leader_i
    finally:
        subprocess.run([f"{HERE}/local-cluster.sh", "down"], env=env, stdout=subprocess.DEVNULL)
        time.sleep(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--victim", choices=["leader", "follower"], default="leader")
    p.add_argument("--bin", default="target/release")
    a = p.parse_args()
    pauses = []
    for r in range(a.runs):
        pause, n, lost, was_leader = one_run(a.bin, a.victim)
        pauses.append(pause)
        print(f"run {r + 1}: killed {'leader' if was_leader else 'follower'}; longest write pause {pause:.3f} s; "
              f"{n} commits acknowledged, {lost} lost", flush=True)
        if lost:
            raise SystemExit("acknowledged writes were lost")
    print(f"median write pause after SIGKILL of the {a.victim}: {statistics.median(pauses):.3f} s over {a.runs} runs")


if __name__ == "__main__":
    main()
