#!/usr/bin/env bash
# Idempotent set-up used by `make run`, `make test` and CI: installs only what is missing.
#  1. Debian packages (Orthanc + DICOMweb plugin, dcmtk, dicom3tools, chromium, tesseract)
#  2. a virtualenv in .venv with pacslabel installed editable with its dev extras
#  3. the prebuilt OHIF viewer (npm package @ohif/app) unpacked under var/ohif/
# A second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

OHIF_VERSION="${OHIF_VERSION:-3.12.10}"
VENV="${VENV:-.venv}"
APT_PACKAGES=(orthanc orthanc-dicomweb dcmtk dicom3tools chromium tesseract-ocr tesseract-ocr-eng
              fonts-dejavu-core python3-venv nodejs npm ca-certificates curl)

log() { printf 'setup: %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  # node/npm may come from elsewhere (e.g. NodeSource); only install Debian's when the commands are absent.
  local wanted=()
  for pkg in "${missing[@]}"; do
    case "$pkg" in
      nodejs) command -v node >/dev/null || wanted+=("$pkg") ;;
      npm) command -v npm >/dev/null || wanted+=("$pkg") ;;
      python3-venv) python_for_venv >/dev/null 2>&1 || wanted+=("$pkg") ;;
      *) wanted+=("$pkg") ;;
    esac
  done
  [ ${#wanted[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${wanted[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
  # Debian starts a system Orthanc on 8042/4242 where systemd runs; pacslabel runs its own on loopback.
  if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
    $sudo systemctl disable --now orthanc || true
  fi
}

python_for_venv() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

install_virtualenv() {
  local stamp="$VENV/.pacslabel-installed"
  local digest
  digest=$(sha256sum pyproject.toml | cut -c1-16)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    return 0
  fi
  local python
  python=$(python_for_venv) || { log "Python 3.11 with venv is required"; exit 1; }
  [ -x "$VENV/bin/python" ] || { log "creating $VENV with $python"; "$python" -m venv "$VENV"; }
  log "installing pacslabel (editable, with dev extras) into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  echo "$digest" > "$stamp"
}

install_ohif() {
  local target="var/ohif/$OHIF_VERSION"
  [ -f "$target/dist/index.html" ] && return 0
  log "fetching the OHIF viewer @ohif/app@$OHIF_VERSION"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null 2>&1)
  mkdir -p "$target"
  tar -xzf "$tmp"/ohif-app-*.tgz -C "$target" --strip-components=1 package/dist package/package.json
  rm -rf "$tmp"
  [ -f "$target/dist/index.html" ] || { log "OHIF dist has no index.html"; exit 1; }
  ln -sfn "$OHIF_VERSION" var/ohif/current
}

install_debian_packages
install_virtualenv
install_ohif
log "ready"
