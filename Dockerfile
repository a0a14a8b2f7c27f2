# The bucket-streamer image: a build stage (Rust and FFmpeg's headers) and a
# slim Debian runtime with only the shared libraries the binary links
# (libavcodec, libavutil, libswscale, libturbojpeg), run as a non-root user.
# The web client is compiled into the binary.
#
#   docker build -t bucket-streamer .
#   docker run -p 3000:3000 -v "$PWD/data:/data:ro" bucket-streamer
#
# Without a registry (as the test suite builds it, crates/cli/tests/container_image.rs):
# build the binary on the host, with the runtime's Debian release, and copy it in:
#   cargo build --release --bin bucket-streamer
#   buildah bud --isolation chroot --build-arg BINARY_FROM=prebuilt \
#     --build-arg BINARY=target/release/bucket-streamer -t bucket-streamer .
# The runtime stage is the same either way.

ARG DEBIAN=bookworm
# `build` compiles in the image; `prebuilt` takes the binary at BINARY from the context.
ARG BINARY_FROM=build

FROM docker.io/library/rust:1-${DEBIAN} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang pkg-config \
       libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libturbojpeg0-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bucket-streamer \
    && install -D target/release/bucket-streamer /out/bucket-streamer

FROM scratch AS prebuilt
ARG BINARY=target/release/bucket-streamer
COPY ${BINARY} /out/bucket-streamer

FROM ${BINARY_FROM} AS binary

FROM docker.io/library/debian:${DEBIAN}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libavcodec59 libavutil57 libswscale6 libturbojpeg0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin bucket-streamer \
    && mkdir /data && chown 10001:10001 /data
COPY --from=binary /out/bucket-streamer /usr/local/bin/bucket-streamer
USER 10001:10001
# Local storage at /data by default; set STORAGE_BACKEND=s3 and S3_* for a bucket.
ENV LISTEN_ADDR=0.0.0.0:3000 \
    STORAGE_BACKEND=local \
    LOCAL_PATH=/data \
    LOG_LEVEL=info
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/bucket-streamer"]
CMD ["serve"]
