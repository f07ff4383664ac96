"""kiln's ML plugins against pandas + scikit-learn, stage by stage, each stage in its own process.

    compare.py stages --kiln BIN --work DIR --out stages.json [--repetitions 3] [--datasets wine,synthetic]
    compare.py report --stages stages.json [--serving serving.jsonl] [--markdown report.md]

For every stage of both sides this measures the child's wall time and peak RSS (os.wait4's
ru_maxrss) and reads the time the child reports for its own work: kiln's `seconds` (the plugin's
run, from `kiln tasks run`), the Python script's perf_counter() around its work (imports
excluded). Each stage runs `--repetitions` times; the report shows medians.

Training and scoring use kiln's own split on both sides: scikit-learn trains on kiln's train
Parquet and scores on kiln's test Parquet, so accuracies compare on the same rows.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

WINE_FEATURES = [
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
]
SYNTHETIC_FEATURES = [f"f{index}" for index in range(20)]

# The algorithms and the hyperparameters both sides get (see sk_stage.make_model).
ALGORITHMS = {
    "logistic_regression": {"name": "logistic_regression", "c": 1.0},
    "decision_tree": {"name": "decision_tree", "max_depth": 8},
    "random_forest": {"name": "random_forest", "trees": 10, "max_depth": 8},
    "k_means": {"name": "k_means", "clusters": 8},
    "gaussian_nb": {"name": "gaussian_nb"},
}
LABELS = {
    "logistic_regression": "logistic regression (C=1)",
    "decision_tree": "decision tree (depth 8)",
    "random_forest": "random forest (10 trees, depth 8)",
    "random_forest_100": "random forest (100 trees)",
    "k_means": "k-means (k=8, 1 init)",
    "gaussian_nb": "Gaussian naive Bayes",
}

# The reference accuracies: scikit-learn on its own split.
REFERENCE = {
    "wine": {"logistic_regression": 0.765, "decision_tree": 0.717, "random_forest_100": 0.790},
    "synthetic": {"logistic_regression": 0.843, "decision_tree": 0.896, "random_forest": 0.918},
}


def datasets(work):
    return {
        "wine": {
            "title": "wine (data/winequality-red.csv, 1,599 rows × 11)",
            "csv": REPO / "data" / "winequality-red.csv",
            "target": "good",
            "steps": [
                {"op": "dedupe"},
                {"op": "derive", "column": "good", "expr": "int(quality >= 6)"},
                {"op": "drop", "columns": ["quality"]},
                {"op": "standardize", "columns": WINE_FEATURES},
            ],
            "algorithms": [*ALGORITHMS, "random_forest_100"],
        },
        "synthetic": {
            "title": "make_classification (1,000,000 rows × 20, random_state=42)",
            "csv": work / "classification_1m.csv",
            "target": "y",
            "steps": [
                {"op": "dedupe"},
                {"op": "standardize", "columns": SYNTHETIC_FEATURES},
            ],
            "algorithms": list(ALGORITHMS),
        },
    }


def kiln_params(algorithm, target):
    spec = {"name": "random_forest", "trees": 100} if algorithm == "random_forest_100" else ALGORITHMS[algorithm]
    params = {"algorithm": spec, "seed": 42}
    if algorithm != "k_means":
        params["target"] = target
    return params


def build_running():
    """Whether a Rust build or cargo's tests are running (their CPU use would skew every figure)."""
    return any(
        subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0
        for name in ["rustc", "cargo"]
    )


class BusyWatch:
    """Polls every 2 s in the background; `seen` tells whether a build ran since `reset`."""

    def __init__(self):
        self.seen = False
        thread = threading.Thread(target=self._watch, daemon=True)
        thread.start()

    def _watch(self):
        while True:
            if build_running():
                self.seen = True
            time.sleep(2)

    def reset(self):
        self.seen = False


def wait_for_quiet_machine():
    announced = False
    while build_running():
        if not announced:
            print("a build is running (rustc or cargo); waiting for it to end before measuring", file=sys.stderr)
            announced = True
        time.sleep(30)


