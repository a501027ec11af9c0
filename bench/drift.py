"""Drift report speed and memory: evertrain against Evidently, NannyML, Alibi Detect and numpy.

    python bench/drift.py [--rows 1000000] [--tools evertrain,numpy,evidently,nannyml,alibi-detect]
    python bench/drift.py --whole 5    # whole processes, evertrain's CLI beside Alibi Detect

``--whole N`` times what a user waits for: a fresh process that starts, reads both
Parquet files, computes and writes its report, N rounds, the tools taking turns in each
round: ``evertrain drift REF CUR --json OUT``, the same with a reference profile saved
earlier by ``--save-profile``, and Alibi Detect's TabularDrift (KS + chi-square) in its
own environment. It writes the ``Drift from a cold start`` section of RESULTS.md.

On the generated scenario (:mod:`evertrain.monitor.scenario`: 20 clean columns and 5
drifted ones), writes the reference and current sets as Parquet, then runs each tool
in a process of its own, inside a virtual environment of its own (their pins conflict
with each other and with a current stack), and reports per tool: the median compute
time (loading not counted), the peak resident memory of the whole process (loading
included; from ``os.wait4``, like ``/usr/bin/time``), and the columns it flags against
the five that truly drifted. Results go to ``bench/.work/drift.json`` and a Markdown
table to standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
VENVS = HERE / ".venvs"
RUNNER = HERE / "drift_runners.py"

#: Each competitor's environment, pinned to what was measured (see docs/FIELD-NOTES).
ENVIRONMENTS: dict[str, list[str]] = {
    "evidently": ["evidently==0.7.23", "pandas<3", "pyarrow"],
    "nannyml": ["nannyml==0.13.1", "statsmodels", "pyarrow"],
    "alibi-detect": ["alibi-detect==0.13.0", "numpy<2", "pyarrow<20"],
}
PACKAGE = {"evidently": "evidently", "nannyml": "nannyml", "alibi-detect": "alibi-detect"}
QUIET_ENV = {
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "NML_DISABLE_USAGE_LOGGING": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
#: One tool's run may take this long before it is stopped (Evidently: ~150 s here).
TOOL_TIMEOUT_S = 1800


def environment(name: str) -> Path:
    """The Python of a tool's virtual environment, created on first use."""
    if name not in ENVIRONMENTS:
        return Path(sys.executable)
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *ENVIRONMENTS[name]],
            check=True,
        )
        marker.write_text(" ".join(ENVIRONMENTS[name]) + "\n")
    return python


