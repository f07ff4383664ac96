"""The scikit-learn side of the serving benchmark: a FastAPI app answering the same request as
kiln's `POST /api/v1/models/wine_quality/predict` with the equivalent model.

At start it trains what kiln's wine DAG deploys, the same way: drop duplicate rows, target
`quality >= 6`, 80/20 split with seed 42, StandardScaler fitted on the training rows, then the
algorithm kiln's evaluate picked (KILN_BENCH_ALGORITHM: logistic_regression with C=1, or
decision_tree with max depth 8). Requests carry raw feature values, as kiln's do:

    {"rows": [{"fixed acidity": 7.4, ..., "alcohol": 9.4}]}

Run: KILN_BENCH_WINE_CSV=data/winequality-red.csv KILN_BENCH_ALGORITHM=logistic_regression \
     uvicorn serve_sklearn:app --workers 1 --no-access-log
"""

import os

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

FEATURES = [
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
]
MAX_ROWS = 10_000


def train_model():
    frame = pd.read_csv(os.environ.get("KILN_BENCH_WINE_CSV", "data/winequality-red.csv"))
    frame = frame.drop_duplicates()
    frame["good"] = (frame["quality"] >= 6).astype("int64")
    order = np.random.default_rng(42).permutation(len(frame))
    train = frame.iloc[np.sort(order[int(round(len(frame) * 0.2)):])]
    algorithm = os.environ.get("KILN_BENCH_ALGORITHM", "logistic_regression")
    if algorithm == "logistic_regression":
        estimator = LogisticRegression(C=1.0)
    elif algorithm == "decision_tree":
        estimator = DecisionTreeClassifier(max_depth=8, random_state=42)
    else:
        raise SystemExit(f"KILN_BENCH_ALGORITHM: no {algorithm} here")
    model = make_pipeline(StandardScaler(), estimator)
    model.fit(train[FEATURES].to_numpy(dtype=np.float64), train["good"].to_numpy())
    return model


MODEL = train_model()
CLASSES = [int(label) for label in MODEL.classes_]
app = FastAPI()


class PredictRequest(BaseModel):
    rows: list[dict[str, float]]


@app.post("/api/v1/models/wine_quality/predict")
def predict(request: PredictRequest):
    if not request.rows or len(request.rows) > MAX_ROWS:
        raise HTTPException(status_code=422, detail=f"send 1 to {MAX_ROWS} rows")
    try:
        x = np.array([[row[name] for name in FEATURES] for row in request.rows], dtype=np.float64)
    except KeyError as error:
        raise HTTPException(status_code=422, detail=f"missing feature {error}") from None
    probabilities = MODEL.predict_proba(x)
    return {
        "model": "wine_quality",
        "version": 1,
        "predictions": [CLASSES[index] for index in probabilities.argmax(axis=1)],
        "probabilities": probabilities.tolist(),
        "classes": CLASSES,
    }
