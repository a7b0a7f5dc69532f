#!/usr/bin/env bash
# One GPU session's checks (CUDA model tests, bench-gpu's settings), prepared on the CPU machine and run once on a lent GPU.
#
#   bash tests/gpu_session.sh pack [--with-dev]   here, before the device call: fills .gpu/ (ignored)
#   bash tests/gpu_session.sh run                 there: the device tool's `run`, carry [".gpu"]
#   bash tests/gpu_session.sh setup               there: only what `run` does first (venv, nginx)
#
# The device machine is bare and offline: its python3 holds a CUDA PyTorch, but no Flask, uWSGI,
# PDFium, Nginx or weights, and `make setup` would try to download them. So `pack` puts what it
# lacks into .gpu/ (wheels for its Python 3.12, Debian's nginx unpacked, the ppocr weights: 40 MiB,
# 60 with --with-dev, of the 64 MiB a call carries) and `run` builds .venv from them there, then:
#   1. PARSE_TEST_DEVICE=cuda:0 pytest -m model for the default family (ppocr): easyocr's CRAFT
#      weights (83 MB) alone pass what one call carries, and the structure models' (15 MB) would
#      not fit beside the dev pages, so their tests wait for another run;
#   2. bench-gpu (python -m tests.bench_gpu: `make bench-gpu` without its download steps) at
#      concurrency 1,8,32,64: the batched defaults; --det-bucket 128 --cudnn; --precision fp16;
#      --processes 2.
# Each step has its own timeout and the whole run stays under RUN_SECONDS (default 300 s): with a
# machine's start (1-2 min) twice, a session of 15 device minutes can read the first run, fix, and
# run it again (the machine goes back after 30 s idle, so the second run starts a fresh one).
# Logs go to $OUT (the device tool brings back at most 8 files) and to stdout.
# --with-dev also carries the SROIE pages and line crops of ../shared/ocr-dev and its scorer,
# for the CER and identical-lines goals; they stay in the ignored .gpu/ and are never committed.
set -uo pipefail
cd "$(dirname "$0")/.."

GPU_DIR=.gpu
PY_VERSION=${PY_VERSION:-3.12}  # the device python's
# Wheels the device image lacks, at the versions this checkout's venv is tested with. pyuwsgi is
# uWSGI built as a wheel (the uwsgi package is a source build): same core, `uwsgi` command.
WHEELS=(flask==3.1.3 werkzeug==3.1.9 itsdangerous==2.2.0 blinker==1.9.0 pyclipper==1.4.0
        pypdfium2==5.15.2 reportlab==5.1.0 pyuwsgi==2.0.30.post1)
PPOCR_WEIGHTS=(ppocrv6_det_small.pt ppocrv6_rec_small.pt ppocr_mobile_v2.0_cls.pt ppocrv6_dict.txt)
CARRY_LIMIT_MIB=62

