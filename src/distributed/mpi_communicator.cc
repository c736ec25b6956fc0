// The MPI communicator (Open MPI from Debian). Compiled with ATTNKIT_HAVE_MPI when CMake finds
// MPI; otherwise the same functions say that this build has none.
//
// A ring exchange runs MPI_Sendrecv on a thread of its own, so the attention of the shard in
// hand overlaps the transfer of the next (Open MPI moves large messages only inside MPI calls:
// a thread blocked in one keeps them moving). MPI_THREAD_SERIALIZED suffices: between
// start_exchange() and finish() the calling thread makes no MPI call.
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "attnkit/distributed.h"
#include "attnkit/error.h"

#ifdef ATTNKIT_HAVE_MPI
#include <mpi.h>
#endif

namespace attnkit {

#ifdef ATTNKIT_HAVE_MPI
namespace {

// MPI counts are ints: messages go in pieces of at most 1 GiB.
constexpr size_t kPiece = size_t{1} << 30;

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error("comm", std::string(what) + " failed: " + std::string(text, length));
}

class MpiExchange final : public Communicator::Exchange {
 public:
  MpiExchange(MPI_Comm comm, const void* send, void* recv, size_t bytes, int to, int from)
      : thread_([=, this] {
          for (size_t at = 0; at < bytes; at += kPiece) {
            const int count = static_cast<int>(std::min(kPiece, bytes - at));
            code_ = MPI_Sendrecv(static_cast<const char*>(send) + at, count, MPI_BYTE, to, 0,
                                 static_cast<char*>(recv) + at, count, MPI_BYTE, from, 0, comm,
                                 MPI_STATUS_IGNORE);
            if (code_ != MPI_SUCCESS) return;
          }
        }) {}
  ~MpiExchange() override {
    if (thread_.joinable()) thread_.join();
  }
  void finish() override {
    thread_.join();
    check_mpi(code_, "MPI_Sendrecv");
  }

 private:
  int code_ = MPI_SUCCESS;
  std::thread thread_;
};

class MpiWorld final : public Communicator {
 public:
  MpiWorld() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    check(initialised != 0, "comm", "MPI is not initialised (an MpiSession must be alive)");
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiWorld() override { MPI_Comm_free(&comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::unique_ptr<Exchange> start_exchange(const void* send, void* recv, size_t bytes, int to,
                                            int from) override {
    return std::make_unique<MpiExchange>(comm_, send, recv, bytes, to, from);
  }
  void all_gather(const void* send, void* recv, size_t bytes) override {
    check(bytes <= static_cast<size_t>(INT_MAX), "comm",
          "all_gather of " + std::to_string(bytes) + " bytes per rank (at most 2^31 - 1)");
    check_mpi(MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes),
                            MPI_BYTE, comm_),
              "MPI_Allgather");
  }
  void all_reduce_sum(float* data, size_t count) override {
    for (size_t at = 0; at < count; at += kPiece / sizeof(float)) {
      const int n = static_cast<int>(std::min(kPiece / sizeof(float), count - at));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, n, MPI_FLOAT, MPI_SUM, comm_),
                "MPI_Allreduce");
    }
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool mpi_available() { return true; }

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
  check(provided >= MPI_THREAD_SERIALIZED, "comm",
        "this MPI offers no MPI_THREAD_SERIALIZED (the ring's communication thread needs it)");
}

MpiSession::~MpiSession() { MPI_Finalize(); }

std::unique_ptr<Communicator> mpi_world() { return std::make_unique<MpiWorld>(); }

#else  // no MPI in this build

bool mpi_available() { return false; }
MpiSession::MpiSession(int*, char***) {}
MpiSession::~MpiSession() = default;
std::unique_ptr<Communicator> mpi_world() {
  throw Error("context_parallel", "attnkit was built without MPI (install libopenmpi-dev)");
}

#endif

}  // namespace attnkit
