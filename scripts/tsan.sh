#!/usr/bin/env bash
# ThreadSanitizer on the multi-threaded tests: concurrent calls from std::threads, and the
# OpenMP kernels (tile, decode, block-sparse, patterns, the model's mat-muls).
# OpenMP under TSan: GCC's libgomp is not instrumented, so its barriers and reductions look like
# races. We build with clang and its libomp, and load the Archer tool (libarcher.so, from
# libomp-14-dev) through OMP_TOOL_LIBRARIES: it tells TSan about every OpenMP barrier, task and
# lock, so only our own races are reported (with ignore_noninstrumented_modules=1, so that TSan
# does not report the runtime's own uninstrumented code, as Archer asks).
# AVX2 and the baseline only (ATTNKIT_FEWER_SIMD_TARGETS): races do not depend on the lane
# width, and the AVX-512 kernels would add half again to the TSan build.
#   scripts/tsan.sh BUILD_DIR JOBS WERROR
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1
jobs=$2
werror=${3:-OFF}
archer=/usr/lib/llvm-14/lib/libarcher.so
[ -f "$archer" ] || { echo "tsan: $archer is missing (Debian package libomp-14-dev)" >&2; exit 1; }
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DATTNKIT_SANITIZE=thread -DATTNKIT_FEWER_SIMD_TARGETS=ON \
  -DATTNKIT_WERROR="$werror" >/dev/null
cmake --build "$build" -j "$jobs" --target attnkit_tests
filter='ConcurrentCalls.*:DenseKernel.*:AttendedPairs.*:Merge.*:ModelQMatmul.*:ModelForward.*'
filter+=':Sweep/DecodeKernel.*Nk20000*:Sweep/BlockSparseKernel.*B1_H4x2*:PatternWalk.*'
filter+=':Backward.*:Sweep/DenseBackward.*H2x2_Nq1000*:Sweep/BlockSparseBackward.*B2_H4x2*'
filter+=':Operators/OperatorBackward.*'
# The operators of other shapes (OpenMP rows, per-thread workspaces, the per-key backward pass)
# and context parallelism on thread ranks (barriers between ranks, OpenMP kernels inside each).
filter+=':Shapes/IndexAttentionSweep.*K32_per_head*:IndexAttention.*:Shapes/LightningSweep.*N200*'
filter+=':Shapes/LightningBackward.*N129*:Shapes/SoftSweep.*given5*:Schemes/ContextParallelSweep.*P3*'
OMP_TOOL_LIBRARIES=$archer OMP_NUM_THREADS=2 ARCHER_OPTIONS=verbose=0 \
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ignore_noninstrumented_modules=1" \
  "$build/attnkit_tests" --gtest_filter="$filter" --gtest_brief=1
echo "tsan: no data race reported"
