"""One stage of the pandas + scikit-learn side of kiln's ML benchmark, run as its own process.

Each stage prints one JSON line with `seconds`: its own time.perf_counter() around the work,
imports excluded, so it compares with the `seconds` kiln's `tasks run` reports.

    sk_stage.py generate OUT.csv
    sk_stage.py process --dataset wine|synthetic --csv IN.csv --train OUT.parquet --test OUT.parquet
    sk_stage.py train --algorithm NAME --train kiln-train.parquet --target COL --model OUT.pkl
    sk_stage.py score --model OUT.pkl --test kiln-test.parquet --target COL
    sk_stage.py kiln-inertia --model kiln-model.json --test kiln-test.parquet
"""

import argparse
import json
import pickle
import sys
import time

import numpy as np
import pandas as pd

SEED = 42


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def generate(args):
    from sklearn.datasets import make_classification

    started = time.perf_counter()
    x, y = make_classification(n_samples=1_000_000, n_features=20, random_state=SEED)
    frame = pd.DataFrame(x, columns=[f"f{index}" for index in range(20)])
    frame["y"] = y
    frame.to_csv(args.out, index=False)
    emit({"seconds": time.perf_counter() - started, "rows": len(frame)})


def process(args):
    """read_csv, drop_duplicates, derive the target (wine), 80/20 split with seed 42,
    standardize with the training rows' statistics (population std, as StandardScaler),
    to_parquet: what kiln's `process` does with the wine DAG's steps."""
    started = time.perf_counter()
    frame = pd.read_csv(args.csv)
    frame = frame.drop_duplicates()
    if args.dataset == "wine":
        frame["good"] = (frame["quality"] >= 6).astype("int64")
        frame = frame.drop(columns=["quality"])
        target = "good"
    else:
        target = "y"
    features = [column for column in frame.columns if column != target]
    order = np.random.default_rng(SEED).permutation(len(frame))
    cut = int(round(len(frame) * 0.2))
    test = frame.iloc[np.sort(order[:cut])].copy()
    train = frame.iloc[np.sort(order[cut:])].copy()
    mean = train[features].mean()
    std = train[features].std(ddof=0).replace(0.0, 1.0)
    train[features] = (train[features] - mean) / std
    test[features] = (test[features] - mean) / std
    train.to_parquet(args.train, index=False)
    test.to_parquet(args.test, index=False)
    emit(
        {
            "seconds": time.perf_counter() - started,
            "train_rows": len(train),
            "test_rows": len(test),
        }
    )


def make_model(name):
    """The scikit-learn estimator with the hyperparameters kiln's `train` is given."""
    from sklearn.cluster import KMeans
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.tree import DecisionTreeClassifier

    if name == "logistic_regression":
        return LogisticRegression(C=1.0, max_iter=100, tol=1e-4)
    if name == "decision_tree":
        return DecisionTreeClassifier(max_depth=8, random_state=SEED)
    if name == "random_forest":
        # kiln grows a forest's trees on every core; so does this.
        return RandomForestClassifier(
            n_estimators=10, max_depth=8, random_state=SEED, n_jobs=-1
        )
    if name == "random_forest_100":
        return RandomForestClassifier(n_estimators=100, random_state=SEED, n_jobs=-1)
    if name == "gaussian_nb":
        return GaussianNB(var_smoothing=1e-9)
    if name == "k_means":
        return KMeans(n_clusters=8, n_init=1, max_iter=300, tol=1e-4, random_state=SEED)
    raise SystemExit(f"unknown algorithm {name}")


def read_xy(path, target):
    frame = pd.read_parquet(path)
    x = frame.drop(columns=[target]).to_numpy(dtype=np.float64)
    y = frame[target].to_numpy()
    return x, y


def train(args):
    """Read kiln's training Parquet, fit, score on the training rows and save: the work
    kiln's `train` does (it reports its training accuracy too)."""
    model = make_model(args.algorithm)
    started = time.perf_counter()
    x, y = read_xy(args.train, args.target)
    fit_started = time.perf_counter()
    if args.algorithm == "k_means":
        model.fit(x)
    else:
        model.fit(x, y)
    fit_seconds = time.perf_counter() - fit_started
    record = {"fit_seconds": fit_seconds, "rows": len(x)}
    if args.algorithm != "k_means":
        record["training_accuracy"] = float(model.score(x, y))
    with open(args.model, "wb") as file:
        pickle.dump(model, file)
    record["seconds"] = time.perf_counter() - started
    emit(record)


def score(args):
    with open(args.model, "rb") as file:
        model = pickle.load(file)
    x, y = read_xy(args.test, args.target)
    if hasattr(model, "cluster_centers_"):
        # The mean squared distance to the nearest centroid (inertia per row).
        emit({"inertia_per_row": float(-model.score(x)) / len(x), "rows": len(x)})
    else:
        emit({"accuracy": float(model.score(x, y)), "rows": len(x)})


def kiln_inertia(args):
    """Inertia per row of kiln's k-means model on the test set (kiln's `evaluate` scores only
    classifiers and regressors). Here, not in the driver, so that the driver stays small: a
    child's peak RSS counts its parent's at the fork."""
    with open(args.model) as file:
        envelope = json.load(file)

    def find(value):
        if isinstance(value, dict):
            if "centroids" in value:
                return value["centroids"]
            for item in value.values():
                found = find(item)
                if found is not None:
                    return found
        return None

    centroids = np.array(find(envelope["fitted"]))
    x = pd.read_parquet(args.test)[envelope["features"]].to_numpy(dtype=np.float64)
    best = np.full(len(x), np.inf)
    for centroid in centroids:
        best = np.minimum(best, ((x - centroid) ** 2).sum(axis=1))
    emit({"inertia_per_row": float(best.mean()), "rows": len(x)})


def main():
    parser = argparse.ArgumentParser()
    stages = parser.add_subparsers(dest="stage", required=True)
    command = stages.add_parser("generate")
    command.add_argument("out")
    command = stages.add_parser("process")
    command.add_argument("--dataset", choices=["wine", "synthetic"], required=True)
    command.add_argument("--csv", required=True)
    command.add_argument("--train", required=True)
    command.add_argument("--test", required=True)
    command = stages.add_parser("train")
    command.add_argument("--algorithm", required=True)
    command.add_argument("--train", required=True)
    command.add_argument("--target", required=True)
    command.add_argument("--model", required=True)
    command = stages.add_parser("score")
    command.add_argument("--model", required=True)
    command.add_argument("--test", required=True)
    command.add_argument("--target", required=True)
    command = stages.add_parser("kiln-inertia")
    command.add_argument("--model", required=True)
    command.add_argument("--test", required=True)
    args = parser.parse_args()
    stage = {
        "generate": generate,
        "process": process,
        "train": train,
        "score": score,
        "kiln-inertia": kiln_inertia,
    }[args.stage]
    stage(args)


if __name__ == "__main__":
    main()
