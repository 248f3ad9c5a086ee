# shellcheck shell=bash
# Shared bootstrap of ./scripts/test and ./scripts/start (sourced, never run).
#
# - VK_ROOT: the repository (= the pack folder);
# - vk_find_comfyui: where ComfyUI is: $COMFYUI_DIR, else <repo>/../shared/comfyui (the test snapshot),
#   else <repo>/.comfyui (cloned by an earlier ./scripts/start). Read only: nothing here writes into it;
# - vk_ensure_venv: the .venv (or $VISIONKIT_VENV), created when missing and installed once per change of
#   the requirement / constraint files or of this file: the torch trio pinned by scripts/constraints.txt,
#   requirements.txt, tests/requirements.txt and ComfyUI's requirements.txt, then the two known clashes
#   mended (onnxruntime vs onnxruntime-gpu, opencv-python vs opencv-python-headless; see NOTES.md).
#   A stamp inside the venv holds the hash of those inputs, so a re-run with nothing changed is instant.
#   VISIONKIT_REINSTALL=1 forces the install.
# - Two ComfyUI versions: VK_COMFYUI_ALL lists every ComfyUI the tests run against (colon-separated; with
#   COMFYUI_DIR unset: ../shared/comfyui and ../shared/comfyui-0.33 when present; VISIONKIT_COMFYUI_DIRS
#   overrides). The other versions' requirements go into the same venv, except the three packages each
#   version pins to its own release (comfyui-frontend-package, -workflow-templates, -embedded-docs): one
#   venv holds one of each, the first version's.
# - vk_ensure_frontends: each version's pinned frontend and the newest one the tests use (VK_NEWEST_FRONTEND)
#   as unpacked wheels in $VK_VENV/visionkit-frontends/<version>/ (pip download --no-deps from the package
#   index, once); the test servers get --front-end-root on them (tests/vk_testing/comfy_server.py).

VK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
VK_VENV="${VISIONKIT_VENV:-$VK_ROOT/.venv}"
if [ -x "$VK_VENV/Scripts/python.exe" ] && [ ! -e "$VK_VENV/bin/python" ]; then
    VK_PY="$VK_VENV/Scripts/python.exe"  # Git Bash on Windows
else
    VK_PY="$VK_VENV/bin/python"
fi
VK_STAMP="$VK_VENV/.visionkit-install-stamp"
VK_CONSTRAINTS="$VK_ROOT/scripts/constraints.txt"
VK_COMFYUI=""
VK_COMFYUI_ALL=""
VK_COMFYUI_URL="https://github.com/comfyanonymous/ComfyUI"
VK_FRONTENDS="${VISIONKIT_FRONTENDS:-$VK_VENV/visionkit-frontends}"
VK_NEWEST_FRONTEND="${VISIONKIT_NEWEST_FRONTEND:-1.58.1}"  # keep in step with tests/vk_testing/comfy_server.py
# Packages every ComfyUI version pins to its own release: never installed from the other versions' lists.
VK_PER_VERSION_PKGS='^comfyui[-_](frontend[-_]package|workflow[-_]templates|embedded[-_]docs)'

vk_say() { printf '[visionkit] %s\n' "$*" >&2; }
vk_die() { printf '[visionkit] ERROR: %s\n' "$*" >&2; exit 1; }

vk_hash() {  # stdin -> hex digest
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 | cut -d' ' -f1
    else cksum | tr ' ' '-'
    fi
}

# ------------------------------------------------------------------ ComfyUI
vk_find_comfyui() {  # sets VK_COMFYUI to an absolute path, or "" when none is found
    VK_COMFYUI=""
    if [ -n "${COMFYUI_DIR:-}" ]; then
        [ -f "$COMFYUI_DIR/main.py" ] && [ -f "$COMFYUI_DIR/folder_paths.py" ] \
            || vk_die "COMFYUI_DIR=$COMFYUI_DIR is not a ComfyUI checkout (no main.py / folder_paths.py there)"
        VK_COMFYUI="$(cd "$COMFYUI_DIR" && pwd -P)"
    elif [ -f "$VK_ROOT/../shared/comfyui/main.py" ]; then
        VK_COMFYUI="$(cd "$VK_ROOT/../shared/comfyui" && pwd -P)"
    elif [ -f "$VK_ROOT/.comfyui/main.py" ]; then
        VK_COMFYUI="$VK_ROOT/.comfyui"
    fi
    VK_COMFYUI_ALL="$VK_COMFYUI"
    if [ -n "${VISIONKIT_COMFYUI_DIRS:-}" ]; then
        VK_COMFYUI_ALL="$VISIONKIT_COMFYUI_DIRS"
        VK_COMFYUI="${VISIONKIT_COMFYUI_DIRS%%:*}"
    elif [ -z "${COMFYUI_DIR:-}" ] && [ -n "$VK_COMFYUI" ] && [ -f "$VK_ROOT/../shared/comfyui-0.33/main.py" ]; then
        VK_COMFYUI_ALL="$VK_COMFYUI:$(cd "$VK_ROOT/../shared/comfyui-0.33" && pwd -P)"
    fi
}