pack() {
    rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/weights" "$GPU_DIR/debs"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$GPU_DIR/wheels" "${WHEELS[@]}" || exit 1
    for f in "${PPOCR_WEIGHTS[@]}"; do
        [ -f "weights/$f" ] || { echo "weights/$f is missing: run make weights first"; exit 1; }
        cp -l "weights/$f" "$GPU_DIR/weights/" 2>/dev/null || cp "weights/$f" "$GPU_DIR/weights/"
    done
    (cd "$GPU_DIR/debs" && apt-get download nginx nginx-common >/dev/null) || exit 1
    for deb in "$GPU_DIR"/debs/*.deb; do dpkg -x "$deb" "$GPU_DIR/nginx"; done
    rm -rf "$GPU_DIR/debs" "$GPU_DIR/nginx/usr/share"
    if [ "${1:-}" = --with-dev ]; then
        mkdir -p "$GPU_DIR/shared/ocr-dev" "$GPU_DIR/shared/tools"
        cp ../shared/ocr-dev/sroie_* ../shared/ocr-dev/sroieline_* "$GPU_DIR/shared/ocr-dev/"
        cp ../shared/tools/score.py "$GPU_DIR/shared/tools/"
    fi
    local mib
    mib=$(du -sm "$GPU_DIR" | cut -f1)
    echo "$GPU_DIR: ${mib} MiB (a device call carries 64 MiB with the working tree)"
    [ "$mib" -le "$CARRY_LIMIT_MIB" ] || { echo "too large to carry"; exit 1; }
    echo 'next: the device tool run, command "bash tests/gpu_session.sh run", carry [".gpu"], timeout_s 360'
}

OUT=${OUT:-build/gpu-out}
RUN_SECONDS=${RUN_SECONDS:-300}
# DEVICE=cpu DEVICE_PYTHON=... PY_VERSION=3.11 try the whole script on a CPU machine.
DEVICE=${DEVICE:-cuda:0}
STARTED=$SECONDS

# step NAME SECONDS CMD...: CMD under a timeout that never passes the run's own budget; its
# output to the console and to $OUT/NAME.log; a timeout is reported, not fatal.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((RUN_SECONDS - (SECONDS - STARTED)))
    [ "$limit" -le "$left" ] || limit=$left
    if [ "$limit" -le 10 ]; then
        echo "== $name: skipped, the run's $RUN_SECONDS s are spent" | tee -a "$OUT/summary.txt"
        return
    fi
    echo "== $name (at most $limit s): $*"
    local begin=$SECONDS
    timeout -k 15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc in $((SECONDS - begin)) s$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$OUT/summary.txt"
}

setup() {
    [ -d "$GPU_DIR/wheels" ] || { echo "no $GPU_DIR/: run 'bash tests/gpu_session.sh pack' first and carry .gpu"; return 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    # The image's python3 holds the CUDA PyTorch, and may itself be a venv, whose packages a new
    # venv's --system-site-packages would not see: a .pth names its site-packages after ours.
    local python=${DEVICE_PYTHON:-python3}
    "$python" -m venv --without-pip .venv || return 1
    local ours
    ours=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$python" -c 'import site; print("\n".join(site.getsitepackages()))' >"$ours/device_python.pth"
    "$python" -m pip --python .venv/bin/python install -q --no-index --no-deps --no-compile --ignore-installed \
        "$GPU_DIR"/wheels/*.whl || return 1
    .venv/bin/python -c 'import torch, flask, pypdfium2, pyclipper, cv2; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' || return 1
    ln -f "$GPU_DIR"/weights/* weights/ 2>/dev/null || cp "$GPU_DIR"/weights/* weights/
    if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
        export PATH="$PWD/$GPU_DIR/nginx/usr/sbin:$PATH"
        # The dev stack copies uwsgi_params from the host's /etc/nginx (service/ops/deploy.py).
        mkdir -p /etc/nginx && cp -n "$GPU_DIR"/nginx/etc/nginx/uwsgi_params /etc/nginx/
    fi
    nginx -v
    if [ -d "$GPU_DIR/shared" ] && [ ! -e ../shared ]; then ln -s "$PWD/$GPU_DIR/shared" ../shared; fi
}

run() {
    mkdir -p "$OUT" && : >"$OUT/summary.txt"
    # In this shell (PATH stays set), its output to the console and to $OUT/setup.log.
    setup > >(tee "$OUT/setup.log") 2>&1 || { echo "== setup failed: see $OUT/setup.log" | tee -a "$OUT/summary.txt"; exit 1; }
    echo "== setup: done in $((SECONDS - STARTED)) s" | tee -a "$OUT/summary.txt"
    export PYTHONUNBUFFERED=1
    local py=.venv/bin/python
    step model-tests 60 env PARSE_TEST_DEVICE="$DEVICE" "$py" -m pytest -q -rfE -m model -k "not easyocr and not structure and not table and not layout" \
        -p no:cacheprovider tests
    local bench=("$py" -m tests.bench_gpu --device "$DEVICE" --concurrency 1,8,32,64 --rounds 1 --level-seconds 3
                 --pages 20 --crops 20 --profile-pages 6)
    step bench-batched 60 "${bench[@]}"
    step bench-bucket-cudnn 55 "${bench[@]}" --det-bucket 128 --cudnn
    step bench-fp16 50 "${bench[@]}" --precision fp16
    step bench-processes2 50 "${bench[@]}" --processes 2
    # The stacks' own logs (uWSGI, Nginx), kept by tests and benchmarks under run/.
    tar -czf "$OUT/run-logs.tar.gz" --ignore-failed-read run/test-logs /tmp/parse-bench-gpu-* 2>/dev/null
    echo "== total $((SECONDS - STARTED)) s"
    cat "$OUT/summary.txt"
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) run ;;
    setup) setup ;;  # the venv, weights and nginx alone, e.g. before a command of one's own
    *) sed -n 2,23p "$0"; exit 2 ;;
esac
