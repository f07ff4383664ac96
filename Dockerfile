# The kiln binary in a small runtime image, with the demo DAGs and their data.
#   docker build -t kiln .
#   docker run -p 8080:8080 -e KILN_CONSOLE_PASSWORD=$(openssl rand -hex 16) kiln
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
COPY data /opt/kiln/data
USER kiln
WORKDIR /var/lib/kiln
ENV KILN_DAGS=/opt/kiln/dags KILN_DATA_DIR=/var/lib/kiln
ENTRYPOINT ["/usr/bin/tini", "--", "kiln"]
CMD ["standalone", "--listen", "0.0.0.0:8080"]
