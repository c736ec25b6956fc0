// Test helpers (see cli_runner.h).
#include "support/cli_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace attnkit::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/attnkit_test_XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
  dir_ = pattern;
}

TempDir::~TempDir() {
  std::error_code error;
  fs::remove_all(dir_, error);
}

std::vector<std::string> TempDir::list() const {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

CliResult run_program(const std::string& binary, const std::vector<std::string>& args,
                      const std::string& cwd) {
  // stdout and stderr go to files, so a chatty child never blocks on a full pipe.
  TempDir capture;
  const std::string out_path = capture.path("stdout"), err_path = capture.path("stderr");
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(127);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);  // exec failed
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  }
  CliResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

CliResult run_cli(const std::vector<std::string>& args, const std::string& cwd) {
  return run_program(ATTNKIT_CLI, args, cwd);
}

int count_lines(const std::string& text) {
  int lines = static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  if (!text.empty() && text.back() != '\n') ++lines;
  return lines;
}

bool file_exists(const std::string& path) {
  std::error_code error;
  return fs::exists(path, error);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string named_argument(const std::string& err) {
  const size_t at = err.find(": error: ");
  if (at == std::string::npos) return "";
  const size_t start = at + 9, end = err.find(": ", start);
  return end == std::string::npos ? "" : err.substr(start, end - start);
}

::testing::AssertionResult IsCleanError(const CliResult& result, const std::string& argument) {
  const bool ok = result.exit_code == 2 && count_lines(result.err) == 1 &&
                  named_argument(result.err) == argument && result.out.empty();
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected exit 2, no stdout and one stderr line 'attnkit CMD: error: " << argument
         << ": ...'; got exit " << result.exit_code << ", stderr (" << count_lines(result.err)
         << " lines): " << result.err << "stdout: " << result.out;
}

}  // namespace attnkit::testing
