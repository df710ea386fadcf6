// Tests of the image codecs: PNG round trip (pixels and the `parameters` text in tEXt and
// iTXt), decoder robustness on corrupt bytes, JPEG/WebP signatures, format names and the
// file helpers.
#include <gtest/gtest.h>

#include <random>

#include "io/image.h"
#include "io/png_idat.h"
#include "io_test_util.h"

namespace sd {
namespace {

RgbImage random_image(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  RgbImage img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (auto& b : img.rgb) b = static_cast<uint8_t>(rng());
  return img;
}

TEST(Image, PngRoundTripWithParametersChunk) {
  const RgbImage img = random_image(37, 23, 1);
  const std::string infotext = "a cat, 4k\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42";
  const std::string utf8 = "théière 茶壺 🍵";
  auto png = encode_png(img, {{"parameters", infotext}, {"Comment", utf8}});
  ASSERT_TRUE(png.ok()) << png.status().to_string();
  auto decoded = decode_png(*png);
  ASSERT_TRUE(decoded.ok()) << decoded.status().to_string();
  EXPECT_EQ(decoded->width, 37);
  EXPECT_EQ(decoded->height, 23);
  EXPECT_EQ(decoded->rgb, img.rgb);
  auto text = read_png_text(*png);
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  ASSERT_EQ(text->size(), 2u);
  EXPECT_EQ((*text)[0], std::make_pair(std::string("parameters"), infotext));
  EXPECT_EQ((*text)[1], std::make_pair(std::string("Comment"), utf8));
  const std::string bytes(png->begin(), png->end());
  EXPECT_NE(bytes.find("tEXtparameters"), std::string::npos);  // ASCII -> tEXt
  EXPECT_NE(bytes.find("iTXtComment"), std::string::npos);     // UTF-8 -> iTXt

  auto via_format = encode_image(img, ImageFormat::kPNG, infotext);
  ASSERT_TRUE(via_format.ok());
  EXPECT_EQ(read_png_text(*via_format)->at(0).second, infotext);
}

// A smooth gradient with noise, like a generated picture (long runs for the RLE deflater).
RgbImage smooth_image(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  RgbImage img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        img.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>((x * (c + 1) + y * 2) / 3 + rng() % 5);
      }
    }
  }
  return img;
}

TEST(Image, PngStripesRoundTripAtManySizesAndThreadCounts) {
  // Heights around the 32-row stripe minimum, odd widths, one row, one column.
  const int sizes[][2] = {{1, 1}, {5, 1}, {1, 70}, {33, 31}, {33, 32}, {45, 64}, {97, 65}, {300, 257}, {512, 512}};
  uint32_t seed = 10;
  for (const auto& wh : sizes) {
    for (const RgbImage& img : {random_image(wh[0], wh[1], seed++), smooth_image(wh[0], wh[1], seed++)}) {
      auto png = encode_png(img, {{"parameters", "Steps: 20"}});
      ASSERT_TRUE(png.ok()) << png.status().to_string();
      auto decoded = decode_png(*png);
      ASSERT_TRUE(decoded.ok()) << wh[0] << "x" << wh[1] << ": " << decoded.status().to_string();
      EXPECT_EQ(decoded->rgb, img.rgb) << wh[0] << "x" << wh[1];
      EXPECT_EQ(read_png_text(*png)->at(0).second, "Steps: 20");
      // The image data alone, with 1, 3 and 8 stripes: each must decode to the same pixels.
      for (int threads : {1, 3, 8}) {
        auto head = encode_png(img);
        ASSERT_TRUE(head.ok());
        const std::string bytes(head->begin(), head->end());
        std::vector<uint8_t> own(head->begin(), head->begin() + static_cast<long>(bytes.find("IDAT") - 4));
        ASSERT_TRUE(append_png_idat_iend(img, threads, &own).ok());
        auto again = decode_png(own);
        ASSERT_TRUE(again.ok()) << threads << " threads: " << again.status().to_string();
        EXPECT_EQ(again->rgb, img.rgb) << wh[0] << "x" << wh[1] << ", " << threads << " threads";
      }
    }
  }
}

