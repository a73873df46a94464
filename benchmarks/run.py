"""Issue 5, "Performance at scale": the orchestrator against the physical limit, and a baseline.

With C slots, a create rate R (tasks/s) and tasks taking D seconds, N tasks cannot finish faster
than about ``max(N/R, N*D/C) + D``. This starts the simulator (its own process) with chosen C, R
and task-time distribution, runs ``python -m orchestrator run`` (its own process) on a generated
manifest of N text2video items, and prints: wall time, the bound and their ratio; CPU seconds
per 1000 tasks; peak RSS; HTTP requests per task; the delay between a task ending on the server
and the orchestrator noticing it. In the same invocation, on a fresh simulator with the same
settings, it runs the seed documents' approach (benchmarks/baseline.py) for comparison.

    python -m benchmarks.run --scenario all          # every scenario and every target
    python -m benchmarks.run --scenario target-2000
    python -m benchmarks.run --scenario validate-100k
    python -m benchmarks.run --n 500 --concurrency 50 --duration-min 1 --duration-max 3

docs/performance.md says what each figure means and what was measured.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks import hotspots
from benchmarks.procs import SimProcess, Usage, child_env, run_measured, use_code
from benchmarks.scenarios import ALL, SCENARIOS, VALIDATE_SCENARIO, Scenario

#: What the manifest says when the scenario has no rate limit: one create per 0.1 ms, far above
#: what the simulator can answer, so the limiter never waits. The bound then takes N/R as 0.
UNLIMITED_RPM = 600_000.0
#: A baseline run is cut to this many seconds (estimated), then extrapolated to N.
BASELINE_BUDGET = 90.0


# -- manifests ------------------------------------------------------------------------------------


def manifest_doc(
    scenario: Scenario, base_url: str, *, download: bool, items: list[dict[str, Any]] | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "name": "bench-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in scenario.name),
        "provider": {"name": "kling", "base_url": base_url, "timeout": 30},
        "limits": {
            "concurrency": scenario.concurrency,
            "requests_per_minute": scenario.rpm if scenario.rpm is not None else UNLIMITED_RPM,
        },
        "poll": {
            "interval": scenario.poll_interval,
            "max_interval": scenario.poll_max_interval,
            "timeout": scenario.poll_timeout,
        },
        "output": {"dir": "out", "download": download},
        "defaults": {
            "kind": "text2video",
            "model": "kling-v2-5-turbo",
            "mode": "std",
            "duration": 5,
            "aspect_ratio": "16:9",
        },
    }
    if items is not None:
        doc["items"] = items
    return doc


def generated_items(n: int) -> list[dict[str, Any]]:
    width = max(6, len(str(n)))
    return [
        {
            "id": f"item-{i:0{width}d}",
            "prompt": f"Benchmark shot {i}: aerial drone glide over misty ridges at sunrise",
        }
        for i in range(1, n + 1)
    ]


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# -- figures --------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "mean": statistics.fmean(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1],
    }


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class LogFigures:
    """What the benchmark reads from a run's JSON log, kept small: a 100,000-task log parsed
    whole would take ~800 MB here, and a child's ru_maxrss counts the parent it forked from."""

    #: (task id, time noticed) per item verdict
    noticed: list[tuple[str, float]]
    #: batch.started / batch.finished times
    stamps: dict[str, float]
    events: int


_VERDICTS = ("item.succeeded", "item.partial", "item.failed")


def read_report_totals(path: Path) -> dict[str, Any]:
    """report.json without its items (100,000 of them parsed would take ~300 MB here): the
    orchestrator writes the list between a line ``  "items": [`` and a line ``  ]``."""
    if not path.exists():
        return {}
    kept: list[str] = []
    with path.open(encoding="utf-8") as fh:
        inside = False
        for line in fh:
            if inside:
                if line.rstrip("\n") in ("  ]", "  ],"):
                    inside = False
                    kept.append("  []" + line.rstrip("\n")[3:] + "\n")
                continue
            if line.startswith('  "items": ['):
                if line.rstrip().endswith("]") or line.rstrip().endswith("],"):
                    kept.append(line)  # an empty list on one line
                else:
                    inside = True
                    kept.append('  "items":\n')
                continue
            kept.append(line)
    data: dict[str, Any] = json.loads("".join(kept))
    return data