vk_comfyui_others() {  # the ComfyUI checkouts of VK_COMFYUI_ALL after the first, one per line
    printf '%s\n' "$VK_COMFYUI_ALL" | tr ':' '\n' | tail -n +2 | grep -v '^$' || true
}

vk_pinned_frontend() {  # $1: a ComfyUI checkout -> the comfyui-frontend-package version it pins
    sed -n 's/^comfyui[-_]frontend[-_]package *== *\([0-9A-Za-z.]*\).*/\1/p' "$1/requirements.txt" 2>/dev/null | head -n 1
}

vk_comfyui_version() {  # prints ComfyUI's version from comfyui_version.py (no import)
    sed -n 's/^__version__ *= *["'"'"']\([^"'"'"']*\)["'"'"'].*/\1/p' "$1/comfyui_version.py" 2>/dev/null | head -n 1
}

vk_clone_comfyui() {  # clones ComfyUI into <repo>/.comfyui (./scripts/start only); $1: the options given, for the message
    command -v git >/dev/null 2>&1 || vk_die "git is not installed, so ComfyUI cannot be cloned. Install git, or point at an existing checkout: COMFYUI_DIR=/path/to/ComfyUI $0"
    local dest="$VK_ROOT/.comfyui" part="$VK_ROOT/.comfyui.partial"
    rm -rf "$part"
    vk_say "no ComfyUI found (COMFYUI_DIR unset, no ../shared/comfyui, no .comfyui): cloning $VK_COMFYUI_URL into $dest"
    local t=()
    command -v timeout >/dev/null 2>&1 && t=(timeout 900)
    if ! GIT_TERMINAL_PROMPT=0 ${t[@]+"${t[@]}"} git clone --depth 1 "$VK_COMFYUI_URL" "$part" </dev/null; then
        rm -rf "$part"
        vk_die "could not clone ComfyUI from $VK_COMFYUI_URL (no network, or GitHub unreachable from here).
    Point at an existing ComfyUI checkout instead:
        COMFYUI_DIR=/path/to/ComfyUI $0${1:+ $1}"
    fi
    mv "$part" "$dest"
    VK_COMFYUI="$dest"
}

