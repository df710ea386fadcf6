// Request parsing and validation: field reading (types, ranges, aliases, defaults),
// size strings, UTF-8 prompt length, JSON depth, and the error codes of the bad-input
// table. No server involved.
#include <gtest/gtest.h>

#include "serving/request_parsing.h"
#include "serving/sampler_names.h"

namespace sd::serving {
namespace {

RequestLimits limits;

GenerationParams ok_txt2img(const std::string& body) {
  auto p = parse_txt2img(body, limits);
  EXPECT_TRUE(p.ok()) << body << " -> " << p.error().message;
  return p.ok() ? p.value() : GenerationParams{};
}

std::string txt2img_error(const std::string& body) {
  auto p = parse_txt2img(body, limits);
  EXPECT_FALSE(p.ok()) << body;
  if (!p.ok()) {
    EXPECT_EQ(p.error().http_status, 400);
  }
  return p.ok() ? "" : p.error().code;
}

std::string openai_error(const std::string& body) {
  auto p = parse_openai_generation(body, limits, 512);
  EXPECT_FALSE(p.ok()) << body;
  return p.ok() ? "" : p.error().code;
}

TEST(RequestParsing, Txt2ImgReadsEveryField) {
  auto p = ok_txt2img(R"({"prompt":"a red fox","negative_prompt":"blurry","steps":33,"cfg_scale":5.5,
      "width":576,"height":320,"seed":1234,"batch_size":3,"n_iter":2,"sampler_name":"k_euler_a",
      "scheduler":"Karras","override_settings":{"CLIP_stop_at_last_layers":2},
      "enable_hr":true,"hr_scale":2,"restore_faces":false,"alwayson_scripts":{"x":{}}})");
  const GenerationRequest& r = p.request;
  EXPECT_EQ(r.prompt, "a red fox");
  EXPECT_EQ(r.negative_prompt, "blurry");
  EXPECT_EQ(r.steps, 33);
  EXPECT_FLOAT_EQ(r.cfg_scale, 5.5f);
  EXPECT_EQ(r.width, 576);
  EXPECT_EQ(r.height, 320);
  EXPECT_EQ(r.seed, 1234);
  EXPECT_EQ(p.batch_size, 3);
  EXPECT_EQ(p.n_iter, 2);
  EXPECT_EQ(r.batch_size, 6);  // images in total
  EXPECT_EQ(r.sampler, "Euler a");
  EXPECT_EQ(r.scheduler, "karras");
  EXPECT_EQ(r.clip_skip, 2);
  EXPECT_EQ(p.parameters["n_iter"], 2);
  EXPECT_EQ(p.parameters["sampler_name"], "k_euler_a");
}

TEST(RequestParsing, Txt2ImgDefaultsAndLenientNumbers) {
  auto p = ok_txt2img(R"({"width":512.0,"height":null,"seed":null,"prompt":null})");
  EXPECT_EQ(p.request.width, 512);
  EXPECT_EQ(p.request.height, 512);
  EXPECT_EQ(p.request.seed, -1);
  EXPECT_EQ(p.request.prompt, "");
  EXPECT_EQ(p.request.sampler, "Euler");
  EXPECT_EQ(p.request.batch_size, 1);
  // Top-level clip_skip (sd.cpp style) and sampler_index (deprecated A1111) work too.
  auto q = ok_txt2img(R"({"clip_skip":2,"sampler_index":"DPM++ 2M"})");
  EXPECT_EQ(q.request.clip_skip, 2);
  EXPECT_EQ(q.request.sampler, "DPM++ 2M");
  auto by_index = ok_txt2img(R"({"sampler_index":0})");
  EXPECT_EQ(by_index.request.sampler, sampler_names()[0].name);
}

TEST(RequestParsing, BadInputTableTxt2Img) {
  struct Case {
    std::string body, code;
  };
  const std::vector<Case> cases = {
      {"{not json", "malformed_json"},
      {"", "malformed_json"},
      {"[1,2]", "wrong_type"},
      {R"({"prompt":5})", "wrong_type"},
      {R"({"steps":"20"})", "wrong_type"},
      {R"({"steps":20.5})", "wrong_type"},
      {R"({"steps":true})", "wrong_type"},
      {R"({"cfg_scale":"7"})", "wrong_type"},
      {R"({"width":500})", "out_of_range"},
      {R"({"width":32})", "out_of_range"},
      {R"({"height":4096})", "out_of_range"},
      {R"({"height":-8})", "out_of_range"},
      {R"({"steps":0})", "out_of_range"},
      {R"({"steps":151})", "out_of_range"},
      {R"({"steps":1e300})", "out_of_range"},
      {R"({"cfg_scale":-0.5})", "out_of_range"},
      {R"({"cfg_scale":30.5})", "out_of_range"},
      {R"({"seed":-2})", "out_of_range"},
      {R"({"seed":99999999999999999999})", "out_of_range"},
      {R"({"batch_size":65})", "too_many_images"},
      {R"({"batch_size":8,"n_iter":9})", "too_many_images"},
      {R"({"batch_size":0})", "out_of_range"},
      {R"({"sampler_name":"Foo"})", "unknown_sampler"},
      {R"({"sampler_name":7})", "wrong_type"},
      {R"({"sampler_index":99})", "out_of_range"},
      {R"({"scheduler":"bogus"})", "unknown_scheduler"},
      {R"({"sampler_name":"DDIM","scheduler":"karras"})", "invalid_value"},
      {R"({"override_settings":3})", "wrong_type"},
      {R"({"override_settings":{"CLIP_stop_at_last_layers":0}})", "out_of_range"},
      {R"({"output_format":"gif"})", "invalid_value"},
      {"{\"prompt\":\"" + std::string(4097, 'a') + "\"}", "prompt_too_long"},
      {"{\"negative_prompt\":\"" + std::string(4097, 'a') + "\"}", "prompt_too_long"},
      {std::string(100, '[') + std::string(100, ']'), "malformed_json"},
      {"{\"a\":" + std::string(70, '{') + std::string(70, '}') + "}", "malformed_json"},
      {"{\"prompt\":\"\xff\xfe\"}", "malformed_json"},  // not UTF-8
  };
  for (const auto& c : cases) EXPECT_EQ(txt2img_error(c.body), c.code) << c.body.substr(0, 80);
}

TEST(RequestParsing, ErrorsNameTheFieldAndTheValidValues) {
  auto p = parse_txt2img(R"({"sampler_name":"Foo"})", limits);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().param, "sampler_name");
  EXPECT_NE(p.error().message.find("Euler a"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("DPM++ 2M"), std::string::npos);
  auto w = parse_txt2img(R"({"width":500})", limits);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().param, "width");
  EXPECT_NE(w.error().message.find("multiple of 8"), std::string::npos);
  EXPECT_NE(w.error().body().find("\"error\""), std::string::npos);
}

