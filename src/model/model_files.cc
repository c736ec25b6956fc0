// Locating the default model file (see model_files.h).
#include "model/model_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace attnkit::model {

namespace {
bool is_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
}  // namespace

std::string locate_model(const std::string& source_dir) {
  if (const char* env = std::getenv("ATTNKIT_MODEL"); env && *env) return is_file(env) ? env : "";
  if (is_file(kDefaultModelFile)) return kDefaultModelFile;
  if (!source_dir.empty() && is_file(source_dir + "/" + kDefaultModelFile))
    return source_dir + "/" + kDefaultModelFile;
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "";
  std::string dir(exe, n);
  for (int up = 0; up < 3 && dir.find('/') != std::string::npos; ++up) {
    dir = dir.substr(0, dir.rfind('/'));
    const std::string candidate = dir + "/" + kDefaultModelFile;
    if (is_file(candidate)) return candidate;
  }
  return "";
}

}  // namespace attnkit::model
