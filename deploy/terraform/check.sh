#!/usr/bin/env bash
# Offline checks of deploy/terraform, run by `make test` (idempotent; non-zero exit on failure).
#
#   1. fmt       `tofu fmt -check -recursive` over every module, example and test fixture.
#   2. validate  provider-free parts with the real engine: the prometheus-sidecar module is
#                init'ed, validated and applied; every variables.tf is planned with valid and
#                invalid inputs (tests/deploy/test_terraform_tofu.py).
#                Full `validate` of the AWS modules needs the hashicorp/aws and random provider
#                schemas: it runs only when FLAGSTREAM_TF_PLUGIN_DIR points at a provider mirror
#                (`tofu providers mirror DIR` on a connected machine) or FLAGSTREAM_TF_ONLINE=1
#                lets init reach the registry; otherwise it is skipped with the reason printed.
#   3. checkov   static security/compliance scan, downloads off (--skip-download); intentional
#                deviations carry inline `#checkov:skip=ID:reason` comments.
#   4. contract  tests/deploy/test_terraform_contract.py: parses the HCL (python-hcl2) and
#                asserts the module contract (inputs, outputs, /readyz, drain alignment, ...);
#                readme_tables.py --check: README input/output tables match the code.
#
# OpenTofu comes from the Go module proxy (the only registry for it we can reach): built once
# with `go install` and cached in ~/.cache/flagstream/tools/tofu-<version>/. v1.6.3 is the
# newest release whose go.mod has no `replace` directive, which `go install pkg@version`
# refuses. Without Go it falls back to a `tofu` or `terraform` found on PATH, and says so.
#
# Environment: FLAGSTREAM_TOFU_VERSION (v1.6.3), FLAGSTREAM_TOOLS_DIR (cache dir), PYTHON
# (defaults to .venv/bin/python), CHECKOV (defaults to .venv/bin/checkov),
# FLAGSTREAM_TF_PLUGIN_DIR, FLAGSTREAM_TF_ONLINE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TOFU_VERSION="${FLAGSTREAM_TOFU_VERSION:-v1.6.3}"
TOOLS="${FLAGSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flagstream/tools}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
CHECKOV="${CHECKOV:-$REPO/.venv/bin/checkov}"

passed=0
failed=0
skipped=0
failures=()

WORK="$(mktemp -d "${TMPDIR:-/tmp}/flagstream-tf.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# No user CLI config (credentials, mirrors, plugin caches), no call-home, data dirs in $WORK.
: >"$WORK/empty.tfrc"
export TF_CLI_CONFIG_FILE="$WORK/empty.tfrc"
export TF_IN_AUTOMATION=1
export CHECKPOINT_DISABLE=1

log() { printf '\n== %s\n' "$*"; }
ok() { printf -- '-- ok: %s (%ss)\n' "$1" "$2"; passed=$((passed + 1)); }
ko() { printf -- '-- FAILED: %s\n' "$1"; failed=$((failed + 1)); failures+=("$1"); }
skip() { printf -- '-- skipped: %s\n' "$1"; skipped=$((skipped + 1)); }

# --------------------------------------------------------------------------------------------
# 0. the binary
# --------------------------------------------------------------------------------------------
find_tofu() {
  local dir="$TOOLS/tofu-$TOFU_VERSION"
  local bin="$dir/tofu"
  if [[ -x "$bin" ]]; then
    TF="$bin"
    return 0
  fi
  if command -v go >/dev/null 2>&1; then
    mkdir -p "$dir"
    log "building OpenTofu $TOFU_VERSION from the Go module proxy (once; cached in $dir)"
    local start=$SECONDS
    # flock (when available): parallel runs on one machine build it once.
    if (
      if command -v flock >/dev/null 2>&1; then flock 9; fi
      [[ -x "$bin" ]] && exit 0
      GOBIN="$dir" GOFLAGS=-buildvcs=false \
        go install "github.com/opentofu/opentofu/cmd/tofu@$TOFU_VERSION"
    ) 9>"$dir.lock"; then
      printf -- '-- built %s in %ss\n' "$bin" $((SECONDS - start))
      TF="$bin"
      return 0
    fi
    printf -- '-- go install of OpenTofu %s failed\n' "$TOFU_VERSION"
  fi
  local found
  for found in tofu terraform; do
    if command -v "$found" >/dev/null 2>&1; then
      TF="$(command -v "$found")"
      printf -- '-- FALLBACK: no OpenTofu build available, using %s (%s)\n' "$TF" \
        "$("$TF" version 2>/dev/null | head -1)"
      return 0
    fi
  done
  return 1
}

