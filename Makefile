# kube-eip: the seed's targets (deploy, deploy-agent, undeploy, undeploy-agent,
# docker-build-*, docker-push) and the project's own (test, demo, lint, certs). `make help`
# lists them. kubectl builds the kustomize trees itself (kubectl kustomize, apply -k): no
# kustomize binary is needed, and no file in config/ is edited to set an image.

# The images. IMG is the operator's, as in the seed; the agent's and eipctl's have their own.
# As in the seed, IMG given (on the command line or in the environment) also names the image
# of the agent's targets (deploy-agent, docker-build-agent) and of eipctl's
# (docker-build-eipctl, docker-build-ctl) unless AGENT_IMG or EIPCTL_IMG is given too.
VERSION ?= 0.1.0
IMG ?= kube-eip/eip-operator:$(VERSION)
AGENT_IMG ?= kube-eip/eip-agent:$(VERSION)
EIPCTL_IMG ?= kube-eip/eipctl:$(VERSION)
given = $(filter environment environment override command line override,$(origin $(1)))
ifneq ($(call given,IMG),)
ifeq ($(call given,AGENT_IMG),)
deploy-agent docker-build-agent: AGENT_IMG = $(IMG)
endif
ifeq ($(call given,EIPCTL_IMG),)
docker-build-eipctl docker-build-ctl: EIPCTL_IMG = $(IMG)
endif
endif
# docker-buildx: the architectures of the images.
PLATFORMS ?= linux/amd64,linux/arm64
# The commit the images' binaries print with --version (the image build sees no .git).
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# docker, podman, nerdctl or buildah: each has `build` and `push`.
CONTAINER_TOOL ?= docker
KUBECTL ?= kubectl
# TLS=false deploys the operator without TLS to the agents (config/plaintext).
TLS ?= true
# Where `make certs` keeps the CA and the certificates it made (outside git).
CERTS_DIR ?= .cache/certs
# Call with ignore-not-found=true to ignore objects already gone when undeploying.
ignore-not-found ?= false

OPERATOR_CONFIG := $(if $(filter false,$(TLS)),config/plaintext,config/default)
AGENT_CONFIG := $(if $(filter false,$(TLS)),config/plaintext-agent,config/agent)

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

# $(call kustomize,DIR,IMAGE-NAME,IMAGE): the manifests of DIR with IMAGE-NAME replaced by
# IMAGE, through an overlay in a temporary folder (what `kustomize edit set image` would
# write into DIR).
define kustomize
tmp=$$(mktemp -d .cache/kustomize-XXXXXX) && trap 'rm -rf "$$tmp"' EXIT && \
printf 'resources:\n  - ../../%s\nimages:\n  - name: %s\n    newName: %s\n' '$(1)' '$(2)' '$(3)' \
  > "$$tmp/kustomization.yaml" && \
$(KUBECTL) kustomize "$$tmp"
endef

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m [VAR=value]\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

node_modules: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch node_modules

.PHONY: build
build: node_modules ## Compile the TypeScript (dist/) and record the commit --version prints.
	npx tsc -p tsconfig.json
	scripts/build-info.sh

.PHONY: lint
lint: node_modules ## eslint and prettier.
	npx eslint .
	npx prettier --check .

.PHONY: test
test: ## Every test (scripts/test.sh: lint, unit, and as root the lab and kube-apiserver tests).
	scripts/test.sh

.PHONY: demo
demo: ## The demo: a site in network namespaces, an EIP bound, traffic both ways (root).
	scripts/demo.sh

.PHONY: manifests
manifests: ## Print every kustomize tree as it will be applied (nothing is generated).
	@for dir in config/crd config/default config/agent config/samples; do \
	  echo "# --- $$dir"; $(KUBECTL) kustomize "$$dir"; done

##@ Build

.PHONY: docker-build-operator
docker-build-operator: ## Build the operator's image IMG.
	$(CONTAINER_TOOL) build --build-arg KUBE_EIP_COMMIT=$(COMMIT) --target operator -t $(IMG) .

.PHONY: docker-build-agent
docker-build-agent: ## Build the agent's image AGENT_IMG.
	$(CONTAINER_TOOL) build --build-arg KUBE_EIP_COMMIT=$(COMMIT) --target agent -t $(AGENT_IMG) .

