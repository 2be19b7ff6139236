"""Benchmark: rerunning a finished run, and the offline message for a missing BERTScore model.

Builds a finished run once (``random`` and ``majority`` on ``held-out-rad`` and the synthetic suite:
1,006 samples per model; the synthetic suite alone without ``MEDMIM_DATA_DIR``), then times the
same command again as a child process, whole process included, and lists the heavy modules that
child imported (none should be: nothing is left to do). It also times ``run`` with the default
open metric (roberta-large), downloads off and an empty Hugging Face cache, until it exits with the
message naming the fix.

    MEDMIM_DATA_DIR=../shared/data python benchmarks/bench_rerun.py [--repeats 5] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HEAVY = ("torch", "transformers", "bert_score", "rouge_score", "nltk", "sacrebleu")
CHILD = ("import sys\nfrom medmim_eval.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
         "    code = e.code\nelse:\n    code = 0\nprint('HEAVY', [m for m in %r if m in sys.modules], file=sys.stderr)\n"
         "raise SystemExit(code)\n" % (HEAVY,))


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall s, CPU s, exit status, stderr) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MEDMIM_DATA_DIR"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5 samples per kind and task, one repeat")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rerun.json"))
    args = parser.parse_args()
    with_data = bool(args.data_dir) and (Path(args.data_dir) / "med-mim").is_dir()
    tasks = "held-out-rad,synth" if with_data else "synth"
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1", MEDMIM_CACHE_DIR=str(Path(tmp) / "cache"),
                   MEDMIM_OPEN_METRICS="bertscore.model=minilm")
        if with_data:
            env["MEDMIM_DATA_DIR"] = str(Path(args.data_dir).resolve())
        out = Path(tmp) / "run"
        command = ["run", "-m", "random,majority", "-t", tasks, "-o", str(out), "-q", "--no-cache"]
        if args.quick:
            command += ["--limit", "5"]
        first = timed(command, env)
        if first[2] != 0:
            print(first[3], file=sys.stderr)
            return 1
        samples = sum(1 for line in (out / "samples.jsonl").open() if line.strip())
        reruns = [timed(command, env) for _ in range(repeats)]
        heavy = sorted({m for r in reruns for line in r[3].splitlines() if line.startswith("HEAVY")
                        for m in json.loads(line[6:].replace("'", '"'))})
        missing_env = dict(env, HF_HOME=str(Path(tmp) / "empty-hf"))
        missing_env.pop("MEDMIM_OPEN_METRICS")
        missing = timed(["run", "-m", "random", "-t", tasks, "-o", str(Path(tmp) / "missing"), "-q", "--no-cache"],
                        missing_env)
    message = next((line for line in missing[3].splitlines() if line.startswith("error:")), "")
    result = {
        "date": date.today().isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "tasks": tasks, "records": samples, "quick": args.quick,
        "first_run_wall_s": first[0], "rerun_wall_s": [r[0] for r in reruns], "rerun_cpu_s": [r[1] for r in reruns],
        "rerun_wall_median_s": statistics.median(r[0] for r in reruns),
        "rerun_cpu_median_s": statistics.median(r[1] for r in reruns),
        "rerun_heavy_modules_imported": heavy,
        "missing_bertscore_wall_s": missing[0], "missing_bertscore_cpu_s": missing[1],
        "missing_bertscore_exit": missing[2], "missing_bertscore_message": message,
    }
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':44}{'wall s':>8}{'CPU s':>8}")
    print(f"{'first run (' + str(samples) + ' records)':44}{first[0]:8.2f}{first[1]:8.2f}")
    print(f"{'rerun of the finished run (median)':44}{result['rerun_wall_median_s']:8.2f}"
          f"{result['rerun_cpu_median_s']:8.2f}")
    print(f"{'roberta-large missing offline -> message':44}{missing[0]:8.2f}{missing[1]:8.2f}")
    print(f"heavy modules imported by the rerun: {heavy or 'none'}; load average {result['load_average'][0]:.1f}")
    print(f"message: {message[:160]}")
    return 0 if missing[2] == 2 and not heavy else 1


if __name__ == "__main__":
    raise SystemExit(main())