log "OpenTofu"
if find_tofu; then
  printf -- '-- using %s: %s\n' "$TF" "$("$TF" version 2>/dev/null | head -1)"
  export FLAGSTREAM_TOFU="$TF"
else
  TF=""
  ko "no OpenTofu/Terraform binary: install Go (to build OpenTofu) or put tofu on PATH"
fi

# --------------------------------------------------------------------------------------------
# 1. fmt
# --------------------------------------------------------------------------------------------
log "fmt -check -recursive"
if [[ -n "$TF" ]]; then
  start=$SECONDS
  # The example tfvars sample is checked under a .tfvars name (fmt ignores other suffixes).
  cp "$HERE/examples/multi-region/terraform.tfvars.example" "$WORK/example.tfvars"
  if "$TF" fmt -check -recursive -diff -no-color "$HERE" &&
    "$TF" fmt -check -diff -no-color "$REPO/tests/deploy/fixtures" &&
    "$TF" fmt -check -diff -no-color "$WORK/example.tfvars"; then
    ok "fmt" $((SECONDS - start))
  else
    ko "fmt (run: $TF fmt -recursive deploy/terraform tests/deploy/fixtures)"
  fi
fi

# --------------------------------------------------------------------------------------------
# 2. validate
# --------------------------------------------------------------------------------------------
log "validate"
if [[ -n "$TF" ]]; then
  if [[ -n "${FLAGSTREAM_TF_PLUGIN_DIR:-}" || "${FLAGSTREAM_TF_ONLINE:-0}" == 1 ]]; then
    # Full validation of every module and the example, in a scratch copy of the tree.
    cp -r "$HERE" "$WORK/tree"
    init_args=(-input=false -backend=false -no-color)
    [[ -n "${FLAGSTREAM_TF_PLUGIN_DIR:-}" ]] && init_args+=("-plugin-dir=$FLAGSTREAM_TF_PLUGIN_DIR")
    for dir in modules/prometheus-sidecar modules/relay-region modules/publisher examples/multi-region; do
      start=$SECONDS
      if (cd "$WORK/tree/$dir" && TF_DATA_DIR="$WORK/data-${dir//\//-}" "$TF" init "${init_args[@]}" >/dev/null &&
        TF_DATA_DIR="$WORK/data-${dir//\//-}" "$TF" validate -no-color); then
        ok "validate $dir" $((SECONDS - start))
      else
        ko "validate $dir"
      fi
    done
  else
    skip "validate of relay-region, publisher, multi-region: needs the hashicorp/aws and hashicorp/random provider schemas, which are only on the Terraform/OpenTofu registry (unreachable here). Set FLAGSTREAM_TF_PLUGIN_DIR to a provider mirror or FLAGSTREAM_TF_ONLINE=1 to run it."
  fi
  # Always: what the engine can check without providers (sidecar init/validate/apply, every
  # variables.tf planned with good and bad inputs).
  start=$SECONDS
  if "$PY" -m pytest -q -p no:cacheprovider -m unit "$REPO/tests/deploy/test_terraform_tofu.py"; then
    ok "engine checks without providers (test_terraform_tofu.py)" $((SECONDS - start))
  else
    ko "engine checks without providers (test_terraform_tofu.py)"
  fi
fi

# --------------------------------------------------------------------------------------------
# 3. checkov
# --------------------------------------------------------------------------------------------
log "checkov (downloads off)"
if [[ -x "$CHECKOV" ]]; then
  start=$SECONDS
  # --skip-download: no policy/metadata download from the vendor's platform;
  # external modules are not downloaded either (all modules here are local).
  if BC_API_KEY="" "$CHECKOV" -d "$HERE" --framework terraform --skip-download \
    --download-external-modules false --quiet --compact; then
    ok "checkov" $((SECONDS - start))
  else
    ko "checkov"
  fi
else
  ko "checkov not found at $CHECKOV (pip install checkov into the project venv)"
fi

# --------------------------------------------------------------------------------------------
# 4. contract test
# --------------------------------------------------------------------------------------------
log "module contract (tests/deploy/test_terraform_contract.py)"
start=$SECONDS
if "$PY" -m pytest -q -p no:cacheprovider -m unit "$REPO/tests/deploy/test_terraform_contract.py" &&
  "$PY" "$HERE/readme_tables.py" --check; then
  ok "contract" $((SECONDS - start))
else
  ko "contract"
fi

echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
printf 'terraform-checks: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
((failed == 0))
