// `sdserve <command> [flags]`: dispatches to the registered sub-commands (generate,
// serve, bench, loadtest, inspect, tokenize, make-model). Prints the list of commands
// for no arguments, --help or an unknown command.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/command.h"

namespace sd::tools {
std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace sd::tools

static void usage(FILE* out) {
  auto commands = sd::tools::command_registry();
  std::sort(commands.begin(), commands.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::fprintf(out, "sdserve: Stable Diffusion inference engine and server\n\nUsage: sdserve <command> [flags]\n\nCommands:\n");
  for (const auto& c : commands) std::fprintf(out, "  %-12s %s\n", c.name.c_str(), c.summary.c_str());
  std::fprintf(out, "\nRun 'sdserve <command> --help' for the flags of a command.\n");
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("sdserve 0.1.0\n");
    return 0;
  }
  for (const auto& c : sd::tools::command_registry()) {
    if (c.name == argv[1]) {
      std::string prog = std::string("sdserve ") + argv[1];
      std::vector<char*> args(argv + 1, argv + argc);
      args[0] = prog.data();
      return c.run(static_cast<int>(args.size()), args.data());
    }
  }
  std::fprintf(stderr, "sdserve: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
