// The communicators that need no transport library: one rank, and ranks as threads of one
// process. (MPI's is in mpi_communicator.cc.)
#include <barrier>
#include <cstring>
#include <memory>
#include <vector>

#include "attnkit/distributed.h"
#include "attnkit/error.h"

namespace attnkit {
namespace {

class DoneExchange final : public Communicator::Exchange {
 public:
  void finish() override {}
};

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::unique_ptr<Exchange> start_exchange(const void* send, void* recv, size_t bytes, int to,
                                            int from) override {
    check(to == 0 && from == 0, "comm", "a single-process communicator has rank 0 only");
    if (send != recv) std::memcpy(recv, send, bytes);
    return std::make_unique<DoneExchange>();
  }
  void all_gather(const void* send, void* recv, size_t bytes) override {
    if (send != recv) std::memcpy(recv, send, bytes);
  }
  void all_reduce_sum(float*, size_t) override {}
};

// Ranks as threads: every call is collective. A rank posts its buffer's address in its slot;
// after a barrier each reads what it needs from the others' slots; a second barrier keeps every
// buffer alive until all have read. (A transfer happens at finish(): no overlap, which the tests
// of the algorithms do not need.)
struct Shared {
  explicit Shared(int size) : slots(size), sync(size) {}
  std::vector<const void*> slots;
  std::barrier<> sync;
};

class ThreadRank final : public Communicator {
 public:
  ThreadRank(std::shared_ptr<Shared> shared, int rank) : shared_(std::move(shared)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(shared_->slots.size()); }

  class PostedExchange final : public Exchange {
   public:
    PostedExchange(ThreadRank* self, void* recv, size_t bytes, int from)
        : self_(self), recv_(recv), bytes_(bytes), from_(from) {}
    void finish() override {
      Shared& s = *self_->shared_;
      s.sync.arrive_and_wait();
      std::memcpy(recv_, s.slots[from_], bytes_);
      s.sync.arrive_and_wait();
    }

   private:
    ThreadRank* self_;
    void* recv_;
    size_t bytes_;
    int from_;
  };

  std::unique_ptr<Exchange> start_exchange(const void* send, void* recv, size_t bytes, int,
                                            int from) override {
    shared_->slots[rank_] = send;
    return std::make_unique<PostedExchange>(this, recv, bytes, from);
  }
  void all_gather(const void* send, void* recv, size_t bytes) override {
    shared_->slots[rank_] = send;
    shared_->sync.arrive_and_wait();
    for (int r = 0; r < size(); ++r)
      std::memcpy(static_cast<std::byte*>(recv) + r * bytes, shared_->slots[r], bytes);
    shared_->sync.arrive_and_wait();
  }
  void all_reduce_sum(float* data, size_t count) override {
    std::vector<float> sum(count, 0.0f);
    shared_->slots[rank_] = data;
    shared_->sync.arrive_and_wait();
    for (int r = 0; r < size(); ++r) {  // rank order: every rank adds the same way
      const float* x = static_cast<const float*>(shared_->slots[r]);
      for (size_t i = 0; i < count; ++i) sum[i] += x[i];
    }
    shared_->sync.arrive_and_wait();
    std::memcpy(data, sum.data(), count * sizeof(float));
  }

 private:
  std::shared_ptr<Shared> shared_;
  int rank_;
};

}  // namespace

std::unique_ptr<Communicator> single_process_communicator() {
  return std::make_unique<SingleProcess>();
}

std::vector<std::unique_ptr<Communicator>> thread_communicators(int size) {
  check(size >= 1 && size <= 1024, "size", "must be in [1, 1024], got " + std::to_string(size));
  auto shared = std::make_shared<Shared>(size);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<ThreadRank>(shared, r));
  return ranks;
}

}  // namespace attnkit