# ------------------------------------------------------------------ the venv
vk_pick_python() {  # prints a Python >= 3.10 to build the venv with
    local c
    for c in "${VISIONKIT_PYTHON:-}" python3.11 python3 python; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

vk_requirement_files() {  # the install inputs, one per line (ComfyUI's when one was found)
    printf '%s\n' "$VK_CONSTRAINTS" "$VK_ROOT/requirements.txt" "$VK_ROOT/tests/requirements.txt"
    if [ -n "$VK_COMFYUI" ] && [ -f "$VK_COMFYUI/requirements.txt" ]; then
        printf '%s\n' "$VK_COMFYUI/requirements.txt"
    fi
    local other
    while IFS= read -r other; do
        [ -f "$other/requirements.txt" ] && printf '%s\n' "$other/requirements.txt"
    done < <(vk_comfyui_others)
}

vk_install_hash() {  # contents (not paths) of the inputs + this file + the interpreter and platform
    {
        local f
        while IFS= read -r f; do
            printf '== %s\n' "$(basename "$(dirname "$f")")/$(basename "$f")"
            cat "$f"
        done < <(vk_requirement_files)
        printf '== env.sh\n'
        cat "$VK_ROOT/scripts/lib/env.sh"
        "$VK_PY" -c 'import sys, platform; print(sys.version, platform.machine(), sys.platform)'
    } | vk_hash
}

vk_pip() {
    "$VK_PY" -m pip --disable-pip-version-check --no-input "$@"
}

vk_pip_install() {  # no progress bars in CI logs
    local quiet=()
    [ -t 1 ] || quiet=(--progress-bar off)
    vk_pip install ${quiet[@]+"${quiet[@]}"} "$@"
}

vk_dists() {  # prints "name version" for the distributions that clash, "-" when missing
    "$VK_PY" - <<'EOF'
import importlib.metadata as md
for name in ("onnxruntime", "onnxruntime-gpu", "opencv-python", "opencv-python-headless"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
EOF
}

vk_fix_clashes() {  # --quick: only when a clashing distribution is installed (no import check)
    # insightface depends on onnxruntime (CPU) and basicsr/realesrgan (tests)/insightface on opencv-python (GUI).
    # Each pair writes the same folder (onnxruntime/, cv2/), so: remove the unwanted one, then reinstall
    # the wanted one over the remains, same version, no deps. onnxruntime-gpu only exists (and is only
    # installed by requirements.txt) on x86-64 Linux / Windows; elsewhere onnxruntime stays.
    local name ver ort="-" ort_gpu="-" cv="-" cv_headless="-"
    while read -r name ver; do
        case "$name" in
            onnxruntime) ort="$ver" ;;
            onnxruntime-gpu) ort_gpu="$ver" ;;
            opencv-python) cv="$ver" ;;
            opencv-python-headless) cv_headless="$ver" ;;
        esac
    done < <(vk_dists)
    local remove=() reinstall=()
    if [ "$ort_gpu" != "-" ]; then
        [ "$ort" != "-" ] && remove+=(onnxruntime)
        reinstall+=("onnxruntime-gpu==$ort_gpu")
    fi
    [ "$cv" != "-" ] && remove+=(opencv-python)
    [ "$cv_headless" != "-" ] && reinstall+=("opencv-python-headless==$cv_headless")
    if [ ${#remove[@]} -eq 0 ] && [ "${1:-}" = "--quick" ]; then
        return 0  # the check of every run: no clashing distribution installed
    fi
    if [ ${#remove[@]} -eq 0 ] && "$VK_PY" -c '
import onnxruntime, cv2
assert "CPUExecutionProvider" in onnxruntime.get_available_providers()' >/dev/null 2>&1; then
        return 0  # nothing clashes and both import: leave the files alone
    fi
    if [ ${#remove[@]} -gt 0 ]; then
        vk_say "removing clashing packages: ${remove[*]}"
        vk_pip uninstall -y "${remove[@]}" || return 1
    fi
    if [ ${#reinstall[@]} -gt 0 ]; then
        vk_say "re-installing over the shared folders: ${reinstall[*]}"
        vk_pip_install -c "$VK_CONSTRAINTS" --force-reinstall --no-deps "${reinstall[@]}" || return 1
    fi
}

vk_install() {
    local reqs=() f others=() other
    while IFS= read -r other; do others+=("$other/requirements.txt"); done < <(vk_comfyui_others)
    while IFS= read -r f; do
        [ "$f" = "$VK_CONSTRAINTS" ] && continue
        case " ${others[*]-} " in *" $f "*) continue ;; esac  # the other versions: below
        reqs+=(-r "$f")
    done < <(vk_requirement_files)
    [ -n "$VK_COMFYUI" ] || vk_say "no ComfyUI found: its requirements are not installed (the real-ComfyUI tests will skip)"
    vk_say "installing the test environment into $VK_VENV (first run: several GB, a few minutes)"
    # basicsr (only the tests' Real-ESRGAN reference, tests/requirements.txt) is an sdist whose setup_requires
    # names torch: built in pip's isolated build environment it downloads a second torch (~5.5 GB). So build it
    # first, without isolation, against the venv's own torch; the resolver run below then finds it installed.
    if ! "$VK_PY" -c 'import importlib.metadata as m; m.version("basicsr")' >/dev/null 2>&1; then
        vk_pip_install -c "$VK_CONSTRAINTS" torch torchvision torchaudio setuptools wheel cython numpy || return 1
        vk_pip_install -c "$VK_CONSTRAINTS" --no-build-isolation basicsr || return 1
    fi
    # One resolver run for everything, with the torch trio pinned by the constraints file so that no
    # requirement can pull another torch (a mismatched torchaudio breaks transformers; NOTES.md).
    vk_pip_install -c "$VK_CONSTRAINTS" torch torchvision torchaudio "${reqs[@]}" || return 1
    # The other ComfyUI versions: what they need beyond the first (0.33: comfy-kitchen, comfy-aimdo,
    # simpleeval, ...), without their own frontend / templates / docs pins (vk_ensure_frontends).
    for f in ${others[@]+"${others[@]}"}; do
        [ -f "$f" ] || continue
        local extra="$VK_VENV/.visionkit-extra-requirements.txt"
        grep -Eiv "$VK_PER_VERSION_PKGS" "$f" >"$extra"
        vk_say "installing the requirements of a second ComfyUI ($f, its frontend pins aside)"
        vk_pip_install -c "$VK_CONSTRAINTS" -r "$extra" || return 1
    done
    vk_fix_clashes || return 1
}

vk_frontend_versions() {  # every frontend the tests use, one per line: each version's pin, then the newest
    local c
    while IFS= read -r c; do
        [ -n "$c" ] && vk_pinned_frontend "$c"
    done < <(printf '%s\n' "$VK_COMFYUI_ALL" | tr ':' '\n')
    printf '%s\n' "$VK_NEWEST_FRONTEND"
}

vk_ensure_frontends() {  # unpacked frontend wheels for --front-end-root (the installed one is used as is)
    local v dest tmp installed
    installed="$("$VK_PY" -c 'import importlib.metadata as m; print(m.version("comfyui-frontend-package"))' 2>/dev/null || true)"
    while IFS= read -r v; do
        [ -n "$v" ] && [ "$v" != "$installed" ] || continue
        dest="$VK_FRONTENDS/$v"
        [ -f "$dest/comfyui_frontend_package/static/index.html" ] && continue
        vk_say "fetching comfyui-frontend-package $v for the browser tests into $dest"
        tmp="$(mktemp -d)"
        if vk_pip download --no-deps -q -d "$tmp" "comfyui-frontend-package==$v" \
            && rm -rf "$dest.partial" && "$VK_PY" -m zipfile -e "$tmp"/comfyui_frontend_package-*.whl "$dest.partial"; then
            rm -rf "$dest" && mv "$dest.partial" "$dest"
        else
            vk_say "could not fetch comfyui-frontend-package $v: the browser tests that use it will fail"
        fi
        rm -rf "$tmp"
    done < <(vk_frontend_versions | sort -u)
}

vk_ensure_venv() {
    if [ ! -x "$VK_PY" ]; then
        [ -e "$VK_VENV" ] && vk_die "$VK_VENV exists but has no working Python ($VK_PY). Remove it (rm -rf '$VK_VENV') and run $0 again."
        local py
        py="$(vk_pick_python)" || vk_die "no Python >= 3.10 with the venv module found (tried python3.11, python3). Install one (Debian: apt install python3 python3-venv) or set VISIONKIT_PYTHON=/path/to/python3."
        vk_say "creating $VK_VENV with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
        "$py" -m venv "$VK_VENV" || vk_die "'$py -m venv $VK_VENV' failed (Debian: apt install python3-venv)"
    fi
    "$VK_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || vk_die "$VK_VENV has Python $("$VK_PY" -c 'import sys; print(sys.version.split()[0])'); VisionKit needs >= 3.10. Remove the venv and run $0 again."
    # One install at a time per venv (two terminals, or a test run and ./scripts/start).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$VK_VENV/.visionkit-install.lock"
        if ! flock -n 9; then
            vk_say "another install into $VK_VENV is running; waiting for it"
            flock 9
        fi
    fi
    local want
    want="$(vk_install_hash)"
    if [ "${VISIONKIT_REINSTALL:-0}" != "1" ] && [ -f "$VK_STAMP" ] && [ "$(cat "$VK_STAMP")" = "$want" ]; then
        # installed; a later `pip install` by hand may have pulled the clashing builds back in
        vk_fix_clashes --quick || vk_die "mending the onnxruntime / opencv clash failed (see pip's message above)"
        exec 9>&-
        return 0
    fi
    local t0=$SECONDS
    rm -f "$VK_STAMP"
    vk_install || vk_die "installing the environment failed (see pip's message above). Fix it and run $0 again; nothing is marked installed until it succeeds."
    printf '%s\n' "$want" >"$VK_STAMP"
    vk_say "environment ready in $((SECONDS - t0)) s"
    exec 9>&-
}

vk_versions() {  # one line per component, for the header
    "$VK_PY" - <<'EOF'
import importlib.metadata as md, platform
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
parts = [f"python {platform.python_version()}"]
for n in ("torch", "torchvision", "torchaudio", "diffusers", "transformers", "onnxruntime-gpu", "onnxruntime",
          "opencv-python-headless", "numpy"):
    if v(n):
        parts.append(f"{n} {v(n)}")
print("  " + ", ".join(parts))
EOF
}