TEST(RequestParsing, PromptLimitCountsCharactersNotBytes) {
  std::string snowmen;
  for (int i = 0; i < 1000; ++i) snowmen += "\xe2\x98\x83";  // U+2603, 3 bytes each
  EXPECT_EQ(utf8_length(snowmen), 1000u);
  EXPECT_EQ(utf8_length("a\xc3\xa9z"), 3u);
  auto p = parse_txt2img("{\"prompt\":\"" + std::string(4096, 'b') + "\"}", limits);
  EXPECT_TRUE(p.ok());
}

TEST(RequestParsing, OpenAiFields) {
  auto p = parse_openai_generation(R"({"prompt":"p","n":3,"size":"768x512","response_format":"b64_json",
      "output_format":"webp","output_compression":70,"negative_prompt":"n","steps":12,"cfg_scale":4,
      "seed":5,"sampler":"dpmpp_2m","model":"dall-e-3","quality":"hd","style":"vivid","user":"u"})",
                                   limits, 512);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->request.batch_size, 3);
  EXPECT_EQ(p->request.width, 768);
  EXPECT_EQ(p->request.height, 512);
  EXPECT_EQ(p->output_format, "webp");
  EXPECT_EQ(p->quality, 70);
  EXPECT_EQ(p->request.steps, 12);
  EXPECT_EQ(p->request.sampler, "DPM++ 2M");
  EXPECT_EQ(p->request.seed, 5);
  auto d = parse_openai_generation(R"({"prompt":"p","sample_steps":9})", limits, 768);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->request.width, 768);  // size "auto" / absent: the model's size
  EXPECT_EQ(d->request.steps, 9);
  EXPECT_EQ(d->response_format, "b64_json");
}

