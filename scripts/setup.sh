#!/usr/bin/env bash
# Installs what pedinorm needs on a fresh Debian 12 machine that has Rust, gcc, Python 3.11 and
# node/npm: system libraries (HDF5 from Debian; cmake for the JPEG-LS decoder; dcmtk to write
# and read compressed DICOM test series; dicom3tools for dciodvfy, which checks the DICOM result
# objects against their IODs; poppler-utils to render and read PDF reports; chromium for the web
# viewer's browser test), the pinned Python tools of the interoperability tests (and Playwright,
# which drives Debian's chromium), the Python package built from python/ with maturin, the web viewer's NiiVue bundle from the pinned npm package
# (viewer/package-lock.json) in .data/viewer, and public reference data under .data/: the MNI ICBM152 2009
# T1 with GM/WM maps (from nilearn's wheel) and MNI-space label atlases (from Debian's
# mricron-data). Safe to re-run: every step is skipped when its result is present (the Python
# package's build is cargo's, which rebuilds only what changed).
# With --without-python-package the Python package is not built (scripts/demo.sh, which needs
# only the release binary, passes it).
set -euo pipefail
cd "$(dirname "$0")/.."
python_package=yes
[ "${1:-}" = "--without-python-package" ] && python_package=no

sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
need_apt=()
for package in libhdf5-dev pkg-config cmake g++ unzip dcmtk dicom3tools poppler-utils chromium; do
    dpkg -s "$package" >/dev/null 2>&1 || need_apt+=("$package")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Python tools for interoperability tests (nibabel, dcm2niix, pydicom, highdicom, h5py), pinned.
if [ ! -x .data/venv/bin/python ]; then
    mkdir -p .data
    python3 -m venv .data/venv
fi
if ! cmp -s validation/peers/requirements.txt .data/venv/requirements.txt; then
    .data/venv/bin/pip install -q --disable-pip-version-check -r validation/peers/requirements.txt
    cp validation/peers/requirements.txt .data/venv/requirements.txt
fi

# The Python package (python/, docs/python.md) into the same venv, with maturin and pytest
# pinned. Built with the dev profile into the workspace's target folder, so it shares the
# compiled dependencies of the test build; re-run on every set-up (cargo rebuilds only what
# changed) so the installed package is the checked-out code's.
if ! cmp -s python/requirements.txt .data/venv/python-requirements.txt; then
    .data/venv/bin/pip install -q --disable-pip-version-check -r python/requirements.txt
    cp python/requirements.txt .data/venv/python-requirements.txt
fi
if [ "$python_package" = yes ]; then
    VIRTUAL_ENV="$PWD/.data/venv" .data/venv/bin/maturin develop --quiet --manifest-path python/Cargo.toml
fi

# Playwright for the web viewer's browser test; it drives Debian's chromium (its own browser
# download is never used).
if ! cmp -s tests/browser/requirements.txt .data/venv/browser-requirements.txt; then
    .data/venv/bin/pip install -q --disable-pip-version-check -r tests/browser/requirements.txt
    cp tests/browser/requirements.txt .data/venv/browser-requirements.txt
fi

# The web viewer's NiiVue: the pinned npm package's self-contained ES module, copied where
# `pedinorm serve` finds it (.data/viewer/niivue.js), so the page loads nothing from elsewhere.
if [ ! -f .data/viewer/niivue.js ] || ! cmp -s viewer/package-lock.json .data/viewer/package-lock.json; then
    (cd viewer && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    mkdir -p .data/viewer
    # The source map is not shipped; its reference would only be a dangling request.
    sed '/^\/\/# sourceMappingURL=/d' viewer/node_modules/@niivue/niivue/dist/index.js > .data/viewer/niivue.js.part
    mv .data/viewer/niivue.js.part .data/viewer/niivue.js
    cp viewer/package-lock.json .data/viewer/package-lock.json
fi

# schemathesis for the service's contract test, in its own venv (its dependencies are not the
# imaging tools').
if [ ! -x .data/schemathesis/bin/schemathesis ]; then
    python3 -m venv .data/schemathesis
    .data/schemathesis/bin/pip install -q --disable-pip-version-check "schemathesis==4.32.5"
fi

# MNI ICBM152 2009 T1 with GM/WM maps (BSD-3, shipped inside nilearn's wheel).
mni=.data/mni
if [ ! -f "$mni/t1.nii.gz" ]; then
    tmp=$(mktemp -d)
    .data/venv/bin/pip download -q --no-deps --disable-pip-version-check "nilearn==0.11.1" -d "$tmp"
    unzip -q -o "$tmp"/nilearn-*.whl 'nilearn/datasets/data/mni_icbm152_*' -d "$tmp/x"
    src="$tmp/x/nilearn/datasets/data"
    mkdir -p "$mni"
    cp "$src/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz" "$mni/gm.nii.gz"
    cp "$src/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz" "$mni/wm.nii.gz"
    cp "$src/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" "$mni/t1.nii.gz.part"
    mv "$mni/t1.nii.gz.part" "$mni/t1.nii.gz"
    rm -rf "$tmp"
fi

# MNI-space label atlases from Debian's mricron-data (installed here, not redistributed).
atlas=.data/atlases
if [ ! -f "$atlas/COPYRIGHT" ]; then
    tmp=$(mktemp -d)
    chmod 777 "$tmp"
    (cd "$tmp" && apt-get download -qq mricron-data >/dev/null 2>&1)
    dpkg-deb -x "$tmp"/mricron-data_*.deb "$tmp/x"
    mkdir -p "$atlas"
    templates="$tmp/x/usr/share/mricron/templates"
    cp "$templates"/JHU-WhiteMatter-labels-* "$templates"/HarvardOxford-cort-* "$atlas/"
    cp "$tmp"/x/usr/share/doc/mricron-data/copyright "$atlas/COPYRIGHT"
    rm -rf "$tmp"
fi

echo "setup: ready (.data)"
