// Validation and defaults shared by every attention entry point.
#include "core/attention_args.h"

#include <omp.h>

#include <cmath>
#include <string>

#include "attnkit/error.h"
#include "core/score_modifiers.h"
#include "core/view_checks.h"

namespace attnkit {
void validate(const AttentionArgs& a) {
  check_nonempty(a.q, "q");
  check_nonempty(a.k, "k");
  check_nonempty(a.v, "v");
  check_nonempty(a.out, "out");
  check(a.k.dtype == a.q.dtype && a.v.dtype == a.q.dtype, "k",
        std::string("q, k and v must share one dtype, got ") + dtype_name(a.q.dtype) + ", " +
            dtype_name(a.k.dtype) + " and " + dtype_name(a.v.dtype));
  check(a.out.dtype == DType::kF32, "out", "must be f32, got " + a.out.describe());
  check(a.k.shape[0] == a.q.shape[0] && a.v.shape[0] == a.q.shape[0], "k",
        "batch must match q: q " + a.q.describe() + ", k " + a.k.describe() + ", v " +
            a.v.describe());
  check(a.q.shape[3] == a.k.shape[3], "k",
        "head dim must match q, got " + std::to_string(a.q.shape[3]) + " and " +
            std::to_string(a.k.shape[3]));
  check(a.q.shape[3] <= 1024 && a.v.shape[3] <= 1024, "q",
        "head dims above 1024 are not supported: q " + a.q.describe() + ", v " + a.v.describe());
  check(a.k.shape[1] == a.v.shape[1] && a.k.shape[2] == a.v.shape[2], "v",
        "heads and length must match k: k " + a.k.describe() + ", v " + a.v.describe());
  check(a.q.shape[1] % a.k.shape[1] == 0, "k",
        "query heads must be a multiple of kv heads, got " + std::to_string(a.q.shape[1]) +
            " and " + std::to_string(a.k.shape[1]));
  const int64_t want[4] = {a.q.shape[0], a.q.shape[1], a.q.shape[2], a.v.shape[3]};
  for (int i = 0; i < 4; ++i)
    check(a.out.shape[i] == want[i], "out",
          "must be [B,Hq,Nq,Dv] = [" + std::to_string(want[0]) + "," + std::to_string(want[1]) +
              "," + std::to_string(want[2]) + "," + std::to_string(want[3]) + "], got " +
              a.out.describe());
  check(unit_last_stride(a.q), "q", "the head dim must be contiguous (stride 1)");
  check(unit_last_stride(a.k), "k", "the head dim must be contiguous (stride 1)");
  check(unit_last_stride(a.v), "v", "the head dim must be contiguous (stride 1)");
  check(unit_last_stride(a.out), "out", "the head dim must be contiguous (stride 1)");
  if (!a.lse.empty()) {
    check(a.lse.dtype == DType::kF32, "lse", "must be f32, got " + a.lse.describe());
    for (int i = 0; i < 3; ++i)
      check(a.lse.shape[i] == want[i] && a.lse.shape[3] == 1, "lse",
            "must be [B,Hq,Nq,1] = [" + std::to_string(want[0]) + "," + std::to_string(want[1]) +
                "," + std::to_string(want[2]) + ",1], got " + a.lse.describe());
  }
  check(std::isfinite(a.scale), "scale", "must be finite, got " + std::to_string(a.scale));
  check(std::isfinite(a.dropout) && a.dropout >= 0.0f && a.dropout < 1.0f, "dropout",
        "must be in [0, 1), got " + std::to_string(a.dropout));
  check(a.threads >= 0 && a.threads <= 1024, "threads",
        "must be in [0, 1024], got " + std::to_string(a.threads));
  validate_score_modifiers(a);
}

namespace {

// An optional per-row vector: f32 [B, Hq, Nq, 1] with finite values.
void check_row_vector(const TensorView& t, const AttentionArgs& a, const char* name) {
  if (t.empty()) return;
  const int64_t batch = a.q.shape[0], heads = a.q.shape[1], nq = a.q.shape[2];
  check(t.dtype == DType::kF32, name, "must be f32, got " + t.describe());
  check(t.shape[0] == batch && t.shape[1] == heads && t.shape[2] == nq && t.shape[3] == 1, name,
        "must be [B,Hq,Nq,1] = [" + std::to_string(batch) + "," + std::to_string(heads) + "," +
            std::to_string(nq) + ",1], got " + t.describe());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        const float x = t.get(b, h, i, 0);
        check(std::isfinite(x), name,
              "must be finite, got " + std::to_string(x) + " at [" + std::to_string(b) + "," +
                  std::to_string(h) + "," + std::to_string(i) + "]");
      }
}

}  // namespace