.PHONY: docker-build-eipctl
docker-build-eipctl: ## Build eipctl's image EIPCTL_IMG.
	$(CONTAINER_TOOL) build --build-arg KUBE_EIP_COMMIT=$(COMMIT) --target eipctl -t $(EIPCTL_IMG) .

.PHONY: docker-build-ctl
docker-build-ctl: docker-build-eipctl ## The seed's name of docker-build-eipctl.

.PHONY: docker-buildx
docker-buildx: ## Build and push IMG, AGENT_IMG and EIPCTL_IMG for PLATFORMS (docker buildx, a builder of its own).
	- $(CONTAINER_TOOL) buildx create --name kube-eip-builder
	$(CONTAINER_TOOL) buildx use kube-eip-builder
	trap '$(CONTAINER_TOOL) buildx rm kube-eip-builder' EXIT && \
	for target in operator:$(IMG) agent:$(AGENT_IMG) eipctl:$(EIPCTL_IMG); do \
	  $(CONTAINER_TOOL) buildx build --push --platform=$(PLATFORMS) --build-arg KUBE_EIP_COMMIT=$(COMMIT) \
	    --target "$${target%%:*}" -t "$${target#*:}" . || exit 1; \
	done

.PHONY: image-test
image-test: build ## Build the agent's and operator's images with buildah (no Docker daemon) and run them in a lab with runc (root).
	@[ "$$(id -u)" = 0 ] || { echo "image-test: needs root (network namespaces, runc)" >&2; exit 1; }
	@for tool in buildah runc debootstrap; do command -v $$tool >/dev/null || \
	  { echo "image-test: needs $$tool (scripts/setup.sh installs it)" >&2; exit 1; }; done
	node --test --test-concurrency=1 --test-reporter=spec dist/e2e/images.privileged.test.js

.PHONY: docker-push
docker-push: ## Push the image IMG (the agent's too, as in the seed: make docker-push IMG=<agent image>).
	$(CONTAINER_TOOL) push $(IMG)

##@ Deployment

.PHONY: install
install: ## Install the CRD only (kubebuilder's install).
	$(KUBECTL) apply -k config/crd

.PHONY: uninstall
uninstall: ## Remove the CRD (and with it every EipBinding).
	$(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -k config/crd

.PHONY: run
run: build ## Run the operator here against the current kubeconfig's cluster (after make install); ARGS= its flags.
	node dist/src/bin/eip-operator.js $(ARGS)

.PHONY: deploy
deploy: ## Install the CRD, RBAC and the operator with image IMG (TLS=false: without TLS to the agents).
	@mkdir -p .cache
	$(call kustomize,$(OPERATOR_CONFIG),eip-operator,$(IMG)) | $(KUBECTL) apply -f -

.PHONY: undeploy
undeploy: ## Remove the operator, its RBAC and the CRD (and with it every EipBinding).
	$(KUBECTL) kustomize $(OPERATOR_CONFIG) | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: deploy-agent
deploy-agent: ## Install the agent DaemonSet with image AGENT_IMG and the ConfigMap eip-agent-cm.
	@mkdir -p .cache
	$(call kustomize,$(AGENT_CONFIG),eip-agent,$(AGENT_IMG)) | $(KUBECTL) apply -f -

.PHONY: undeploy-agent
undeploy-agent: ## Remove the agents (the kernel state they wrote stays on the nodes).
	$(KUBECTL) kustomize $(AGENT_CONFIG) | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: certs
certs: build ## Make the CAs, the operator's Secret (applied) and NODES' agent files (kept in CERTS_DIR: copy nodes/<node>/ to each node's /etc/kube-eip/pki).
	node dist/src/bin/kube-eip-certs.js --dir $(CERTS_DIR) $(foreach n,$(NODES),--node $(n)) | $(KUBECTL) apply -f -

.PHONY: deploy-certmanager
deploy-certmanager: ## The TLS Secrets from cert-manager instead of make certs (config/certmanager).
	$(KUBECTL) apply -k config/certmanager

.PHONY: undeploy-certmanager
undeploy-certmanager: ## Remove the cert-manager issuers and certificates of kube-eip.
	$(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -k config/certmanager
