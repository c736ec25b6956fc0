// The link the context-parallel model (bench/context_parallel_model.py) assumes, measured:
// two or more MPI ranks exchange messages around a ring through attnkit's Communicator (the
// ring's own transfer: a thread in MPI_Sendrecv), 4 KiB to 256 MiB. Prints, on rank 0, one JSON
// object: seconds per exchange for each size, the fitted latency and bandwidth.
//   mpirun -np 2 build/mpi_link
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "core/timing.h"

int main(int argc, char** argv) {
  using namespace attnkit;
  const MpiSession session(&argc, &argv);
  const std::unique_ptr<Communicator> comm = mpi_world();
  const int rank = comm->rank(), size = comm->size();
  std::string sizes = "[", seconds = "[";
  double small = 0.0, large = 0.0, large_bytes = 0.0;
  for (size_t bytes = size_t{1} << 12; bytes <= size_t{1} << 28; bytes <<= 2) {
    std::vector<char> send(bytes, 1), recv(bytes);
    const int reps = bytes < (size_t{1} << 20) ? 200 : 5;
    const double s = median_seconds(reps, [&] {
      comm->start_exchange(send.data(), recv.data(), bytes, (rank + 1) % size,
                           (rank + size - 1) % size)
          ->finish();
    });
    sizes.append(sizes.size() > 1 ? "," : "").append(std::to_string(bytes));
    seconds.append(seconds.size() > 1 ? "," : "").append(std::to_string(s));
    if (bytes == (size_t{1} << 12)) small = s;
    large = s, large_bytes = static_cast<double>(bytes);
  }
  if (rank == 0)
    std::printf("{\"ranks\":%d,\"bytes\":%s],\"seconds\":%s],\"latency_seconds\":%g,"
                "\"bandwidth_gbps\":%g}\n",
                size, sizes.c_str(), seconds.c_str(), small, large_bytes / (large - small) / 1e9);
  return 0;
}
