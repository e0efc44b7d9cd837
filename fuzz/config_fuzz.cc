// Flag and environment parsing (config::ParseConfig): the input is NUL-separated arguments; an
// argument starting with "DISTKIT_" and holding '=' goes to the environment instead of argv.
// Every outcome must be a Config or a status, and a Config must print (ToString).

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args = {"distkitd"};
  std::map<std::string, std::string> env;
  size_t start = 0;
  while (start <= in.size()) {
    size_t end = in.find('\0', start);
    if (end == std::string_view::npos) end = in.size();
    const std::string_view part = in.substr(start, end - start);
    const size_t eq = part.find('=');
    if (part.starts_with("DISTKIT_") && eq != std::string_view::npos) {
      env[std::string(part.substr(0, eq))] = std::string(part.substr(eq + 1));
    } else {
      args.emplace_back(part);
    }
    start = end + 1;
  }
  auto config = distkit::config::ParseConfig(args, env);
  if (config.ok()) {
    const std::string text = config->ToString();
    if (text.empty()) __builtin_trap();  // one line per flag, never nothing
  }
  return 0;
}
