#!/usr/bin/env bash
# The whole test suite on a fresh machine with Python 3.11 and root: installs
# the system packages the report and browser tests use (Debian's chromium,
# poppler-utils for pdftoppm, pango for WeasyPrint, PostgreSQL for the
# database tests, dicom3tools, dcmtk and Orthanc for the DICOM tests) when they
# are missing,
# installs ceuskit with its test extras (pinned), then runs the linter, the
# type checker and pytest.  Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0.so.0' || need+=(libpango-1.0-0 libpangoft2-1.0-0)
fc-list 2>/dev/null | grep -qi dejavu || need+=(fonts-dejavu-core)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Independent DICOM tools: dicom3tools' validator, dcmtk's SCU/SCP, Orthanc as a PACS.
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing system packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
"$PY" -m pip install --disable-pip-version-check -q -e ".[test]"
"$PY" -m ruff check src tests benchmarks
"$PY" -m mypy
"$PY" -m pytest -q "$@"
