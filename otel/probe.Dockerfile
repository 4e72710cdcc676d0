# An upstream image plus a static busybox, so that a compose health check
# can run `busybox wget` in images built from scratch or distroless (the
# OpenTelemetry Collector's and Tempo's have no shell, curl or wget).
ARG BASE
FROM busybox:1.37.0-musl AS probe

FROM ${BASE}
COPY --from=probe /bin/busybox /usr/local/bin/busybox
