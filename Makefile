# Surge: binaries, container image and a local three-node cluster.
#
#   make build           static node and clusterctl binaries in ./bin
#   make test            the test command of README.md (what CI runs)
#   make image           the container image (FROM scratch; pulls nothing)
#   make cluster-up      build the image, start node1..node3 with Docker
#                        Compose and wait until all three are ready
#   make cluster-status  clusterctl status, run inside node1
#   make cluster-scale EXTRA=2   add (or remove) extra nodes mid-event
#   make cluster-down    stop the cluster; node1..3's data stays in its volumes
#   make cluster-wipe    stop the cluster and delete its volumes
#   make test-docker     only the Docker Compose system test

GO      ?= go
DOCKER  ?= docker
# docker-compose 1.28+ (the Python one) or the Compose v2 plugin.
COMPOSE ?= $(shell if command -v docker-compose >/dev/null 2>&1; then echo docker-compose; else echo docker compose; fi)

# The image tag; docker-compose.yml reads the same variable.
SURGE_IMAGE ?= surge:latest
export SURGE_IMAGE

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
CA_CERTS ?= /etc/ssl/certs/ca-certificates.crt

# The image runs Linux binaries whatever the host is.
IMAGE_GOARCH ?= $(shell $(GO) env GOARCH)
IMAGE_DIR    := bin/image
ROOTFS       := $(IMAGE_DIR)/rootfs

# clusterctl is built when cmd/clusterctl holds a main package.
HAVE_CLUSTERCTL = $(shell $(GO) list -f '{{.Name}}' ./cmd/clusterctl 2>/dev/null | grep -qx main && echo yes)

EXTRA ?= 1

# Host ports of node1..node3; docker-compose.yml reads the same variables.
SURGE_NODE1_PORT ?= 8081
SURGE_NODE2_PORT ?= 8082
SURGE_NODE3_PORT ?= 8083
export SURGE_NODE1_PORT SURGE_NODE2_PORT SURGE_NODE3_PORT

.PHONY: all build test image image-rootfs cluster-up cluster-status cluster-scale \
        cluster-down cluster-wipe test-docker clean

all: build

build:
	$(GOBUILD) -o bin/node ./cmd/node
ifeq ($(HAVE_CLUSTERCTL),yes)
	$(GOBUILD) -o bin/clusterctl ./cmd/clusterctl
else
	@echo "make: cmd/clusterctl has no main package yet; built bin/node only" >&2
endif

test:
	$(GO) test -race -timeout 30m ./...

# bin/image holds exactly what the Dockerfile copies: rootfs/ (root-owned)
# and an empty data/ (owned by the node's user in the image). The modes are
# set explicitly so they do not depend on the caller's umask: the node runs
# as uid 10001 and must read the certificates and execute the binaries.
image-rootfs:
	rm -rf $(IMAGE_DIR)
	mkdir -p $(ROOTFS)/usr/local/bin $(ROOTFS)/etc/ssl/certs $(IMAGE_DIR)/data
	GOOS=linux GOARCH=$(IMAGE_GOARCH) $(GOBUILD) -o $(ROOTFS)/usr/local/bin/node ./cmd/node
ifeq ($(HAVE_CLUSTERCTL),yes)
	GOOS=linux GOARCH=$(IMAGE_GOARCH) $(GOBUILD) -o $(ROOTFS)/usr/local/bin/clusterctl ./cmd/clusterctl
else
	@echo "make: cmd/clusterctl has no main package yet; the image ships without clusterctl" >&2
endif
	@test -s $(CA_CERTS) || { echo "make: no CA bundle at $(CA_CERTS) (install ca-certificates or set CA_CERTS=)" >&2; exit 1; }
	cp $(CA_CERTS) $(ROOTFS)/etc/ssl/certs/ca-certificates.crt
	cp deploy/docker/passwd deploy/docker/group deploy/docker/nsswitch.conf $(ROOTFS)/etc/
	chmod -R u=rwX,go=rX $(ROOTFS)
	chmod 0755 $(ROOTFS)/usr/local/bin/*

image: image-rootfs
	$(DOCKER) build --build-arg VERSION=$(VERSION) -t $(SURGE_IMAGE) -f Dockerfile .

cluster-up: image build
	$(COMPOSE) up -d
	@echo "waiting for node1..node3 to be ready"
	@for port in $(SURGE_NODE1_PORT) $(SURGE_NODE2_PORT) $(SURGE_NODE3_PORT); do \
	  i=0; until bin/node health --addr http://localhost:$$port >/dev/null 2>&1; do \
	    i=$$((i+1)); if [ $$i -ge 120 ]; then \
	      echo "node on :$$port is not ready after 120 s; see: $(COMPOSE) logs" >&2; exit 1; fi; \
	    sleep 1; \
	  done; \
	done
	@echo "Surge cluster ready: http://localhost:$(SURGE_NODE1_PORT) http://localhost:$(SURGE_NODE2_PORT) http://localhost:$(SURGE_NODE3_PORT)"

cluster-status:
	$(COMPOSE) exec -T node1 clusterctl status

cluster-scale:
	$(COMPOSE) up -d --scale extra=$(EXTRA)

# Extra nodes keep their data in anonymous volumes that a plain down would
# leave behind, unnamed; they are disposable, so remove them with their
# containers first (they leave the cluster on SIGTERM).
cluster-down:
	$(COMPOSE) rm -f -s -v extra
	$(COMPOSE) down

cluster-wipe:
	$(COMPOSE) down -v

test-docker:
	$(GO) test -race -count=1 -timeout 30m -run 'TestDocker' -v ./systemtest

clean:
	rm -rf bin
