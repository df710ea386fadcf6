// The `sdserve` program as a user runs it: generate reproduces a golden pipeline run from the
// command line with --init-latents, make-model writes a loadable model, and bad flags give a
// clear message and a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden_util.h"
#include "io/image.h"
#include "io/safetensors.h"

namespace sd {
namespace {

namespace fs = std::filesystem;
using testing::data_path;

struct CmdResult {
  int code = -1;
  std::string output;  // stdout + stderr
};

CmdResult sdserve(const std::string& args) {
  const std::string cmd = std::string(SD_BINARY_DIR) + "/sdserve " + args + " 2>&1";
  CmdResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("sdserve-cli-" + std::to_string(getpid()));
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};

TEST_F(Cli, GenerateReproducesGoldenWithInitLatents) {
  auto golden = testing::open_golden("tiny-sd1/pipeline.safetensors");
  const Tensor init = testing::golden_f32(*golden, "euler.case0.initial_latents");
  const Tensor want = testing::golden_f32(*golden, "euler.case0.final_latents");
  ASSERT_TRUE(write_safetensors((dir / "init.safetensors").string(), {{"latents", init}}).ok());
  const CmdResult r = sdserve("generate --model " + data_path("tiny-sd1/model") +
                        " --prompt 'a photo of an astronaut riding a horse on mars' --steps 8 --cfg-scale 7.5"
                        " --sampler euler --width 128 --height 128 --init-latents " +
                        (dir / "init.safetensors").string() + " --save-latents " +
                        (dir / "final.safetensors").string() + " --output " + (dir / "out.png").string());
  ASSERT_EQ(r.code, 0) << r.output;
  auto f = SafetensorsFile::open((dir / "final.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto got = (*f)->read_f32("latents");
  ASSERT_TRUE(got.ok());
  EXPECT_LE(relative_l2(*got, want), 1e-3);
  auto png = read_file((dir / "out.png").string());
  ASSERT_TRUE(png.ok());
  auto text = read_png_text(*png);
  ASSERT_TRUE(text.ok());
  ASSERT_FALSE(text->empty());
  EXPECT_EQ(text->front().first, "parameters");
  EXPECT_NE(text->front().second.find("Steps: 8, Sampler: Euler"), std::string::npos) << text->front().second;
  auto img = decode_png(*png);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->width, 128);
}

TEST_F(Cli, SeededBatchGivesDistinctReproducibleImages) {
  const std::string common = "generate --model " + data_path("tiny-sd1/model") +
                             " --prompt cat --steps 2 --width 64 --height 64 --seed 42 --batch-size 2 --output ";
  ASSERT_EQ(sdserve(common + (dir / "a.png").string()).code, 0);
  ASSERT_EQ(sdserve(common + (dir / "b.png").string()).code, 0);
  auto a0 = read_file((dir / "a-0.png").string()), a1 = read_file((dir / "a-1.png").string());
  auto b0 = read_file((dir / "b-0.png").string());
  ASSERT_TRUE(a0.ok() && a1.ok() && b0.ok());
  EXPECT_EQ(decode_png(*a0)->rgb, decode_png(*b0)->rgb);  // same seed, same image
  EXPECT_NE(decode_png(*a0)->rgb, decode_png(*a1)->rgb);  // seed + 1 differs
  EXPECT_NE(read_png_text(*a1)->front().second.find("Seed: 43"), std::string::npos);
}

TEST_F(Cli, MakeModelWritesALoadableModel) {
  const CmdResult m = sdserve("make-model --preset tiny --seed 3 --out " + (dir / "tiny").string());
  ASSERT_EQ(m.code, 0) << m.output;
  const CmdResult i = sdserve("inspect " + (dir / "tiny").string());
  ASSERT_EQ(i.code, 0) << i.output;
  EXPECT_NE(i.output.find("sd1"), std::string::npos) << i.output;
  const CmdResult g = sdserve("generate --model " + (dir / "tiny").string() + " --prompt dog --steps 2 --width 64 --height 64 "
                        "--output " + (dir / "x.png").string());
  EXPECT_EQ(g.code, 0) << g.output;
}

TEST_F(Cli, TokenizePrintsTheGoldenIdsForEveryLayout) {
  for (const auto& [model, golden] : {std::pair{"tiny-sd1/model.safetensors", "tiny-sd1/tokens.json"},
                                      std::pair{"tiny-sd2/model", "tiny-sd2/tokens.json"}}) {
    std::ifstream f(data_path(golden));
    const auto cases = nlohmann::json::parse(f)["cases"];
    for (size_t i = 0; i < 3; ++i) {
      const std::string prompt = cases[i]["prompt"].get<std::string>();
      std::string quoted = "'";
      for (char ch : prompt) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      quoted += "'";
      const CmdResult r = sdserve("tokenize --model " + data_path(model) + " " + quoted);
      ASSERT_EQ(r.code, 0) << r.output;
      const auto ids = nlohmann::json::parse(r.output.substr(0, r.output.find('\n')));
      EXPECT_EQ(ids, cases[i]["ids"]) << model << ": " << prompt;
    }
  }
}

struct BadFlag {
  std::string args, expect;
};

TEST_F(Cli, BadInputGivesClearMessageAndNonZeroExit) {
  const std::string m = " --model " + data_path("tiny-sd1/model") + " --prompt x ";
  std::string sizes25;  // one more than the image sizes a worker keeps planned by default (24)
  for (int k = 0; k < 25; ++k) sizes25 += (k ? "," : "") + std::to_string(512 + 8 * k) + "x512";
  const std::vector<BadFlag> cases = {
      {"generate" + m + "--width 100", "multiple of 8"},
      {"generate" + m + "--height 4096", "between 64 and 2048"},
      {"generate" + m + "--steps 0", "steps must be between 1 and 150"},
      {"generate" + m + "--steps 151", "steps must be between 1 and 150"},
      {"generate" + m + "--cfg-scale -1", "cfg_scale"},
      {"generate" + m + "--sampler nope --steps 1 --width 64 --height 64", "DPM++ 2M"},
      {"generate --model /nonexistent/model --prompt x", "/nonexistent/model"},
      {"generate" + m + "--rng gpu", "rng"},
      {"frobnicate", "unknown command"},
      {"make-model --preset huge --out " + (dir / "h").string(), "tiny, sd15, sd21"},
      {"serve --model " + data_path("tiny-sd1/model") + " --workers-per-device 2", "not cpu"},
      {"serve --model " + data_path("tiny-sd1/model") + " --device cuda:0 --workers-per-device 9", "not in range"},
      {"serve --model " + data_path("tiny-sd1/model") + " --device cuda:0,cuda:0", "listed twice"},
      {"serve --model " + data_path("tiny-sd1/model") + " --warmup-sizes 512x500", "multiple of 8, got 500"},
      {"serve --model " + data_path("tiny-sd1/model") + " --warmup-sizes 512", "'512' is not WIDTHxHEIGHT"},
      {"serve --model " + data_path("tiny-sd1/model") + " --warmup-sizes 512x512 --no-warmup", "excludes"},
      {"serve --model " + data_path("tiny-sd1/model") + " --device cuda:0 --warmup-sizes " + sizes25,
       "lists 25 sizes, more than the 24"},
      {"loadtest --url http://127.0.0.1:9 --sizes 512", "'512' is not WIDTHxHEIGHT"},
      {"loadtest --url http://127.0.0.1:9 --sizes 512x512,4x512", "'4x512' has a side outside 8..16384"},
  };
  for (const auto& c : cases) {
    const CmdResult r = sdserve(c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace sd
