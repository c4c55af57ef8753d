# kplug as a container image: the `kplug install` init container of docs/kubernetes.md.
#
#   docker build -t REGISTRY/kplug:0.1.0 .
#
# One static binary (scripts/build-static.sh: glibc static-pie) on an empty base: no
# shell, no package manager, nothing but kplug and the CA bundle for registry TLS. It
# runs as uid 1000 (Kong's `kong` user) and writes only under --prefix and the
# --env-file, so it runs with readOnlyRootFilesystem.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-static.sh --release /out/kplug

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/kplug /kplug
USER 1000:1000
ENTRYPOINT ["/kplug"]