def read_log(out_dir: Path) -> LogFigures:
    figures = LogFigures([], {}, 0)
    for path in sorted((out_dir / "logs").glob("run-*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                figures.events += 1
                event = json.loads(line)
                name = event.get("event")
                if name in _VERDICTS and "task_id" in event:
                    figures.noticed.append(
                        (str(event["task_id"]), _epoch(str(event["timestamp"])))
                    )
                elif name in ("batch.started", "batch.finished"):
                    figures.stamps[name] = _epoch(str(event["timestamp"]))
    return figures


def notice_delays(
    noticed: Iterable[tuple[str, float]], finished: dict[str, float]
) -> tuple[list[float], int]:
    """Seconds from each task's end on the server to the client noticing it; and how many
    tasks had no server finish time to compare with."""
    delays: list[float] = []
    missing = 0
    for task_id, at in noticed:
        ended = finished.get(task_id)
        if ended is None:
            missing += 1
        else:
            delays.append(at - ended)
    return delays, missing


def per_task(count: int, n: int) -> float:
    return count / n if n else float("nan")


def sim_requests(stats: dict[str, Any], n: int) -> dict[str, float]:
    return {
        "creates": per_task(int(stats["create_requests"]), n),
        "queries": per_task(int(stats["query_requests"]), n),
        "lists": per_task(int(stats["list_requests"]), n),
        "assets": per_task(int(stats["asset_requests"]), n),
        "total_api": per_task(
            int(stats["create_requests"]) + int(stats["query_requests"])
            + int(stats["list_requests"]),
            n,
        ),
    }


def rss_while_running(samples: Sequence[int]) -> dict[str, float | None]:
    """RSS at a quarter, half and three quarters of the run: steady when items are streamed
    rather than all held (a growing figure is memory per finished item)."""
    if len(samples) < 4:
        return {"rss_q1_mb": None, "rss_q2_mb": None, "rss_q3_mb": None}
    return {
        f"rss_q{q}_mb": samples[len(samples) * q // 4] / 1e6 for q in (1, 2, 3)
    }


def usage_figures(usage: Usage, n: int) -> dict[str, Any]:
    return {
        "wall_s": usage.wall,
        "cpu_s": usage.cpu,
        "cpu_user_s": usage.user,
        "cpu_system_s": usage.system,
        "cpu_s_per_1000": usage.cpu / n * 1000 if n else None,
        "peak_rss_mb": usage.max_rss / 1e6,
        **rss_while_running(usage.rss_samples),
        "returncode": usage.returncode,
        "timed_out": usage.timed_out,
    }


# -- one orchestrator run -------------------------------------------------------------------------


def run_orchestrator(
    scenario: Scenario,
    workdir: Path,
    *,
    download: bool,
    profile: str | None,
    log: Any,
    whatif: str | None = None,
    extra_args: Sequence[str] = (),
    tag: str = "",
) -> dict[str, Any]:
    """One run of the orchestrator on the scenario; ``extra_args`` go to ``run`` (e.g. a
    ``--state`` URL) and ``tag`` into the label."""
    label = "orchestrator" + tag + ("+downloads" if download else "")
    if whatif:
        label += f"[whatif {whatif}]"
    work = workdir / label
    work.mkdir(parents=True, exist_ok=True)
    creates_per_second = None if scenario.rpm is None else scenario.rpm / 60.0
    with SimProcess(
        slots=scenario.slots,
        duration=scenario.duration,
        creates_per_second=creates_per_second,
        seed=scenario.seed,
        log=work / "simulator.stderr",
    ) as sim:
        manifest = write_yaml(
            work / "manifest.yaml",
            manifest_doc(scenario, sim.url, download=download, items=generated_items(scenario.n)),
        )
        env = child_env({"KLING_ACCESS_KEY": sim.access_key, "KLING_SECRET_KEY": sim.secret_key})
        # Imports and manifest parsing alone, on the same manifest: the fixed part of the cost.
        startup = run_measured(
            [sys.executable, "-m", "orchestrator", "validate", str(manifest)],
            env=env,
            cwd=work,
            timeout=120,
            stdout=work / "validate.stdout",
            stderr=work / "validate.stderr",
        )
        module = "orchestrator"
        if whatif:
            # Experimental in-memory patches (benchmarks/whatif.py): not the orchestrator as is.
            module = "benchmarks.whatif"
            env["BENCH_WHATIF"] = whatif
        argv = [sys.executable, "-m", module, "run", str(manifest), "--no-progress",
                *extra_args]
        if profile in ("py-spy", "py-spy-gil"):
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            # py-spy-gil: only the thread holding the GIL (Python's own CPU, no waits in
            # fsync or sleeps of worker threads)
            gil = ["--gil"] if profile == "py-spy-gil" else []
            argv = [spy, "record", "--format", "raw", "--rate", "100", *gil,
                    "-o", str(work / "profile.py-spy.txt"), "--", *argv]
        elif profile == "pyinstrument":
            argv = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all",
                    "-o", str(work / "profile.pyinstrument.txt"), "-m", module, *argv[3:]]
        timeout = max(180.0, 4 * scenario.bound() + 120)
        log(f"[{label}] running {scenario.n} items (timeout {timeout:.0f} s) ...")
        usage = run_measured(
            argv, env=env, cwd=work, timeout=timeout,
            stdout=work / "run.stdout", stderr=work / "run.stderr",
        )
        stats = sim.stats()
        finished = sim.finish_times()
    assert sim.usage is not None
    if usage.returncode != 0:
        tail = (work / "run.stderr").read_text(errors="replace")[-1500:]
        log(f"[{label}] exit code {usage.returncode}; end of its stderr:\n{tail}")

    out = work / "out"
    logged = read_log(out)
    report = read_report_totals(out / "report.json")
    delays, missing = notice_delays(logged.noticed, finished)
    stamps = logged.stamps
    engine_wall = (
        stamps["batch.finished"] - stamps["batch.started"]
        if "batch.started" in stamps and "batch.finished" in stamps
        else None
    )
    bound = scenario.bound()
    result: dict[str, Any] = {
        "label": label,
        "download": download,
        "profile": profile,
        **usage_figures(usage, scenario.n),
        "bound_s": bound,
        "ratio": usage.wall / bound,
        "engine_wall_s": engine_wall,
        "engine_ratio": engine_wall / bound if engine_wall is not None else None,
        "startup_cpu_s": startup.cpu,
        "startup_wall_s": startup.wall,
        "startup_rss_mb": startup.max_rss / 1e6,
        "counts": report.get("counts"),
        "client_requests": report.get("requests"),
        "client_requests_per_task": {
            k: per_task(int(v), scenario.n) for k, v in (report.get("requests") or {}).items()
        },
        "retries": report.get("retries"),
        "requests_per_task": sim_requests(stats, scenario.n),
        "tasks_created": stats["tasks_created"],
        "create_answers": stats.get("create_answers"),
        "peak_slots": stats["peak_slots"],
        "notice_delay_s": percentiles(delays),
        "notice_delay_unmatched": missing,
        "log_events": logged.events,
        "simulator_cpu_s": sim.usage.cpu,
        "workdir": str(work),
    }
    return result


# -- the baseline ---------------------------------------------------------------------------------


def baseline_sample(scenario: Scenario) -> int:
    if scenario.baseline_n:
        return min(scenario.n, scenario.baseline_n)
    # Each item takes about D plus half a poll sleep; stay within the budget.
    per_item = scenario.duration_mean + scenario.poll_interval
    return max(2, min(scenario.n, int(BASELINE_BUDGET / per_item)))


def run_baseline(scenario: Scenario, workdir: Path, *, log: Any) -> dict[str, Any]:
    work = workdir / "baseline"
    work.mkdir(parents=True, exist_ok=True)
    sample = baseline_sample(scenario)
    creates_per_second = None if scenario.rpm is None else scenario.rpm / 60.0
    with SimProcess(
        slots=scenario.slots,
        duration=scenario.duration,
        creates_per_second=creates_per_second,
        seed=scenario.seed,
        log=work / "simulator.stderr",
    ) as sim:
        out_json = work / "baseline.json"
        per_item = scenario.duration[1] + scenario.poll_interval + 1
        timeout = 60 + 3 * sample * per_item
        log(f"[baseline] running {sample} of {scenario.n} items serially "
            f"(poll sleep {scenario.poll_interval:g} s, timeout {timeout:.0f} s) ...")
        usage = run_measured(
            [
                sys.executable, "-m", "benchmarks.baseline",
                "--url", sim.url,
                "--access-key", sim.access_key,
                "--secret-key", sim.secret_key,
                "--n", str(sample),
                "--poll-sleep", repr(scenario.poll_interval),
                "--json-out", str(out_json),
            ],
            env=child_env(),
            cwd=work,
            timeout=timeout,
            stdout=work / "baseline.stdout",
            stderr=work / "baseline.stderr",
        )
        stats = sim.stats()
        finished = sim.finish_times()
    assert sim.usage is not None
    data: dict[str, Any] = json.loads(out_json.read_text()) if out_json.exists() else {}
    tasks: list[dict[str, Any]] = data.get("tasks", [])
    noticed = [(str(t["task_id"]), float(t["noticed_at"])) for t in tasks if t["noticed_at"]]
    delays, missing = notice_delays(noticed, finished)
    loop = float(data["finished_at"]) - float(data["started_at"]) if data else float("nan")
    fixed = usage.wall - loop  # interpreter start-up and imports, paid once
    extrapolated = fixed + loop / sample * scenario.n
    bound = scenario.bound()
    return {
        "label": "baseline",
        "sample": sample,
        **usage_figures(usage, sample),
        "loop_wall_s": loop,
        "extrapolated_wall_s": extrapolated,
        "bound_s": bound,
        "ratio": extrapolated / bound,
        "counts": {"succeeded": sum(1 for t in tasks if t["status"] == "succeed")},
        "retries": data.get("retries"),
        "requests_per_task": sim_requests(stats, sample),
        "tasks_created": stats["tasks_created"],
        "peak_slots": stats["peak_slots"],
        "notice_delay_s": percentiles(delays),
        "notice_delay_unmatched": missing,
        "simulator_cpu_s": sim.usage.cpu,
        "workdir": str(work),
    }


# -- validation at scale --------------------------------------------------------------------------


def run_validate_scale(n: int, workdir: Path, *, log: Any) -> dict[str, Any]:
    """`python -m orchestrator validate` on N inline YAML items, and on N rows of a CSV."""
    scenario = Scenario(
        name=f"validate-{n}", description="", n=n, concurrency=200, rpm=None,
        duration=(1.0, 2.0), poll_interval=0.5, poll_max_interval=2.0,
    )
    # Validation sends nothing; the URL only has to be acceptable (http is allowed on loopback).
    base_url = "http://127.0.0.1:9"
    env = child_env({"KLING_ACCESS_KEY": "bench-access-key", "KLING_SECRET_KEY": "bench-secret"})
    items = generated_items(n)
    results: dict[str, Any] = {"label": "validate", "n": n}

    inline = write_yaml(
        workdir / "inline" / "manifest.yaml",
        manifest_doc(scenario, base_url, download=False, items=items),
    )
    csv_dir = workdir / "csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    with (csv_dir / "prompts.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt"])
        writer.writerows((item["id"], item["prompt"]) for item in items)
    doc = manifest_doc(scenario, base_url, download=False, items=None)
    doc["items_from"] = {"path": "prompts.csv"}
    from_csv = write_yaml(csv_dir / "manifest.yaml", doc)

    for name, path in (("inline_yaml", inline), ("items_from_csv", from_csv)):
        log(f"[validate] {n} items, {name} ({path.stat().st_size / 1e6:.1f} MB manifest"
            + (f" + {(csv_dir / 'prompts.csv').stat().st_size / 1e6:.1f} MB CSV)"
               if name == "items_from_csv" else ")") + " ...")
        usage = run_measured(
            [sys.executable, "-m", "orchestrator", "validate", str(path)],
            env=env,
            cwd=path.parent,
            timeout=600,
            stdout=path.parent / "validate.stdout",
            stderr=path.parent / "validate.stderr",
        )
        results[name] = {
            **usage_figures(usage, n),
            "ok": usage.returncode == 0,
            "stdout": (path.parent / "validate.stdout").read_text()[-300:].strip(),
            "stderr": (path.parent / "validate.stderr").read_text()[-300:].strip(),
        }
    return results


# -- output ---------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("  [met]" if ok else "  [NOT met]")


def render_table(scenario: Scenario, runs: list[dict[str, Any]]) -> str:
    rate = "unlimited" if scenario.rpm is None else f"{scenario.rpm:g}/min"
    lines = [
        f"scenario {scenario.name}: {scenario.description}",
        f"N={scenario.n}  C={scenario.concurrency}"
        + (f" (the account: {scenario.account_slots})" if scenario.account_slots else "")
        + f"  R={rate}  "
        f"D=U({scenario.duration[0]:g},{scenario.duration[1]:g}) s (mean "
        f"{scenario.duration_mean:g})  poll={scenario.poll_interval:g}->"
        f"{scenario.poll_max_interval:g} s (x1.5)  bound=max(N/R, N*D/C)+D="
        f"{scenario.bound():.2f} s",
        "",
    ]
    headers = [r["label"] + (f" (n={r['sample']}, x{scenario.n / r['sample']:.0f})"
                             if r["label"] == "baseline" else "") for r in runs]

    def wall(r: dict[str, Any]) -> Any:
        return r.get("extrapolated_wall_s", r["wall_s"])

    def rq(key: str) -> Any:
        return lambda r: r["requests_per_task"][key]

    def nd(key: str) -> Any:
        return lambda r: r["notice_delay_s"][key]

    rows: list[tuple[str, Any, str]] = [
        ("exit code", lambda r: r["returncode"], "d"),
        ("items succeeded", lambda r: (r.get("counts") or {}).get("succeeded"), "d"),
        ("wall time s (baseline: extrapolated)", wall, ".2f"),
        ("  engine wall s (batch.started..finished)", lambda r: r.get("engine_wall_s"), ".2f"),
        ("bound s", lambda r: r["bound_s"], ".2f"),
        ("wall / bound", lambda r: r["ratio"], ".3f"),
        ("CPU s (user+sys) of the process", lambda r: r["cpu_s"], ".2f"),
        ("CPU s per 1000 tasks", lambda r: r["cpu_s_per_1000"], ".2f"),
        ("  start-up CPU s (validate, same manifest)", lambda r: r.get("startup_cpu_s"), ".2f"),
        ("  CPU s per 1000 tasks, less start-up",
         lambda r: (r["cpu_s"] - r["startup_cpu_s"]) / scenario.n * 1000, ".2f"),
        ("peak RSS MB", lambda r: r["peak_rss_mb"], ".1f"),
        ("  RSS MB at 1/4, 1/2, 3/4 of the run", lambda r: " / ".join(
            "-" if r.get(f"rss_q{q}_mb") is None else f"{r[f'rss_q{q}_mb']:.0f}"
            for q in (1, 2, 3)), "s"),
        ("creates / task (server)", rq("creates"), ".3f"),
        ("queries / task (server; incl. lookups)", rq("queries"), ".3f"),
        ("  lookups / task (client report)",
         lambda r: (r.get("client_requests_per_task") or {}).get("lookup", 0.0), ".3f"),
        ("lists / task (server)", rq("lists"), ".3f"),
        ("API requests / task (server)", rq("total_api"), ".3f"),
        ("asset downloads / task (server)", rq("assets"), ".3f"),
        ("retries", lambda r: r.get("retries"), "d"),
        ("notice delay mean s", nd("mean"), ".3f"),
        ("notice delay p50 s", nd("p50"), ".3f"),
        ("notice delay p90 s", nd("p90"), ".3f"),
        ("notice delay max s", nd("max"), ".3f"),
        ("peak slots (server)", lambda r: r["peak_slots"], "d"),
        ("simulator CPU s", lambda r: r["simulator_cpu_s"], ".2f"),
    ]
    width = max(len(name) for name, _, _ in rows) + 2
    col = max(22, *(len(h) + 2 for h in headers))
    lines.append(" " * width + "".join(h.rjust(col) for h in headers))
    for name, get, spec in rows:
        cells = []
        for r in runs:
            try:
                value = get(r)
            except (KeyError, TypeError):
                value = None
            cells.append(_fmt(value, spec).rjust(col))
        lines.append(name.ljust(width) + "".join(cells))
    orch = next((r for r in runs if r["label"].startswith("orchestrator")
                 and not r["download"]), None)
    base = next((r for r in runs if r["label"] == "baseline"), None)
    if orch is not None and base is not None:
        lines.append("")
        lines.append(
            f"baseline / orchestrator wall time: {wall(base) / orch['wall_s']:.1f}x "
            f"(baseline extrapolated from {base['sample']} serial items)"
        )
    if orch is not None:
        lines.append("")
        lines.append("targets (issue 5):")
        lines.extend(target_lines(scenario, orch))
    return "\n".join(lines)


#: (scenario, target, figure, met); met None: a figure without a target
Target = tuple[str, str, str, bool | None]


def scenario_targets(scenario: Scenario, orch: dict[str, Any]) -> list[Target]:
    name = scenario.name
    found: list[Target] = []
    if orch["returncode"] != 0 or (orch.get("counts") or {}).get("succeeded") != scenario.n:
        found.append((name, "every item succeeded", f"exit {orch['returncode']}", False))
    if name == "target-2000":
        found.append((name, "wall within 1.10x of the bound", f"{orch['ratio']:.3f}x",
                      orch["ratio"] <= 1.10))
    if scenario.account_slots is not None:
        found.append((name, "wall within 1.15x of the true-limit bound",
                      f"{orch['ratio']:.3f}x", orch["ratio"] <= 1.15))
        refusals = int((orch.get("create_answers") or {}).get("1303", 0))
        found.append((name, "over-capacity refusals under 10% of tasks",
                      f"{refusals} ({100 * refusals / scenario.n:.1f}%)",
                      refusals < 0.10 * scenario.n))
    cpu = orch["cpu_s_per_1000"]
    per_task = (orch["cpu_s"] - orch["startup_cpu_s"]) / scenario.n * 1000
    if scenario.n >= 1000:
        found.append((name, "CPU under 3 s per 1000 tasks", f"{cpu:.2f} s", cpu < 3))
    else:
        # A few hundred tasks cannot amortise the interpreter start-up and manifest load
        # (a fixed ~0.4 s): judged on the per-task part, both printed.
        found.append((name, "CPU under 3 s per 1000 tasks (less the fixed start-up)",
                      f"{per_task:.2f} s ({cpu:.2f} s with it)", per_task < 3))
    req = orch["requests_per_task"]["total_api"]
    if scenario.duration_mean >= 30:
        found.append((name, "requests per task under 4 (D ~60 s, default polls)",
                      f"{req:.2f}", req < 4))
    if name == "run-100k":
        found.append((name, "peak RSS under 250 MB", f"{orch['peak_rss_mb']:.0f} MB",
                      orch["peak_rss_mb"] < 250))
        quartiles = [float(orch[f"rss_q{q}_mb"]) for q in (1, 2, 3)
                     if orch.get(f"rss_q{q}_mb") is not None]
        if len(quartiles) == 3:
            low, high = min(quartiles), max(quartiles)
            found.append((name, "steady memory: RSS at 1/4..3/4 of the run within 10%",
                          " / ".join(f"{q:.0f}" for q in quartiles) + " MB",
                          high <= low * 1.10))
    return found


def target_lines(scenario: Scenario, orch: dict[str, Any]) -> list[str]:
    lines = [f"  {what}: {figure}" + _mark(met)
             for _, what, figure, met in scenario_targets(scenario, orch)]
    if scenario.duration_mean < 30:
        req = orch["requests_per_task"]["total_api"]
        lines.append(f"  (requests per task {req:.2f}; the < 4 target is for D ~60 s with "
                     "default polls: scenario poll-60s)")
    return lines


def validate_targets(result: dict[str, Any]) -> list[Target]:
    found: list[Target] = []
    for name in ("inline_yaml", "items_from_csv"):
        r = result[name]
        where = f"{VALIDATE_SCENARIO} ({name})"
        if not r["ok"]:
            found.append((where, "validation passes", f"exit {r['returncode']}", False))
        found.append((where, "validation under 5 s", f"{r['wall_s']:.2f} s", r["wall_s"] < 5))
        found.append((where, "peak RSS under 250 MB", f"{r['peak_rss_mb']:.0f} MB",
                      r["peak_rss_mb"] < 250))
    return found


def render_targets(targets: Sequence[Target]) -> str:
    lines = ["every target (issue 5):"]
    width = max(len(f"{where}: {what}") for where, what, _, _ in targets) + 2
    for where, what, figure, met in targets:
        lines.append(f"  {(where + ': ' + what).ljust(width)}{figure}{_mark(met)}")
    missed = sum(1 for *_, met in targets if met is False)
    lines.append(f"  {len(targets) - missed} of {len(targets)} met")
    return "\n".join(lines)


def render_validate(result: dict[str, Any]) -> str:
    lines = [f"validation of {result['n']} items (python -m orchestrator validate):"]
    for name in ("inline_yaml", "items_from_csv"):
        r = result[name]
        lines.append(
            f"  {name:15s} wall {r['wall_s']:.2f} s{_mark(r['wall_s'] < 5)}   "
            f"CPU {r['cpu_s']:.2f} s   peak RSS {r['peak_rss_mb']:.0f} MB"
            f"{_mark(r['peak_rss_mb'] < 250)}   exit {r['returncode']}"
        )
        if not r["ok"]:
            lines.append(f"    stderr: {r['stderr']}")
    lines.append("  targets: validation under 5 s, peak RSS under 250 MB")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--scenario",
        default="target-2000",
        choices=(*SCENARIOS, VALIDATE_SCENARIO, ALL),
        help="named settings (default: target-2000); the options below override them. "
        f"'{ALL}' runs every scenario in turn (about 20 minutes on 2 cores) and ends with "
        "a table of every target",
    )
    parser.add_argument("--list", action="store_true", help="describe the scenarios and exit")
    parser.add_argument("--n", type=int, help="items")
    parser.add_argument("--concurrency", type=int, help="slots C (manifest and simulator)")
    parser.add_argument("--rpm", type=float, help="creates per minute R; 0 means unlimited")
    parser.add_argument("--duration-min", type=float, help="task time lower bound, seconds")
    parser.add_argument("--duration-max", type=float, help="task time upper bound, seconds")
    parser.add_argument("--poll-interval", type=float, help="poll.interval (and baseline sleep)")
    parser.add_argument("--poll-max-interval", type=float, help="poll.max_interval")
    parser.add_argument("--baseline-n", type=int, help="items the baseline runs (extrapolated)")
    parser.add_argument("--seed", type=int, help="simulator seed (task durations)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--downloads", action=argparse.BooleanOptionalAction, default=None,
                        help="also run with output.download on (default: per scenario)")
    parser.add_argument("--profile", choices=("py-spy", "py-spy-gil", "pyinstrument"),
                        help="run the orchestrator under a profiler (its CPU figures then "
                        "include the profiler); output in the work directory")
    parser.add_argument("--workdir", type=Path,
                        help="keep manifests, logs and profiles here (default: a temporary "
                        "directory, removed at the end)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--whatif", metavar="PATCHES",
                        help="run the orchestrator with experimental in-memory patches "
                        "(benchmarks/whatif.py, e.g. pool=250,sync=normal,nosniff); such "
                        "figures are labelled and are not the orchestrator's")
    parser.add_argument("--code", type=Path,
                        help="source tree whose orchestrator package is measured (default: "
                        "this repository), e.g. a `git archive HEAD` snapshot")
    return parser.parse_args(argv)


def scenario_from(args: argparse.Namespace) -> Scenario:
    s = SCENARIOS["target-2000" if args.scenario == VALIDATE_SCENARIO else args.scenario]
    changes: dict[str, Any] = {}
    for option, name in (("n", "n"), ("concurrency", "concurrency"),
                         ("poll_interval", "poll_interval"),
                         ("poll_max_interval", "poll_max_interval"),
                         ("baseline_n", "baseline_n"), ("seed", "seed"),
                         ("downloads", "downloads")):
        value = getattr(args, option)
        if value is not None:
            changes[name] = value
    if args.rpm is not None:
        changes["rpm"] = args.rpm if args.rpm > 0 else None
    if args.duration_min is not None or args.duration_max is not None:
        low = args.duration_min if args.duration_min is not None else s.duration[0]
        high = args.duration_max if args.duration_max is not None else s.duration[1]
        changes["duration"] = (low, high)
    if changes:
        custom = args.scenario != "target-2000" or any(
            k not in ("downloads", "seed", "baseline_n") for k in changes
        )
        changes["name"] = f"{s.name}+custom" if custom else s.name
        changes["description"] = s.description + " (overridden: " + ", ".join(
            f"{k}={v}" for k, v in changes.items() if k not in ("name", "description")) + ")"
        if "poll_max_interval" not in changes and "poll_interval" in changes:
            changes["poll_max_interval"] = max(s.poll_max_interval, changes["poll_interval"])
    return replace(s, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.code is not None:
        use_code(args.code)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name}\n    {s.description}")
        print(f"{VALIDATE_SCENARIO}\n    python -m orchestrator validate on 100,000 generated "
              "items (inline YAML, and items_from CSV); --n changes the count")
        print(f"{ALL}\n    every scenario above in turn, then one table of every target")
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kling-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.scenario == ALL:
            payloads = []
            targets: list[Target] = []
            for name in (*SCENARIOS, VALIDATE_SCENARIO):
                log(f"== scenario {name}")
                one = parse_args(["--scenario", name])
                one.downloads = args.downloads
                payload, found = run_one(one, workdir / name, keep=keep, log=log)
                payloads.append(payload)
                targets += found
                print("", flush=True)
            print(render_targets(targets))
            line = json.dumps({"scenario": ALL, "results": payloads},
                              separators=(",", ":"), default=str)
        else:
            payload, _ = run_one(args, workdir, keep=keep, log=log)
            line = json.dumps(payload, separators=(",", ":"), default=str)
        print(line)
        if args.json_out is not None:
            args.json_out.write_text(line + "\n", encoding="utf-8")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_one(
    args: argparse.Namespace, workdir: Path, *, keep: bool, log: Any
) -> tuple[dict[str, Any], list[Target]]:
    """One scenario: prints its table; returns its JSON payload and its targets."""
    workdir.mkdir(parents=True, exist_ok=True)
    if args.scenario == VALIDATE_SCENARIO:
        result = run_validate_scale(args.n or 100_000, workdir, log=log)
        print(render_validate(result), flush=True)
        return {"scenario": VALIDATE_SCENARIO, **result}, validate_targets(result)
    scenario = scenario_from(args)
    # A profile is of the run with downloads when the scenario has them (it costs the most).
    profiled = args.profile is not None and scenario.downloads
    runs = [run_orchestrator(scenario, workdir, download=profiled,
                             profile=args.profile, log=log, whatif=args.whatif)]
    if not args.skip_baseline:
        runs.append(run_baseline(scenario, workdir, log=log))
    if scenario.downloads and args.profile is None:
        runs.append(run_orchestrator(scenario, workdir, download=True, profile=None, log=log))
    print(render_table(scenario, runs), flush=True)
    if args.profile in ("py-spy", "py-spy-gil"):
        spied = Path(runs[0]["workdir"]) / "profile.py-spy.txt"
        print("\n" + hotspots.render(spied, 20, None))
    if args.profile is not None:
        kind = "py-spy" if args.profile.startswith("py-spy") else args.profile
        print(f"\nprofile: {runs[0]['workdir']}/profile.{kind}.txt"
              + ("" if keep else " (removed at exit: pass --workdir to keep it)"))
    payload = {"scenario": asdict(scenario), "bound_s": scenario.bound(), "runs": runs}
    return payload, scenario_targets(scenario, runs[0])


if __name__ == "__main__":
    raise SystemExit(main())
