// Tokenizer tests: exact ids against OpenAI's simple_tokenizer on the checked-in corpus
// (tests/fixtures/tokenizer_corpus.tsv), clip.tokenize's context/truncation rules, and
// the errors for bad text and bad merges files.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <thread>
#include <sstream>
#include <string>
#include <vector>

#include "ga/clip/tokenizer.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

namespace {

const std::string kVocabPath = std::string(GA_SOURCE_DIR) + "/../shared/clip/bpe_simple_vocab_16e6.txt.gz";

bool have_vocab() { return std::ifstream(kVocabPath).good(); }

const ga::clip::Tokenizer& clip_tokenizer() {
  static const ga::clip::Tokenizer tok = ga::clip::Tokenizer::from_file(kVocabPath);
  return tok;
}

std::string unescape_fixture(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '\\') {
      out.push_back('\\');
      ++i;
    } else if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] == 'x') {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 2, 2), nullptr, 16)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string join(const std::vector<int32_t>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? " " : "") << v[i];
  return os.str();
}

}  // namespace

TEST_CASE("tokenizer: exact ids on the reference corpus") {
  if (!have_vocab()) {
    MESSAGE("skipped: shared vocabulary not found at " << kVocabPath);
    return;
  }
  const auto& tok = clip_tokenizer();
  CHECK(tok.vocab_size() == 49408);
  std::ifstream f(std::string(GA_SOURCE_DIR) + "/tests/fixtures/tokenizer_corpus.tsv");
  REQUIRE(f.good());
  std::string line;
  int cases = 0, mismatches = 0;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t tab = line.rfind('\t');
    REQUIRE(tab != std::string::npos);
    std::string text = unescape_fixture(line.substr(0, tab));
    std::string expected = line.substr(tab + 1);
    std::string got = join(tok.encode(text));
    ++cases;
    if (got != expected) {
      ++mismatches;
      INFO("text: " << line.substr(0, tab));
      CHECK(got == expected);
    }
  }
  CHECK(cases >= 500);
  CHECK(mismatches == 0);
}

TEST_CASE("tokenizer: tokenize pads, truncates and rejects like clip.tokenize") {
  if (!have_vocab()) {
    MESSAGE("skipped: shared vocabulary not found at " << kVocabPath);
    return;
  }
  const auto& tok = clip_tokenizer();
  auto ids = tok.tokenize("a photo of a dog.");
  REQUIRE(ids.size() == 77);
  CHECK(join(std::vector<int32_t>(ids.begin(), ids.begin() + 8)) == "49406 320 1125 539 320 1929 269 49407");
  for (size_t i = 8; i < ids.size(); ++i) CHECK(ids[i] == 0);

  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "dog ";
  CHECK_THROWS_AS(tok.tokenize(long_text), ga::ValueError);
  try {
    tok.tokenize(long_text);
  } catch (const ga::ValueError& e) {
    std::string msg = e.what();
    CHECK(msg.find("dog dog") != std::string::npos);
    CHECK(msg.find("102 tokens") != std::string::npos);
  }
  auto t = tok.tokenize(long_text, 77, true);
  REQUIRE(t.size() == 77);
  CHECK(t[0] == 49406);
  CHECK(t[76] == 49407);
  for (int i = 1; i < 76; ++i) CHECK(t[i] == 1929);

  // Exactly context_length tokens fits; one more does not.
  std::string fits;
  for (int i = 0; i < 75; ++i) fits += "dog ";
  auto f = tok.tokenize(fits);
  CHECK(f[75] == 1929);
  CHECK(f[76] == 49407);
  CHECK_THROWS_AS(tok.tokenize(fits + "dog"), ga::ValueError);
  auto small = tok.tokenize("dog", 3, true);
  CHECK(join(small) == "49406 1929 49407");
  auto small2 = tok.tokenize("dog dog", 3, true);
  CHECK(join(small2) == "49406 1929 49407");
  CHECK_THROWS_AS(tok.tokenize("dog", 1), ga::ValueError);
}

TEST_CASE("tokenizer: invalid UTF-8 is a ValueError, never a crash") {
  if (!have_vocab()) {
    MESSAGE("skipped: shared vocabulary not found at " << kVocabPath);
    return;
  }
  const auto& tok = clip_tokenizer();
  for (const char* bad : {"\xff", "abc\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "a\x80" "b",
                          "\xf0\x9f\x98"}) {
    INFO("input bytes: " << std::string(bad));
    CHECK_THROWS_AS(tok.encode(bad), ga::ValueError);
  }
  CHECK_NOTHROW(tok.encode(std::string("nul\0inside", 10)));
}

