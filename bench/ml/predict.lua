-- wrk script: POSTs one wine (the first row of data/winequality-red.csv) per request, the JSON
-- body of kiln's `POST /api/v1/models/wine_quality/predict`, and at the end prints one JSON line
-- (requests/s, latency percentiles in µs, errors) tagged with the SERVER environment variable.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"rows": [{"fixed acidity": 7.4, "volatile acidity": 0.7, "citric acid": 0.0, '
  .. '"residual sugar": 1.9, "chlorides": 0.076, "free sulfur dioxide": 11.0, '
  .. '"total sulfur dioxide": 34.0, "density": 0.9978, "pH": 3.51, "sulphates": 0.56, '
  .. '"alcohol": 9.4}]}'

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    '{"server": "%s", "warmup": %s, "rps": %.1f, "requests": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "non_2xx": %d, "errors": %d}\n',
    os.getenv("SERVER") or "?", os.getenv("WARMUP") or "false",
    summary.requests / (summary.duration / 1e6), summary.requests,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.status, errors))
end