TEST(RequestParsing, BadInputTableOpenAi) {
  EXPECT_EQ(openai_error("{}"), "missing_field");
  EXPECT_EQ(openai_error(R"({"prompt":null})"), "missing_field");
  EXPECT_EQ(openai_error(R"({"prompt":["a"]})"), "wrong_type");
  EXPECT_EQ(openai_error(R"({"prompt":"x","size":"500x500"})"), "out_of_range");
  EXPECT_EQ(openai_error(R"({"prompt":"x","size":"big"})"), "invalid_value");
  EXPECT_EQ(openai_error(R"({"prompt":"x","size":512})"), "wrong_type");
  EXPECT_EQ(openai_error(R"({"prompt":"x","n":65})"), "too_many_images");
  EXPECT_EQ(openai_error(R"({"prompt":"x","n":0})"), "out_of_range");
  EXPECT_EQ(openai_error(R"({"prompt":"x","response_format":"jpg"})"), "invalid_value");
  EXPECT_EQ(openai_error(R"({"prompt":"x","output_format":"gif"})"), "invalid_value");
  EXPECT_EQ(openai_error(R"({"prompt":"x","output_compression":101})"), "out_of_range");
  EXPECT_EQ(openai_error(R"({"prompt":"x","sampler":"nope"})"), "unknown_sampler");
  EXPECT_EQ(openai_error(R"({"prompt":"x","steps":151})"), "out_of_range");
  EXPECT_EQ(openai_error(R"({"prompt":"x","cfg_scale":99})"), "out_of_range");
}

TEST(RequestParsing, SizeStrings) {
  auto ok = [](const std::string& s) { return parse_size(s, limits, 512); };
  EXPECT_EQ(ok("512x768").value(), std::make_pair(512, 768));
  EXPECT_EQ(ok("64X2048").value(), std::make_pair(64, 2048));
  EXPECT_EQ(ok("auto").value(), std::make_pair(512, 512));
  for (const char* bad : {"", "x", "512", "512x", "x512", "512x512x8", "-512x512", "512 x 512", "0x0", "99999x512",
                          "512x511", "4096x4096", "１２８x128", "5e2x512"})
    EXPECT_FALSE(ok(bad).ok()) << bad;
}

TEST(RequestParsing, SamplerNamesComeFromTheRegistry) {
  ASSERT_GE(sampler_names().size(), 9u);
  for (const char* name : {"DDIM", "PLMS", "Euler", "Euler a", "LMS", "Heun", "DPM++ 2M", "DPM++ 2M Karras", "UniPC"}) {
    auto s = find_sampler(name);
    ASSERT_TRUE(s.has_value()) << name;
    EXPECT_EQ(s->name, name);
  }
  EXPECT_EQ(find_sampler("EULER A")->name, "Euler a");
  EXPECT_EQ(find_sampler("k_lms")->name, "LMS");
  EXPECT_FALSE(find_sampler("").has_value());
  EXPECT_EQ(find_scheduler("Uniform")->name, "uniform");
}

}  // namespace
}  // namespace sd::serving
