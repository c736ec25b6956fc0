// Sub-commands of the attnkit CLI register themselves here (one file per sub-command).
#pragma once

#include <string>
#include <vector>

namespace attnkit::cli {

// Returns the process exit code. Throwing attnkit::Error gives one stderr line and exit 2.
using CommandMain = int (*)(const std::vector<std::string>& args);

struct Command {
  std::string name;   // "run", "bench", "model"...
  std::string usage;  // the synopsis printed by `attnkit help`
  CommandMain main;
};

// Thrown to end a command with `code` and nothing printed: a rank of an MPI job that leaves the
// report of a shared error to rank 0.
struct QuietExit {
  int code;
};

bool register_command(Command command);
const std::vector<Command>& commands();

}  // namespace attnkit::cli