void validate_score_modifiers(const AttentionArgs& a) {
  check_row_vector(a.row_scale, a, "row_scale");
  check_row_vector(a.output_gate, a, "output_gate");
  check(std::isfinite(a.position_scale) && a.position_scale >= 0.0f, "position_scale",
        "must be finite and >= 0, got " + std::to_string(a.position_scale));
  check(a.first_position < (int64_t{1} << 40), "first_position",
        "must be below 2^40, got " + std::to_string(a.first_position));
  if (a.head_modes)
    for (int64_t h = 0; h < a.q.shape[1]; ++h) {
      const auto mode = static_cast<uint8_t>(a.head_modes[h]);
      check(mode <= static_cast<uint8_t>(HeadMode::kZero), "head_modes",
            "entry " + std::to_string(h) + " is " + std::to_string(mode) +
                ", not normal (0), uniform (1) or zero (2)");
    }
}

void validate(const BackwardArgs& a) {
  const AttentionArgs& f = a.forward;
  validate(f);
  check(!f.lse.empty(), "lse", "the backward needs the forward's LSE");
  const int64_t batch = f.q.shape[0], heads_q = f.q.shape[1], nq = f.q.shape[2];
  const int64_t heads_kv = f.k.shape[1], nk = f.k.shape[2], dim = f.q.shape[3];
  const int64_t dim_v = f.v.shape[3];
  check(a.dout.data != nullptr, "dout", "is missing (null data)");
  check_shaped(a.dout, {batch, heads_q, nq, dim_v}, "dout");
  check(unit_last_stride(a.dout), "dout", "the head dim must be contiguous (stride 1)");
  if (!a.dlse.empty()) {
    check(a.dlse.dtype == DType::kF32, "dlse", "must be f32, got " + a.dlse.describe());
    check_shaped(a.dlse, {batch, heads_q, nq, 1}, "dlse");
  }
  check_f32_output(a.dq, {batch, heads_q, nq, dim}, "dq");
  check_f32_output(a.dk, {batch, heads_kv, nk, dim}, "dk");
  check_f32_output(a.dv, {batch, heads_kv, nk, dim_v}, "dv");
}

float effective_scale(float scale, int64_t dim) {
  return scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(dim));
}

float effective_scale(const AttentionArgs& args) {
  return effective_scale(args.scale, args.q.shape[3]);
}

int effective_threads(int threads) { return threads > 0 ? threads : omp_get_num_procs(); }

void validate_f32_query(const AttentionArgs& args) {
  AttentionArgs same = args;
  if (args.q.dtype == DType::kF32 && args.k.dtype == args.v.dtype) same.q.dtype = args.k.dtype;
  validate(same);
}

void check_mask_fits(const AttentionArgs& args, const BlockMask& mask, int64_t nq, int64_t nk) {
  mask.validate();
  check(mask.nq == nq && mask.nk == nk, "block_mask",
        "is for nq=" + std::to_string(mask.nq) + ", nk=" + std::to_string(mask.nk) +
            " but the inputs have nq=" + std::to_string(nq) + ", nk=" + std::to_string(nk));
  check(mask.batch == 1 || mask.batch == args.q.shape[0], "block_mask",
        "batch must be 1 or " + std::to_string(args.q.shape[0]) + ", got " +
            std::to_string(mask.batch));
  check(mask.heads == 1 || mask.heads == args.q.shape[1], "block_mask",
        "heads must be 1 or " + std::to_string(args.q.shape[1]) + ", got " +
            std::to_string(mask.heads));
}

void validate_column_sums(const AttentionArgs& args, const MutableTensorView& col_sums) {
  validate_f32_query(args);
  check(!args.lse.empty(), "lse", "column sums need the forward's LSE");
  const int64_t batch = args.q.shape[0], heads_q = args.q.shape[1], heads_kv = args.k.shape[1];
  const int64_t nk = args.k.shape[2];
  const int64_t h = col_sums.shape[1];
  check(!col_sums.empty() && col_sums.dtype == DType::kF32, "col_sums", "must be an f32 tensor");
  check(col_sums.shape[0] == batch && (h == heads_q || h == heads_kv) && col_sums.shape[2] == nk &&
            col_sums.shape[3] == 1,
        "col_sums",
        "shape must be [" + std::to_string(batch) + ", " + std::to_string(heads_q) + " or " +
            std::to_string(heads_kv) + ", " + std::to_string(nk) + ", 1], got [" +
            std::to_string(col_sums.shape[0]) + ", " + std::to_string(h) + ", " +
            std::to_string(col_sums.shape[2]) + ", " + std::to_string(col_sums.shape[3]) + "]");
}

}  // namespace attnkit
