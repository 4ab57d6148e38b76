# The two commands a new machine needs: `make run` starts a single node with
# the default policies on 127.0.0.1:8080; `make test` runs every check CI runs.

GO ?= go

.PHONY: run test build bench

run:
	$(GO) run ./cmd/ratelimitd serve

build:
	$(GO) build -o bin/ratelimitd ./cmd/ratelimitd

# test installs redis-server and nginx-light when missing, starts a private
# Redis on a free loopback port, runs vet and the race-enabled tests, and
# stops it.
test:
	./scripts/test.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
