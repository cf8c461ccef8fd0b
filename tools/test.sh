#!/usr/bin/env bash
# The README's test command: installs the independent peers the tests check against, then runs
# `cargo test --release` requiring them, so that no test skips for want of a tool.
#   - rosbags (PyPI): reads our output bags back (tests/replay*.rs)
#   - pycocotools (PyPI): the COCOeval of `replay --coco-gt` (tests/it/replay_coco.rs)
#   - cyclonedds (PyPI): the DDS peer of the node (tests/dds_*.rs)
#   - colcon + colcon-ros-cargo (PyPI), cargo-ament-build (crates.io): `colcon list` of our
#     packages (tests/it/ros_packaging.rs)
#   - libnvrtc + ptxas (PyPI CUDA 13.0 wheels, no GPU needed): compile our CUDA kernels
#     (tests/cuda_kernels.rs)
# Extra arguments go to `cargo test` (e.g. `tools/test.sh --test it node::`).
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() { python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"; }

echo "== test peers from PyPI"
pip_install rosbags==0.11.9 cyclonedds==11.0.1 pycocotools==2.0.11 colcon-core==0.21.3 colcon-ros==0.5.0 \
  colcon-cargo==0.2.0 colcon-ros-cargo==0.2.0 colcon-package-information==0.4.1 colcon-metadata==0.3.1
if ! cargo ament-build --help >/dev/null 2>&1; then
  echo "== cargo-ament-build (colcon-ros-cargo identifies ament_cargo packages through it)"
  cargo install --locked cargo-ament-build --version 0.1.11
fi

# libnvrtc + ptxas (pins as in tools/cuda-toolchain.sh; one pip call, because --target does not
# merge the shared nvidia/ directory across calls). ~130 MB download, kept in target/.
CUDA_CI=$PWD/target/ci-cuda13
if [ ! -e "$CUDA_CI/nvidia/cu13/lib/libnvrtc.so.13" ] || [ ! -x "$CUDA_CI/nvidia/cu13/bin/ptxas" ]; then
  echo "== NVRTC and ptxas wheels"
  rm -rf "$CUDA_CI"
  pip_install --no-deps --target "$CUDA_CI" nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88
fi
export CUDA_HOME=$CUDA_CI/nvidia/cu13

export YOLACT_REQUIRE_ROSBAGS=1 YOLACT_REQUIRE_DDS=1 YOLACT_REQUIRE_COLCON=1 YOLACT_REQUIRE_NVRTC=1
echo "== cargo test --release"
cargo test --release --locked "$@"