def version_of(python: Path, package: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def run_tool(tool: str, python: Path, ref: Path, cur: Path, profile: Path) -> dict[str, Any]:
    """Run one tool in its own process; add the process's peak RSS to its result."""
    out = WORK / f"result-{tool}.json"
    out.unlink(missing_ok=True)
    log = (WORK / f"log-{tool}.txt").open("w")
    env = {**os.environ, **QUIET_ENV}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(python), str(RUNNER), tool, str(ref), str(cur), str(out), str(profile)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = t0 + TOOL_TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        tail = (WORK / f"log-{tool}.txt").read_text()[-2000:]
        return {"tool": tool, "error": f"exit {proc.returncode}: {tail}", "wall_s": wall}
    result = json.loads(out.read_text())
    # Other work on a shared machine slows every tool; the load says how busy it was.
    result.update(tool=tool, peak_rss_mb=usage.ru_maxrss / 1024, wall_s=wall, load_average=os.getloadavg()[0])
    return result


def run_process(command: list[str], log_name: str) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (children's user + system) and peak RSS (MB) of one process."""
    env = {**os.environ, **QUIET_ENV}
    with (WORK / log_name).open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # evertrain drift exits 1 when the data drifted
        raise SystemExit(f"{command[:4]} exited {code}: {(WORK / log_name).read_text()[-1500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def whole_process(rounds: int, ref: Path, cur: Path, rows: int) -> None:
    """Whole processes side by side, round after round; medians and same-round ratios."""
    import statistics

    from _results import replace_section

    from evertrain.monitor.scenario import DRIFTED

    alibi = environment("alibi-detect")
    evertrain_cli = [sys.executable, "-m", "evertrain", "drift"]
    profile = WORK / f"reference-{rows}.drift-profile.json"
    run_process(
        [
            *evertrain_cli,
            str(ref),
            str(cur),
            "--json",
            str(WORK / "whole-x.json"),
            "--save-profile",
            str(profile),
        ],
        "whole-save.txt",
    )
    commands = {
        "evertrain": [*evertrain_cli, str(ref), str(cur), "--json", str(WORK / "whole-evertrain.json")],
        "evertrain, stored reference profile": [
            *evertrain_cli,
            str(profile),
            str(cur),
            "--json",
            str(WORK / "whole-profile.json"),
        ],
        "Alibi Detect": [
            str(alibi),
            str(RUNNER),
            "alibi-detect",
            str(ref),
            str(cur),
            str(WORK / "whole-alibi.json"),
        ],
    }
    outputs = {
        "evertrain": WORK / "whole-evertrain.json",
        "evertrain, stored reference profile": WORK / "whole-profile.json",
        "Alibi Detect": WORK / "whole-alibi.json",
    }
    load_start = os.getloadavg()
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
    for r in range(rounds):
        for name, command in commands.items():
            print(f"round {r + 1}/{rounds}: {name} ...", file=sys.stderr, flush=True)
            times[name].append(run_process(command, "whole-log.txt"))
    load_end = os.getloadavg()
    truth = set(DRIFTED)
    flags = {}
    for name, out in outputs.items():
        data = json.loads(out.read_text())
        flagged = set(data.get("drifted_columns", data.get("flagged", [])))
        flags[name] = (len(flagged & truth), len(flagged - truth))
    med = {k: statistics.median(w for w, _, _ in v) for k, v in times.items()}
    alibi_walls = [w for w, _, _ in times["Alibi Detect"]]
    ratio = {
        k: statistics.median(a / w for a, (w, _, _) in zip(alibi_walls, v, strict=True))
        for k, v in times.items()
    }
    alibi_cpu = [c for _, c, _ in times["Alibi Detect"]]
    cpu_ratio = {
        k: statistics.median(a / c for a, (_, c, _) in zip(alibi_cpu, v, strict=True))
        for k, v in times.items()
    }
    (WORK / "whole.json").write_text(
        json.dumps({"times": times, "flags": flags, "load": [load_start, load_end]})
    )
    lines = [
        "## Drift from a cold start",
        "",
        f"`python bench/drift.py --whole {rounds}`: what a user waits for, each a fresh process that "
        f"starts, reads both Parquet files ({rows:,} x 25 each, the generated scenario of the "
        "Monitoring section), computes and writes its report; the tools take turns in each of "
        f"{rounds} rounds. Wall time from start to exit, median (min-max); *vs Alibi* is the median "
        "of the same-round ratios.",
        "",
        "| process | wall (median) | min-max | vs Alibi (wall) | CPU (median) | vs Alibi (CPU) | peak RSS "
        "| drifted flagged (of 5) | false flags (of 20) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    label = {
        "evertrain": "`evertrain drift REF.parquet CUR.parquet --json OUT`",
        "evertrain, stored reference profile": "`evertrain drift REF.json CUR.parquet --json OUT` "
        "(profile saved once by `--save-profile`)",
        "Alibi Detect": "Alibi Detect TabularDrift (KS + chi-square, Bonferroni), pandas read",
    }
    for name, v in times.items():
        walls = [w for w, _, _ in v]
        cpu = statistics.median(c for _, c, _ in v)
        rss = max(m for _, _, m in v)
        hits, false = flags[name]
        lines.append(
            f"| {label[name]} | {med[name]:.2f} s | {min(walls):.2f}-{max(walls):.2f} s | {ratio[name]:.1f}x "
            f"| {cpu:.2f} s | {cpu_ratio[name]:.1f}x | {rss:,.0f} MB | {hits} | {false} |"
        )
    import numpy
    import pyarrow

    import evertrain

    lines += [
        "",
        f"Targets: at least 5x Alibi Detect's whole process cold (measured {ratio['evertrain']:.1f}x in wall "
        f"time, {cpu_ratio['evertrain']:.1f}x in CPU time), 10x with a stored reference profile (measured "
        f"{ratio['evertrain, stored reference profile']:.1f}x in wall time, "
        f"{cpu_ratio['evertrain, stored reference profile']:.1f}x in CPU time); flags unchanged "
        "(5 of 5, none false). CPU time is user + system of the process and its threads "
        "(`os.wait4`): on a loaded machine it is the steadier figure.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work; load average "
        f"(1 min) {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end "
        f"(`uptime`; wall times include waiting for a core, CPU times do not). Python "
        f"{platform.python_version()}, evertrain {evertrain.__version__}, numpy {numpy.__version__}, "
        f"pyarrow {pyarrow.__version__}; Alibi Detect {version_of(alibi, 'alibi-detect')} in its own "
        f"environment; {time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
    ]
    replace_section("Drift from a cold start", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tools", default="evertrain,numpy,alibi-detect,nannyml,evidently")
    parser.add_argument(
        "--whole", type=int, default=0, metavar="ROUNDS", help="time whole processes against Alibi Detect"
    )
    args = parser.parse_args()

    from evertrain.monitor.scenario import DRIFTED, make_scenario

    WORK.mkdir(exist_ok=True)
    ref, cur = WORK / f"reference-{args.rows}.parquet", WORK / f"current-{args.rows}.parquet"
    if not (ref.exists() and cur.exists()):
        import pyarrow.parquet as pq

        pq.write_table(make_scenario(args.rows, seed=1, drifted=False), ref)
        pq.write_table(make_scenario(args.rows, seed=2, drifted=True), cur)
    profile = WORK / f"reference-{args.rows}.profile.json"
    if args.whole:
        whole_process(args.whole, ref, cur, args.rows)
        return

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    runs: list[str] = []
    for t in tools:
        runs += (
            ["evertrain", "evertrain-profile-build", "evertrain-with-profile"] if t == "evertrain" else [t]
        )
    results, versions = [], {}
    for tool in runs:
        python = environment(tool)
        if tool in PACKAGE:
            versions[tool] = version_of(python, PACKAGE[tool])
        print(f"running {tool} ...", file=sys.stderr, flush=True)
        results.append(run_tool(tool, python, ref, cur, profile))
    import numpy
    import pyarrow

    import evertrain

    versions.update(evertrain=evertrain.__version__, numpy=numpy.__version__, pyarrow=pyarrow.__version__)
    machine = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    summary = {"rows": args.rows, "columns": 25, "drifted": list(DRIFTED), "machine": machine}
    summary.update(versions=versions, results=results)
    (WORK / "drift.json").write_text(json.dumps(summary, indent=2))

    truth = set(DRIFTED)
    print(
        "| tool | wall time (median) | CPU time (median) | peak RSS | drifted flagged (of 5) | false flags |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['tool']} | failed: {r['error'].splitlines()[-1][:80]} | | | | |")
            continue
        flagged = set(r.get("flagged", []))
        hits, false = len(flagged & truth), sorted(flagged - truth)
        scored = r["tool"] not in ("numpy", "evertrain-profile-build")
        print(
            f"| {r['tool']} | {r['median_s']:.3f} s | {r.get('median_cpu_s', float('nan')):.3f} s | "
            f"{r['peak_rss_mb']:.0f} MB | "
            f"{hits if scored else '-'} | {(len(false) if scored else '-')} {', '.join(false[:6])} |"
        )
    print(json.dumps({"versions": versions, "machine": machine}))


if __name__ == "__main__":
    main()
