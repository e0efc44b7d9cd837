# distkitd container image.
#   docker build -t distkitd .
#   docker network create distkit
#   docker run -d --name redis --network distkit redis:7
#   docker run --rm --network distkit -v distkit-sock:/run/distkit \
#       -e DISTKIT_REDIS=redis://redis:6379 distkitd
# Flags go after the image name (they are distkitd flags) or into DISTKIT_* environment variables.
# A host directory bind-mounted at /run/distkit must be writable by uid 10001 (chown 10001:10001,
# mode 0770): the daemon runs as 10001 and creates its socket there.

# ---- build stage: the Debian 12 compiler and -dev packages (no lint, test or Redis packages) ----
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DDISTKIT_BUILD_TESTS=OFF -DDISTKIT_BUILD_BENCH=OFF \
 && cmake --build /build --target distkitd distkit \
 && install -D -s -m 0755 /build/distkitd /out/usr/local/bin/distkitd \
 && install -D -s -m 0755 /build/distkit /out/usr/local/bin/distkit

# ---- runtime stage: only the shared libraries the two binaries link ----
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libgrpc++1.51 libprotobuf32 libhiredis0.14 libevent-core-2.1-7 libevent-pthreads-2.1-7 \
        libevent-openssl-2.1-7 libspdlog1.10 libabsl20220623 libssl3 \
        libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libyaml-cpp0.7 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 distkit \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin distkit \
 && install -d -o distkit -g distkit -m 0770 /run/distkit
COPY --from=build /out/ /
# Fail the image build (not the first start) when a runtime library is missing above.
RUN ! ldd /usr/local/bin/distkitd /usr/local/bin/distkit | grep -F 'not found'

# The socket lives in /run/distkit: mount a shared volume there (the app container mounts the
# same volume). The socket is created 0660, so the app needs uid or gid 10001.
# A default through the environment (not CMD) so that flags given to `docker run` add to it.
ENV DISTKIT_LISTEN=unix:/run/distkit/distkitd.sock
# Where the image's own CLI (`distkit`, e.g. as a health probe) finds the daemon.
ENV DISTKIT_ADDR=unix:/run/distkit/distkitd.sock
VOLUME ["/run/distkit"]
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/distkitd"]
