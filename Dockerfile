# The kiln binary in a small runtime image. Build: docker build -t kiln .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/kiln kiln
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
COPY dags /opt/kiln/dags
USER kiln
WORKDIR /var/lib/kiln
ENV KILN_DAGS=/opt/kiln/dags KILN_DATA_DIR=/var/lib/kiln
ENTRYPOINT ["/usr/bin/tini", "--", "kiln"]
CMD ["standalone", "--listen", "0.0.0.0:8080"]