TEST_CASE("tokenizer: decode inverts encode on ASCII text") {
  if (!have_vocab()) {
    MESSAGE("skipped: shared vocabulary not found at " << kVocabPath);
    return;
  }
  const auto& tok = clip_tokenizer();
  CHECK(tok.decode(tok.encode("a photo of a dog.")) == "a photo of a dog . ");
  CHECK(tok.decode(tok.encode("hello world")) == "hello world ");
  CHECK(tok.decode({49406, 1929, 49407}) == "<|startoftext|>dog <|endoftext|>");
  CHECK(tok.decode(tok.encode("caf\xc3\xa9")) == "caf\xc3\xa9 ");
  CHECK_THROWS_AS(tok.decode({49408}), ga::ValueError);
  CHECK_THROWS_AS(tok.decode({-1}), ga::ValueError);
}

TEST_CASE("tokenizer: a small merges file gives the BPE the reference would") {
  // Bytes: 'a' 'b' 'c'; merges "a b" then "ab c</w>".
  auto tok = ga::clip::Tokenizer::from_merges_text("#version: test\na b\nab c</w>\n");
  CHECK(tok.vocab_size() == 512 + 2 + 2);
  auto ids = tok.encode("abc");
  REQUIRE(ids.size() == 1);
  CHECK(ids[0] == 513);
  CHECK(tok.decode(ids) == "abc ");
  auto ids2 = tok.encode("ab");
  REQUIRE(ids2.size() == 2);
  CHECK(ids2[0] == 64);   // 'a' (byte 0x61 is the 65th printable byte: '!' is id 0)
  CHECK(ids2[1] == 256 + 65);  // 'b</w>'
}

TEST_CASE("tokenizer: a repeated merge resolves as the reference's dicts do") {
  // The reference builds encoder = dict(zip(vocab, ids)) and bpe_ranks = dict(zip(merges,
  // ranks)), so for a merge listed twice the later entry wins both: "ab" is id 512 + 2 = 514
  // (not 512) and its rank is 2. simple_tokenizer.py from the openai-clip package, given this
  // file gzipped, encodes "abx" as [514, 343].
  auto tok = ga::clip::Tokenizer::from_merges_text("#version: test\na b\nc d\na b\n");
  CHECK(tok.vocab_size() == 512 + 3 + 2);
  auto ids = tok.encode("abx");
  REQUIRE(ids.size() == 2);
  CHECK(ids[0] == 514);
  CHECK(ids[1] == 256 + ('x' - '!'));  // 'x</w>'
}

TEST_CASE("tokenizer: malformed merges files are IOErrors naming the line") {
  auto expect_io = [](const std::string& text, const std::string& needle) {
    try {
      ga::clip::Tokenizer::from_merges_text(text, "merges.txt");
      FAIL("no error for: " << text);
    } catch (const ga::IOError& e) {
      std::string msg = e.what();
      CHECK(msg.find("merges.txt") != std::string::npos);
      CHECK(msg.find(needle) != std::string::npos);
    }
  };
  expect_io("#v\na b\nthree parts here\n", "line 3");
  expect_io("#v\na b\nx\n", "line 3");
  expect_io("#v\nab c\n", "line 2");          // "ab" is not defined yet
  expect_io("#v\na</w> b\n", "line 2");        // end-of-word on the left
  expect_io("#v\n", "no merges");
  expect_io("#v\na \xff\n", "line 2");
  CHECK_THROWS_AS(ga::clip::Tokenizer::from_file("/nonexistent/vocab.txt"), ga::IOError);
}

TEST_CASE("tokenizer: corrupt gzip vocabulary is an IOError") {
  if (!have_vocab()) {
    MESSAGE("skipped: shared vocabulary not found at " << kVocabPath);
    return;
  }
  std::ifstream f(kVocabPath, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::string path = "/tmp/ga_test_corrupt_vocab.txt.gz";
  for (size_t cut : {size_t(5), size_t(12), data.size() / 2, data.size() - 3}) {
    std::ofstream(path, std::ios::binary) << data.substr(0, cut);
    CHECK_THROWS_AS(ga::clip::Tokenizer::from_file(path), ga::IOError);
  }
  std::string flipped = data;
  flipped[data.size() / 3] ^= 0x55;
  std::ofstream(path, std::ios::binary) << flipped;
  CHECK_THROWS_AS(ga::clip::Tokenizer::from_file(path), ga::Error);
  std::remove(path.c_str());
}

TEST_CASE("tokenizer: one instance is safe to share between threads") {
  if (!have_vocab()) {
    MESSAGE("skipped: shared vocabulary not found at " << kVocabPath);
    return;
  }
  const auto& tok = clip_tokenizer();
  const std::vector<std::string> texts = {"a photo of a golden retriever.", "caf\xc3\xa9 au lait", "dog dog dog",
                                          "\xe6\x97\xa5\xe6\x9c\xac"};
  std::vector<std::string> expected;
  for (const auto& t : texts) expected.push_back(join(tok.encode(t)));
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int r = 0; r < 200; ++r)
        for (size_t i = 0; i < texts.size(); ++i) ok[k] += join(tok.encode(texts[i] + std::to_string(r % 7))) != "";
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k) CHECK(ok[k] == 800);
  for (size_t i = 0; i < texts.size(); ++i) CHECK(join(tok.encode(texts[i])) == expected[i]);
}