TEST(Image, PngDecoderRejectsCorruptBytes) {
  auto png = encode_png(random_image(16, 16, 2), {{"parameters", "x"}});
  ASSERT_TRUE(png.ok());
  EXPECT_FALSE(decode_png({}).ok());
  EXPECT_FALSE(decode_png({1, 2, 3, 4, 5, 6, 7, 8, 9}).ok());
  EXPECT_FALSE(read_png_text({0x89, 'P', 'N', 'G'}).ok());
  std::vector<uint8_t> truncated(png->begin(), png->begin() + static_cast<long>(png->size() / 2));
  EXPECT_FALSE(decode_png(truncated).ok());
  EXPECT_EQ(read_png_text(truncated).status().code(), StatusCode::kDataLoss);
  std::vector<uint8_t> flipped = *png;
  flipped[40] ^= 0x55;  // inside the text chunk: CRC mismatch
  EXPECT_EQ(read_png_text(flipped).status().code(), StatusCode::kDataLoss);
  // Random corruption never crashes either reader.
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> m = *png;
    for (int k = 0; k < 3; ++k) m[8 + rng() % (m.size() - 8)] = static_cast<uint8_t>(rng());
    (void)decode_png(m);
    (void)read_png_text(m);
  }
}

TEST(Image, JpegAndWebpHaveValidHeaders) {
  const RgbImage img = random_image(64, 48, 3);
  auto jpeg = encode_jpeg(img, 85);
  ASSERT_TRUE(jpeg.ok()) << jpeg.status().to_string();
  ASSERT_GT(jpeg->size(), 100u);
  EXPECT_EQ((*jpeg)[0], 0xFF);
  EXPECT_EQ((*jpeg)[1], 0xD8);
  EXPECT_EQ((*jpeg)[2], 0xFF);
  EXPECT_EQ((*jpeg)[jpeg->size() - 2], 0xFF);
  EXPECT_EQ((*jpeg)[jpeg->size() - 1], 0xD9);
  auto with_comment = encode_image(img, ImageFormat::kJPEG, "Steps: 20");
  ASSERT_TRUE(with_comment.ok());
  EXPECT_NE(std::string(with_comment->begin(), with_comment->end()).find("Steps: 20"), std::string::npos);

  auto webp = encode_webp(img, 80);
  ASSERT_TRUE(webp.ok()) << webp.status().to_string();
  ASSERT_GT(webp->size(), 20u);
  EXPECT_EQ(std::string(webp->begin(), webp->begin() + 4), "RIFF");
  EXPECT_EQ(std::string(webp->begin() + 8, webp->begin() + 12), "WEBP");
  const uint32_t riff_size = (*webp)[4] | ((*webp)[5] << 8) | ((*webp)[6] << 16) | (uint32_t((*webp)[7]) << 24);
  EXPECT_EQ(riff_size + 8, webp->size());
}

TEST(Image, InvalidImagesAndFormats) {
  RgbImage bad = random_image(4, 4, 4);
  bad.rgb.pop_back();
  EXPECT_EQ(encode_png(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_jpeg(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_webp(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_png(RgbImage{}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_png(random_image(2, 2, 5), {{"", "x"}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_jpeg(random_image(2, 2, 5), 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*parse_image_format("PNG"), ImageFormat::kPNG);
  EXPECT_EQ(*parse_image_format("jpg"), ImageFormat::kJPEG);
  EXPECT_EQ(*parse_image_format("jpeg"), ImageFormat::kJPEG);
  EXPECT_EQ(*parse_image_format("webp"), ImageFormat::kWebP);
  EXPECT_EQ(parse_image_format("gif").status().code(), StatusCode::kInvalidArgument);
}

TEST(Image, FileHelpers) {
  const std::string path = test_temp_dir() + "/bytes.bin";
  const std::vector<uint8_t> bytes = {0, 1, 2, 250, 251};
  ASSERT_TRUE(write_file(path, bytes).ok());
  auto back = read_file(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, bytes);
  EXPECT_EQ(read_file(path, 3).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(read_file(path + ".missing").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(write_file(test_temp_dir() + "/no/such/dir/x", bytes).ok());
}

}  // namespace
}  // namespace sd
