// Sub-command registry of the `sdserve` program: each tools/cmd_<name>.cc registers one
// command with SD_COMMAND; main.cc dispatches on argv[1]. Commands are thin: they parse
// flags (CLI11), call library code, print, and return the exit code.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace sd::tools {

struct Command {
  std::string name;
  std::string summary;
  std::function<int(int argc, char** argv)> run;  // argv[0] is "sdserve <name>"
};

std::vector<Command>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string summary, std::function<int(int, char**)> run) {
    command_registry().push_back({std::move(name), std::move(summary), std::move(run)});
  }
};

}  // namespace sd::tools

#define SD_COMMAND(name, summary, fn) \
  static ::sd::tools::CommandRegistrar sd_command_registrar_##fn(name, summary, fn)
