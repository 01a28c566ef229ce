# sluice serve in a container. Untested here: the machine this was written on cannot run
# Docker. The build step is exactly the README's: cargo build --release --locked -p sluice-cli
#
#   docker build -t sluice .
#   docker run -p 8080:8080 -v $PWD/sluice.toml:/etc/sluice/sluice.toml:ro -e OPENAI_API_KEY sluice
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER sluice
EXPOSE 8080
# Mount the configuration here (read-only); keys come from environment variables.
VOLUME ["/etc/sluice"]
ENTRYPOINT ["sluice", "serve", "--config", "/etc/sluice/sluice.toml", "--listen", "0.0.0.0:8080"]
