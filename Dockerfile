# The Surge node image: FROM scratch, two static binaries, no shell.
#
# Build it with `make image`. The Makefile compiles node and clusterctl on
# the host with CGO_ENABLED=0 (static, the way release tooling does) and
# stages them with the host's CA bundle and the passwd/group files under
# bin/image/; .dockerignore sends only that directory to the builder.
# Nothing is pulled: the only base is scratch, so it builds without a
# registry.
#
#   docker run -d -p 8080:8080 -v surge-data:/data surge:latest
#   docker run ... surge:latest --join node1:7946 --advertise node2
#   docker exec <container> clusterctl status
FROM scratch

ARG VERSION=dev
LABEL org.opencontainers.image.title="surge" \
      org.opencontainers.image.description="Surge fundraising node: pages, JSON API, payment callbacks, gossip and Raft in one static binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/surgefund/surge"

# Owned by root and read-only to the node: /usr/local/bin/{node,clusterctl},
# /etc/ssl/certs/ca-certificates.crt, /etc/passwd, /etc/group,
# /etc/nsswitch.conf.
COPY bin/image/rootfs/ /
# The data directory belongs to the node's user (uid 10001, "surge" in
# /etc/passwd). Docker fills a new named volume mounted here from the image,
# owner included, so the node can write to it without running as root.
COPY --chown=10001:10001 bin/image/data/ /data/

ENV PATH=/usr/local/bin \
    SURGE_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# HTTP (pages, API, admin), gossip (TCP and UDP), Raft and internal forwarding.
EXPOSE 8080/tcp 7946/tcp 7946/udp 7947/tcp

# SIGTERM is the graceful stop: stop taking HTTP, hand over leadership,
# leave gossip, close the stores. Give it time (docker stop -t 30).
STOPSIGNAL SIGTERM

# No shell in the image: the node binary checks /readyz itself. It exits 0
# when the node has a leader and has caught up. If you move the HTTP port,
# set SURGE_HEALTH_ADDR (default http://127.0.0.1:8080).
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/node", "health", "--timeout", "4s"]

ENTRYPOINT ["/usr/local/bin/node"]
