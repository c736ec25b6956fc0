// Index-list attention's oracle: the softmax reference under the element predicate "j is in row
// i's list" (a scan of the row per asked pair: clear, slow, for tests).
#include "attnkit/index_attention.h"
#include "core/attention_args.h"
#include "operators/index_lists.h"

namespace attnkit {
namespace {

ElementPredicate listed(const ListSet& lists) {
  return [&lists](int64_t b, int64_t h, int64_t i, int64_t j) {
    const ListRow r = lists.row(b, h, i);
    for (int64_t e = 0; e < r.count; ++e)
      if (r.data[e * r.stride] == j) return true;
    return false;
  };
}

}  // namespace

void index_attention_reference(const AttentionArgs& args, const IndexLists& indices) {
  validate(args);
  check_index_attention_flags(args);
  const ListSet lists(indices, args.q.shape[0], args.q.shape[1], args.q.shape[2], args.k.shape[2],
                      args.threads);
  attention_reference(args, listed(lists));
}

void index_attention_backward_reference(const BackwardArgs& args, const IndexLists& indices) {
  validate(args);
  const AttentionArgs& f = args.forward;
  check_index_attention_flags(f);
  const ListSet lists(indices, f.q.shape[0], f.q.shape[1], f.q.shape[2], f.k.shape[2], f.threads);
  attention_backward_reference(args, listed(lists));
}

}  // namespace attnkit
