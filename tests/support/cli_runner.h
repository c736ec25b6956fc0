// Test helpers shared by every suite: temporary directories, running the `attnkit` binary and
// checking how it failed.
//
//   attnkit::testing::TempDir dir;                        // removed with its contents at scope end
//   std::string q = dir.path("q.npy");                    // "<dir>/q.npy"
//   CliResult r = run_cli({"run", "--q", q, ...});        // runs ATTNKIT_CLI, waits, captures
//   EXPECT_EQ(r.exit_code, 0) << r.err;
//   EXPECT_TRUE(IsCleanError(r, "--q"));                  // exit 2, one stderr line naming --q
//   EXPECT_FALSE(file_exists(dir.path("o.npy")));
//
// ATTNKIT_CLI (the binary's path) is a compile definition set by CMakeLists.txt.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace attnkit::testing {

// A fresh directory under $TMPDIR (or /tmp), deleted recursively by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Names of the entries in the directory, sorted (to check that nothing else was left behind).
  std::vector<std::string> list() const;

 private:
  std::string dir_;
};

struct CliResult {
  int exit_code = -1;  // the process's exit status; 128 + signal number if it was killed
  std::string out;     // everything written to stdout
  std::string err;     // everything written to stderr
};

// Runs `binary` with `args` (no shell; stdin is /dev/null), in `cwd` if not empty; waits for it.
CliResult run_program(const std::string& binary, const std::vector<std::string>& args,
                      const std::string& cwd = "");
// run_program(ATTNKIT_CLI, args, cwd).
CliResult run_cli(const std::vector<std::string>& args, const std::string& cwd = "");

// Lines in `text` (a final line without '\n' counts; an empty text has none).
int count_lines(const std::string& text);
bool file_exists(const std::string& path);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// The argument an error line names: "--q" in "attnkit run: error: --q: no such file 'x'".
std::string named_argument(const std::string& err);
// Success iff the run exited with code 2, wrote nothing to stdout and exactly one line to stderr
// that names exactly `argument` (e.g. "--q"); otherwise the failure message shows the exit code,
// stdout and stderr.
::testing::AssertionResult IsCleanError(const CliResult& result, const std::string& argument);

}  // namespace attnkit::testing