def measure(argv, env=None):
    """Runs one child; answers its JSON line, wall seconds and peak RSS in MiB."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read the pipes on the side so a chatty child never blocks; wait4 gives its own rusage.
    chunks = {"out": b"", "err": b""}

    def drain(name, pipe):
        chunks[name] = pipe.read()

    readers = [
        threading.Thread(target=drain, args=("out", child.stdout)),
        threading.Thread(target=drain, args=("err", child.stderr)),
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    for reader in readers:
        reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(
            f"{' '.join(map(str, argv))} failed ({child.returncode}):\n{chunks['err'].decode(errors='replace')}"
        )
    lines = [line for line in chunks["out"].decode().splitlines() if line.startswith("{")]
    report = json.loads(lines[-1])
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "report": report}


def repeat(times, argv):
    runs = [measure(argv) for _ in range(times)]
    return {
        "wall": statistics.median(run["wall"] for run in runs),
        "rss_mib": statistics.median(run["rss_mib"] for run in runs),
        "runs": runs,
        "report": runs[-1]["report"],
    }


def kiln_seconds(result):
    return statistics.median(run["report"]["seconds"] for run in result["runs"])


def py_seconds(result):
    return statistics.median(run["report"]["seconds"] for run in result["runs"])


def run_dataset(name, spec, kiln, work, repetitions):
    out = work / name
    (out / "kiln").mkdir(parents=True, exist_ok=True)
    (out / "sklearn").mkdir(parents=True, exist_ok=True)
    python = sys.executable
    stage_script = str(HERE / "sk_stage.py")
    result = {"title": spec["title"], "algorithms": {}}

    kiln_train, kiln_test = out / "kiln" / "train.parquet", out / "kiln" / "test.parquet"
    scaler = out / "kiln" / "scaler.json"
    process_params = {"steps": spec["steps"], "split": {"test_fraction": 0.2, "seed": 42}}
    print(f"[{name}] process", file=sys.stderr)
    result["process"] = {
        "kiln": repeat(repetitions, [
            kiln, "tasks", "run", "process", "--params", json.dumps(process_params),
            "--input", f"raw={spec['csv']}",
            "--output", f"train={kiln_train}", "--output", f"test={kiln_test}",
            "--output", f"scaler={scaler}",
        ]),
        "sklearn": repeat(repetitions, [
            python, stage_script, "process", "--dataset", "wine" if name == "wine" else "synthetic",
            "--csv", str(spec["csv"]),
            "--train", str(out / "sklearn" / "train.parquet"),
            "--test", str(out / "sklearn" / "test.parquet"),
        ]),
    }
    for algorithm in spec["algorithms"]:
        print(f"[{name}] {algorithm}", file=sys.stderr)
        model = out / "kiln" / f"{algorithm}.json"
        pickled = out / "sklearn" / f"{algorithm}.pkl"
        row = {
            "kiln": repeat(repetitions, [
                kiln, "tasks", "run", "train",
                "--params", json.dumps(kiln_params(algorithm, spec["target"])),
                "--input", f"train={kiln_train}", "--input", f"scaler={scaler}",
                "--output", f"model={model}:model",
            ]),
            "sklearn": repeat(repetitions, [
                python, stage_script, "train", "--algorithm", algorithm,
                "--train", str(kiln_train), "--target", spec["target"], "--model", str(pickled),
            ]),
        }
        if algorithm == "k_means":
            row["kiln_quality"] = measure([
                python, stage_script, "kiln-inertia", "--model", str(model), "--test", str(kiln_test),
            ])["report"]
        else:
            evaluated = measure([
                kiln, "tasks", "run", "evaluate",
                "--input", f"test={kiln_test}", "--input", f"{algorithm}={model}:model",
            ])
            row["kiln_quality"] = {"accuracy": evaluated["report"]["summary"]["accuracy"]}
        row["sklearn_quality"] = measure([
            python, stage_script, "score", "--model", str(pickled),
            "--test", str(kiln_test), "--target", spec["target"],
        ])["report"]
        result["algorithms"][algorithm] = row
    return result


def command_stages(args):
    work = Path(args.work)
    chosen = args.datasets.split(",")
    everything = datasets(work)
    results = {}
    watch = BusyWatch()
    for name in chosen:
        for attempt in range(3):
            wait_for_quiet_machine()
            watch.reset()
            result = run_dataset(name, everything[name], args.kiln, work, args.repetitions)
            if not (watch.seen or build_running()):
                break
            print(f"[{name}] a build started during the measurements: measuring again", file=sys.stderr)
        else:
            result["disturbed"] = True
        results[name] = result
    # A child's peak RSS is never below its parent's at the fork (Linux keeps the high-water
    # mark across exec), so the driver keeps to the standard library: this is that floor.
    driver_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = {
        "machine": machine(args.kiln),
        "repetitions": args.repetitions,
        "driver_rss_mib": driver_rss_mib,
        "datasets": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


def machine(kiln):
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ["numpy", "pandas", "pyarrow", "scikit-learn", "fastapi", "uvicorn"]:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "missing"
    kiln_version = subprocess.run([kiln, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "kiln": kiln_version,
        "versions": versions,
    }


def ratio(slow, fast):
    return f"{slow / fast:.1f}×" if fast > 0 else "–"


def table_rows(stages):
    """Markdown table rows: one per stage per dataset."""
    rows = []
    for name, result in stages["datasets"].items():
        process = result["process"]
        kiln_s, sk_s = kiln_seconds(process["kiln"]), py_seconds(process["sklearn"])
        rows.append([
            name, "process (read CSV, dedupe, standardize, split, write Parquet)",
            f"{kiln_s:.3f} s", f"{sk_s:.3f} s", f"{sk_s / kiln_s:.1f}×",
            f"{process['kiln']['wall']:.2f} s", f"{process['sklearn']['wall']:.2f} s",
            f"{process['kiln']['rss_mib']:.0f}", f"{process['sklearn']['rss_mib']:.0f}",
            "", "", "",
        ])
        for algorithm, row in result["algorithms"].items():
            kiln_s, sk_s = kiln_seconds(row["kiln"]), py_seconds(row["sklearn"])
            if "accuracy" in row["kiln_quality"]:
                kiln_q = f"{row['kiln_quality']['accuracy']:.3f}"
                sk_q = f"{row['sklearn_quality']['accuracy']:.3f}"
                gap = f"{(row['kiln_quality']['accuracy'] - row['sklearn_quality']['accuracy']) * 100:+.1f}"
            else:
                kiln_q = f"inertia {row['kiln_quality']['inertia_per_row']:.2f}"
                sk_q = f"inertia {row['sklearn_quality']['inertia_per_row']:.2f}"
                gap = ""
            rows.append([
                name, f"train: {LABELS[algorithm]}",
                f"{kiln_s:.3f} s", f"{sk_s:.3f} s", f"{sk_s / kiln_s:.1f}×",
                f"{row['kiln']['wall']:.2f} s", f"{row['sklearn']['wall']:.2f} s",
                f"{row['kiln']['rss_mib']:.0f}", f"{row['sklearn']['rss_mib']:.0f}",
                kiln_q, sk_q, gap,
            ])
    return rows


HEADER = [
    "data", "stage", "kiln time", "pandas/sklearn time", "speed-up",
    "kiln wall", "py wall", "kiln peak RSS MiB", "py peak RSS MiB",
    "kiln test acc.", "sklearn test acc. (same split)", "Δ points",
]


def verdicts(stages, serving):
    lines = []
    for name, result in stages["datasets"].items():
        process = result["process"]
        speed = py_seconds(process["sklearn"]) / kiln_seconds(process["kiln"])
        lines.append(f"- {name}: process ≥ 2× faster than pandas: {'met' if speed >= 2 else 'MISSED'} ({speed:.1f}×); "
                     f"peak RSS below pandas': {'met' if process['kiln']['rss_mib'] < process['sklearn']['rss_mib'] else 'MISSED'}")
        for algorithm, row in result["algorithms"].items():
            speed = py_seconds(row["sklearn"]) / kiln_seconds(row["kiln"])
            parts = [f"time {'met' if speed >= 1 else 'MISSED'} ({speed:.2f}×)",
                     f"RSS {'met' if row['kiln']['rss_mib'] < row['sklearn']['rss_mib'] else 'MISSED'}"]
            if "accuracy" in row["kiln_quality"]:
                gap = (row["kiln_quality"]["accuracy"] - row["sklearn_quality"]["accuracy"]) * 100
                parts.append(f"accuracy within 2 points {'met' if gap >= -2 else 'MISSED'} ({gap:+.1f})")
            lines.append(f"- {name}, {LABELS[algorithm]}: " + ", ".join(parts))
    if serving:
        kiln = [entry for entry in serving if entry["server"] == "kiln"]
        for entry in serving:
            if entry["server"] == "kiln" or not kiln:
                continue
            factor = kiln[0]["rps"] / entry["rps"]
            lines.append(
                f"- serving vs {entry['server']}: ≥ 10× requests/s {'met' if factor >= 10 else 'MISSED'} ({factor:.1f}×), "
                f"lower p99 {'met' if kiln[0]['p99_ms'] < entry['p99_ms'] else 'MISSED'} "
                f"({kiln[0]['p99_ms']:.2f} vs {entry['p99_ms']:.2f} ms)"
            )
    return lines


def markdown(stages, serving):
    info = stages["machine"]
    versions = ", ".join(f"{key} {value}" for key, value in info["versions"].items())
    out = []
    out.append(f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, Linux {info['kernel']}. "
               f"{info['kiln']} (release). {versions}. Medians of {stages['repetitions']} runs; "
               "each stage is its own process (peak RSS from `os.wait4`; floor: the driver's "
               f"{stages['driver_rss_mib']:.0f} MiB, which a forked child starts with).\n")
    out.append("| " + " | ".join(HEADER) + " |")
    out.append("|" + "---|" * len(HEADER))
    for row in table_rows(stages):
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    for name, result in stages["datasets"].items():
        reference = REFERENCE.get(name, {})
        if reference:
            out.append(f"The issue's reference accuracies for {name} (scikit-learn on its own split): "
                       + ", ".join(f"{LABELS[key]} {value:.3f}" for key, value in reference.items()) + ".")
        if result.get("disturbed"):
            out.append(f"**{name}: a Rust build ran during the measurements; figures are disturbed.**")
    if serving:
        out.append("")
        out.append("| server | requests/s | p50 ms | p99 ms | non-2xx | errors |")
        out.append("|---|---|---|---|---|---|")
        for entry in serving:
            out.append(f"| {entry['server']} | {entry['rps']:.0f} | {entry['p50_ms']:.2f} | {entry['p99_ms']:.2f} "
                       f"| {entry['non_2xx']} | {entry['errors']} |")
    out.append("")
    out.append("Targets:")
    out.extend(verdicts(stages, serving))
    return "\n".join(out) + "\n"


def load_serving(path):
    if not path or not Path(path).exists():
        return []
    runs = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            runs.setdefault(entry["server"], []).append(entry)
    summary = []
    for server, entries in runs.items():
        measured = [entry for entry in entries if not entry.get("warmup")]
        summary.append({
            "server": server,
            "rps": statistics.median(entry["rps"] for entry in measured),
            "p50_ms": statistics.median(entry["p50_us"] for entry in measured) / 1000,
            "p99_ms": statistics.median(entry["p99_us"] for entry in measured) / 1000,
            "non_2xx": sum(entry["non_2xx"] for entry in measured),
            "errors": sum(entry["errors"] for entry in measured),
        })
    return summary


def command_report(args):
    stages = json.loads(Path(args.stages).read_text())
    serving = load_serving(args.serving)
    text = markdown(stages, serving)
    sys.stdout.write(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
        print(f"wrote {args.markdown}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    stages = commands.add_parser("stages")
    stages.add_argument("--kiln", required=True)
    stages.add_argument("--work", required=True)
    stages.add_argument("--out", required=True)
    stages.add_argument("--repetitions", type=int, default=3)
    stages.add_argument("--datasets", default="wine,synthetic")
    report = commands.add_parser("report")
    report.add_argument("--stages", required=True)
    report.add_argument("--serving")
    report.add_argument("--markdown")
    args = parser.parse_args()
    if args.command == "stages":
        if not shutil.which(args.kiln) and not Path(args.kiln).exists():
            raise SystemExit(f"no kiln binary at {args.kiln}: build it with `cargo build --release -p kiln`")
        command_stages(args)
    else:
        command_report(args)


if __name__ == "__main__":
    main()
