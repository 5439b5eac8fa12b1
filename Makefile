# pibake — see README.md. `make test` is what CI runs.
GO       ?= go
BIN      := bin/pibake
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GOBIN    := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2
# The platforms pibake must build on, pure Go (no cgo).
CROSS    := linux/amd64 linux/arm64 darwin/arm64 windows/amd64
FUZZTIME ?= 20s

export CGO_ENABLED = 0

.PHONY: all build test unit lint deps cross bench fuzz update demo e2e e2e-record clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pibake

## test: set up the tools, lint, build for every platform, run every test.
test: deps lint cross unit

## unit: go test, its files on tmpfs when there is room (.ci/testtmp says why).
unit:
	@dir=$$(bash .ci/testtmp) && echo "test files under $$dir" && \
	  trap 'rm -rf "$$dir"' EXIT INT TERM && TMPDIR=$$dir $(GO) test -count=1 -timeout 30m ./...

## deps: install what the tests need (Debian tools as root, staticcheck).
deps:
	bash .ci/deps
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...
	$(GO) mod tidy -diff

cross:
	@for p in $(CROSS); do \
	  echo "build $$p"; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/pibake || exit 1; \
	done

## bench: benchmarks, with figures relative to a baseline in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: a short fuzzing smoke run (not part of test).
fuzz:
	$(GO) test ./recipes -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME)
	$(GO) test ./builder/diskimg -run '^$$' -fuzz FuzzOpen -fuzztime $(FUZZTIME)
	$(GO) test ./firstboot -run '^$$' -fuzz FuzzShellQuote -fuzztime $(FUZZTIME)
	$(GO) test ./firstboot -run '^$$' -fuzz FuzzYAMLQuote -fuzztime $(FUZZTIME)
	$(GO) test ./internal/safetext -run '^$$' -fuzz FuzzClean -fuzztime $(FUZZTIME)
	$(GO) test ./internal/watchterm -run '^$$' -fuzz FuzzDisplay -fuzztime $(FUZZTIME)

## demo: build recipes/examples/lab.hcl offline, against a generated
## Raspberry Pi OS-shaped image (no download, no tool but Go: no deps;
## the image is the same bytes on every run, so are the node images).
## DEMO_FLAGS=--force rebuilds every image: the same SHA256SUMS again.
DEMO ?= out/demo
DEMO_FLAGS ?=
demo: build
	$(GO) run ./internal/testimage/mkimage -o $(DEMO)/base.img
	$(BIN) build recipes/examples/lab.hcl --image $(DEMO)/base.img --out $(DEMO) --cache $(DEMO)/cache $(DEMO_FLAGS)
	@# One shell line: echo is a shell builtin, and PATH may hold only go.
	@echo; echo "Images are in $(DEMO). Look inside one with:"; \
	  echo "  $(BIN) inspect $(DEMO)/pi-server.img"; \
	  echo "  (cd $(DEMO) && sha256sum -c SHA256SUMS)"

## e2e: boot Bookworm and Trixie images under QEMU with real systemd and
## cloud-init (root; builds the Debian arm64 look-alikes once, cached; see
## README). E2E_RUN narrows it, e.g. E2E_RUN=TestFirstBoot/trixie/e2e-server;
## PIBAKE_E2E_BREAK=... breaks one thing on purpose (internal/e2e).
E2E_RUN ?= TestFirstBoot
e2e:
	bash .ci/deps e2e
	$(GO) test -tags e2e -count=1 -timeout 150m -v -run '$(E2E_RUN)' ./internal/e2e

## e2e-record: run e2e and record that it passed for the current inputs
## (.ci/e2e-passed; commit it), so CI runs it again only after a change.
e2e-record: e2e
	bash .ci/e2e-inputs > .ci/e2e-passed
	@echo "recorded: .ci/e2e-passed = $$(cat .ci/e2e-passed)"

## update: rewrite golden files after an intended change; review the diff.
update:
	$(GO) test ./recipes ./firstboot ./cmd/pibake -update

clean:
	rm -rf bin out/demo
