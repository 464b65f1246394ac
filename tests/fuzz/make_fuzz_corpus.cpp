// Writes the seed corpora of the fuzz targets: real saved files built from small real data, the
// real model and tokenizer, the first lines of the real traces, and a few tiny inputs made in
// code (a small valid model, a small tokenizer, varints).
//
//   make_fuzz_corpus OUT_DIR [DATA_DIR]
//
// writes OUT_DIR/<target>/<seed> for every target (fuzz_azure_trace included). DATA_DIR defaults
// to $LLMDS_DATA_DIR, else ../shared/data (relative to the working directory: run it from the
// project root). Without the data folder only the seeds made in code are written, with a warning.
// Seeds of the saved-file formats start with the mode byte of fuzz_common.hpp (1: the target
// repairs the checksum, so mutations of the payload reach the parser).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "llmds/ann/hnsw.hpp"
#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/varint.hpp"
#include "llmds/kv/tiered/disk_store.hpp"
#ifdef LLMDS_HAS_ZMQ
#include "llmds/kv/routing/kv_event_wire.hpp"
#endif
#include "llmds/sketch/count_min_sketch.hpp"
#include "llmds/text/analyzer.hpp"
#include "llmds/text/inverted_index.hpp"
#include "llmds/text/posting_list.hpp"

namespace fs = std::filesystem;

namespace {

fs::path out_root;
int written = 0;

void write_seed(const std::string& target, const std::string& name, std::string_view bytes) {
  const fs::path dir = out_root / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + (dir / name).string());
  ++written;
}

// A saved file as a seed: mode byte 1 (repair the checksum) unless told otherwise.
void write_file_seed(const std::string& target, const std::string& name, const std::string& file, char mode = 1) {
  write_seed(target, name, std::string(1, mode) + file);
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string first_lines(const fs::path& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string line, out;
  for (std::size_t i = 0; i < n && std::getline(in, line); ++i) out += line + '\n';
  return out;
}

// TEXMEX .fvecs: per vector an int32 dimension, then that many float32.
std::vector<std::vector<float>> read_fvecs(const fs::path& path, std::size_t n) {
  const std::string bytes = read_all(path);
  std::vector<std::vector<float>> rows;
  std::size_t pos = 0;
  while (rows.size() < n && pos + 4 <= bytes.size()) {
    std::int32_t d = 0;
    std::memcpy(&d, bytes.data() + pos, 4);
    pos += 4;
    std::vector<float> row(static_cast<std::size_t>(d));
    std::memcpy(row.data(), bytes.data() + pos, row.size() * sizeof(float));
    pos += row.size() * sizeof(float);
    rows.push_back(std::move(row));
  }
  return rows;
}

// SMART collections (Cranfield, CISI): records start ".I <id>"; fields are lines starting with
// '.'; the kept fields' text is joined.
std::vector<std::string> read_smart(const fs::path& path, std::size_t n, std::string_view fields) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> docs;
  std::string line;
  bool keep = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind(".I", 0) == 0) {
      if (docs.size() == n) break;
      docs.emplace_back();
      keep = false;
    } else if (line.size() >= 2 && line[0] == '.' && std::isupper(static_cast<unsigned char>(line[1]))) {
      keep = fields.find(line[1]) != std::string_view::npos;
    } else if (keep && !docs.empty()) {
      docs.back() += line + ' ';
    }
  }
  return docs;
}

void hnsw_seeds(const fs::path& data) {
  const auto sift = read_fvecs(data / "ann/sift5k/sift5k_base.fvecs", 400);
  auto build = [&](std::size_t n, std::size_t dim, llmds::Metric metric, std::size_t M, std::optional<std::uint64_t> seed,
                   std::size_t deleted) {
    llmds::HNSWConfig c;
    c.dim = dim;
    c.M = M;
    c.ef_construction = 32;
    c.seed = seed;
    c.metric = metric;
    llmds::HNSW index(c);
    // Rows whose first dim values are all zero have no cosine distance: those are passed over.
    for (std::size_t i = 0, added = 0; added < n; ++i) {
      const std::span<const float> row(sift.at(i).data(), dim);
      if (std::all_of(row.begin(), row.end(), [](float x) { return x == 0.0f; })) continue;
      index.add(row, static_cast<std::int64_t>(added++) * 7 - 20);
    }
    for (std::size_t i = 0; i < deleted; ++i) index.mark_deleted(static_cast<std::int64_t>(i * 3) * 7 - 20);
    return index.to_bytes();
  };
  write_file_seed("fuzz_hnsw", "sift40_l2_128d", build(40, 128, llmds::Metric::l2, 8, 1, 0));
  write_file_seed("fuzz_hnsw", "sift40_l2_128d_checksum_as_is", build(40, 128, llmds::Metric::l2, 8, 1, 0), 0);
  write_file_seed("fuzz_hnsw", "sift150_cosine_16d_deleted", build(150, 16, llmds::Metric::cosine, 4, 2, 6));
  write_file_seed("fuzz_hnsw", "sift12_cosine_8d", build(12, 8, llmds::Metric::cosine, 2, 5, 0));
  write_file_seed("fuzz_hnsw", "sift30_ip_8d_unseeded", build(30, 8, llmds::Metric::ip, 2, std::nullopt, 1));
  write_file_seed("fuzz_hnsw", "sift3_l2_4d", build(3, 4, llmds::Metric::l2, 2, 3, 0));
  llmds::HNSWConfig empty;
  empty.dim = 16;
  empty.seed = 4;
  write_file_seed("fuzz_hnsw", "empty_16d", llmds::HNSW(empty).to_bytes());
}

void inverted_index_seeds(const fs::path& data) {
  const auto cran = read_smart(data / "ir/cranfield/cran.all.1400", 300, "TW");
  const auto cran_titles = read_smart(data / "ir/cranfield/cran.all.1400", 300, "T");
  const auto cisi = read_smart(data / "ir/cisi/CISI.ALL", 20, "TW");
  auto build = [](const std::vector<std::string>& docs, std::size_t n, llmds::InvertedIndexConfig config,
                  std::size_t removed) {
    llmds::InvertedIndex index(std::move(config));
    for (std::size_t i = 0; i < n; ++i) index.add_document(static_cast<std::int64_t>(i) + 1, docs[i]);
    for (std::size_t i = 0; i < removed; ++i) index.remove_document(static_cast<std::int64_t>(2 * i) + 1);
    return index.to_bytes();
  };
  llmds::InvertedIndexConfig english;
  english.analyzer = llmds::text::AnalyzerConfig::english();
  write_file_seed("fuzz_inverted_index", "cranfield8_default", build(cran, 8, {}, 0));
  write_file_seed("fuzz_inverted_index", "cranfield8_default_checksum_as_is", build(cran, 8, {}, 0), 0);
  write_file_seed("fuzz_inverted_index", "cranfield12_english_removed", build(cran, 12, english, 3));
  // Titles of 300 documents: "of" and "the" have more than one block of 128 postings.
  write_file_seed("fuzz_inverted_index", "cranfield300_titles", build(cran_titles, 300, {}, 0));
  llmds::InvertedIndexConfig stemmed;
  stemmed.k1 = 0.9;
  stemmed.b = 0.4;
  stemmed.analyzer.stem = true;
  stemmed.analyzer.stop_words = {"the", "of"};
  write_file_seed("fuzz_inverted_index", "cisi6_stemmed", build(cisi, 6, stemmed, 0));
  write_file_seed("fuzz_inverted_index", "empty", llmds::InvertedIndex().to_bytes());

  // Posting lists of real terms, as fuzz_posting_list reads them: count (u16), number of
  // documents (u16), then the bytes PostingList::bytes() holds.
  llmds::text::Analyzer analyzer;
  std::map<std::string, std::vector<std::pair<std::uint32_t, std::uint32_t>>> postings;  // term -> (doc, tf)
  for (std::uint32_t d = 0; d < 300; ++d) {
    std::map<std::string, std::uint32_t> tf;
    analyzer.for_each_term(cran_titles[d], [&](std::string_view t) { ++tf[std::string(t)]; });
    for (const auto& [term, n] : tf) postings[term].emplace_back(d, n);
  }
  for (const std::string term : {"of", "the", "flow", "boundary", "layer", "heat", "supersonic"}) {
    const auto& list = postings[term];
    llmds::text::PostingList p;
    for (const auto& [doc, tf] : list) {
      p.reserve_one_more();
      p.append(doc, tf, 10);
    }
    std::string seed;
    for (const std::uint32_t v : {static_cast<std::uint32_t>(list.size()), 300u}) {
      seed.push_back(static_cast<char>(v & 0xFF));
      seed.push_back(static_cast<char>(v >> 8));
    }
    const auto bytes = p.bytes();
    seed.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    write_seed("fuzz_posting_list", "cranfield_titles_" + term, seed);
  }
}

void count_min_sketch_seeds(const fs::path& data) {
  std::vector<std::string> blocks;  // the Mooncake trace's block hash ids, as items
  {
    std::istringstream lines(first_lines(data / "traces/mooncake_fast25_conversation_trace.jsonl", 200));
    std::string line;
    while (std::getline(lines, line)) {
      const auto open = line.find('['), close = line.find(']');
      std::istringstream ids(line.substr(open + 1, close - open - 1));
      std::string id;
      while (std::getline(ids, id, ',')) blocks.push_back(id.substr(id.find_first_not_of(' ')));
    }
  }
  auto build = [](const std::vector<std::string>& items, std::uint32_t width, std::uint32_t depth, bool conservative,
                  std::uint32_t top_k, std::uint64_t seed) {
    llmds::CountMinSketchConfig c;
    c.width = width;
    c.depth = depth;
    c.conservative = conservative;
    c.top_k = top_k;
    c.seed = seed;
    llmds::CountMinSketch sketch(c);
    for (const auto& item : items) sketch.add(item);
    return sketch.to_bytes();
  };
  write_file_seed("fuzz_count_min_sketch", "mooncake_blocks_conservative_top5", build(blocks, 64, 4, true, 5, 0));
  write_file_seed("fuzz_count_min_sketch", "mooncake_blocks_conservative_top5_checksum_as_is",
                  build(blocks, 64, 4, true, 5, 0), 0);
  write_file_seed("fuzz_count_min_sketch", "mooncake_blocks_plain", build(blocks, 32, 3, false, 0, 1));
  std::vector<std::string> words;
  llmds::text::Analyzer analyzer;
  for (const auto& doc : read_smart(data / "ir/cranfield/cran.all.1400", 40, "W")) {
    analyzer.for_each_term(doc, [&](std::string_view t) { words.emplace_back(t); });
  }
  write_file_seed("fuzz_count_min_sketch", "cranfield_words_plain_top8", build(words, 128, 2, false, 8, 7));
  write_file_seed("fuzz_count_min_sketch", "empty_top3", build({}, 4, 1, true, 3, 0));
}

void trace_seeds(const fs::path& data) {
  for (const char* name : {"mooncake_fast25_conversation_trace", "mooncake_fast25_synthetic_trace"}) {
    const fs::path path = data / "traces" / (std::string(name) + ".jsonl");
    write_seed("fuzz_mooncake_trace", std::string(name) + "_20_lines", first_lines(path, 20));
    write_seed("fuzz_mooncake_trace", std::string(name) + "_1_line", first_lines(path, 1));
  }
  for (const char* name : {"azure_llm_2023_code", "azure_llm_2023_conv"}) {
    const fs::path path = data / "traces" / (std::string(name) + ".csv");
    // fuzz_azure_trace.py's mode byte: 0 the rows as a plain CSV, 1 gzipped by the target.
    write_seed("fuzz_azure_trace", std::string(name) + "_20_rows", '\0' + first_lines(path, 21));
    write_seed("fuzz_azure_trace", std::string(name) + "_20_rows_gzipped", '\1' + first_lines(path, 21));
  }
}

void model_seeds(const fs::path& data) {
  write_seed("fuzz_llama_model", "stories260K", read_all(data / "models/stories260K.bin"));
  const std::string tok = read_all(data / "models/tok512.bin");
  write_seed("fuzz_tokenizer", "tok512", std::string("\x00\x02", 2) + tok);
}

// A llama2.c v0 checkpoint made in code: the same format as stories260K, small enough for many
// executions per second. Weights are small, varied, finite.
std::string tiny_model(std::int32_t dim, std::int32_t hidden, std::int32_t layers, std::int32_t heads,
                       std::int32_t kv_heads, std::int32_t vocab, std::int32_t seq_len) {
  std::string out;
  for (const std::int32_t v : {dim, hidden, layers, heads, kv_heads, vocab, seq_len}) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  const std::int64_t d = dim, h = hidden, l = layers, kv = dim / heads * kv_heads, v = std::abs(vocab);
  std::int64_t floats = v * d + l * (2 * d + 2 * d * d + 2 * kv * d + 3 * h * d) + d + seq_len * (dim / heads);
  if (vocab < 0) floats += v * d;
  for (std::int64_t i = 0; i < floats; ++i) {
    const float w = static_cast<float>((i * 37 % 101) - 50) / 100.0f;
    out.append(reinterpret_cast<const char*>(&w), sizeof w);
  }
  return out;
}

// A llama2.c tokenizer made in code: <unk>, <s>, </s>, then `pieces` with falling scores.
std::string tiny_tokenizer(const std::vector<std::string>& pieces) {
  std::string out;
  auto put_i32 = [&](std::int32_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto put_f32 = [&](float v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  std::vector<std::string> all = {"<unk>", "\n<s>\n", "\n</s>\n"};
  all.insert(all.end(), pieces.begin(), pieces.end());
  std::size_t longest = 0;
  for (const auto& p : all) longest = std::max(longest, p.size());
  const auto n = static_cast<std::uint16_t>(all.size());
  out.push_back(static_cast<char>(n & 0xFF));
  out.push_back(static_cast<char>(n >> 8));
  put_i32(static_cast<std::int32_t>(longest));
  for (std::size_t i = 0; i < all.size(); ++i) {
    put_f32(i < 3 ? 0.0f : -static_cast<float>(i));
    put_i32(static_cast<std::int32_t>(all[i].size()));
    out += all[i];
  }
  return out;
}

// Header pages of real block files: with and without a parent, with a block's tokens.
void block_file_header_seeds() {
  llmds::DiskStoreConfig config;
  config.directory = "unused";
  config.geometry = llmds::BlockGeometry{16, 2, 2, 64, llmds::ScalarType::kFloat16};
  config.hash_bytes = 32;
  std::string page(llmds::DiskStore::kHeaderBytes, '\0');
  auto page_of = [&](const llmds::StoredBlock& b, std::uint64_t checksum) {
    if (!llmds::DiskStore::encode_header(b, checksum, config, reinterpret_cast<std::byte*>(page.data()))) {
      throw std::runtime_error("a seed header does not fit its page");
    }
    return page;
  };
  llmds::StoredBlock first;
  first.hash.assign(32, std::byte{0x11});
  first.created_ns = 1764900000000000000ULL;
  write_file_seed("fuzz_block_file_header", "first_block_no_tokens", page_of(first, 42));
  llmds::StoredBlock child = first;
  child.hash.assign(32, std::byte{0x22});
  child.parent = first.hash;
  child.priority = 80;
  for (int t = 0; t < 16; ++t) child.tokens.push_back(1000 + t);
  write_file_seed("fuzz_block_file_header", "child_with_tokens", page_of(child, 7));
  write_file_seed("fuzz_block_file_header", "child_with_tokens_checksum_as_is", page_of(child, 7), 0);
}

#ifdef LLMDS_HAS_ZMQ
// KV event batches as a publisher sends them, in both encodings.
void kv_event_batch_seeds() {
  llmds::KVEventBatch<std::int64_t> batch{3, {}};
  batch.events.emplace_back(llmds::BlockStored<std::int64_t>{{5, 6}, std::int64_t{4}, {1, 2, 3, 4}, 2, llmds::Tier::kHost});
  batch.events.emplace_back(llmds::BlockRemoved<std::int64_t>{{7, -8}, llmds::Tier::kPrimary});
  batch.events.emplace_back(llmds::AllBlocksCleared{});
  llmds::KVEventWireFormat format;
  write_seed("fuzz_kv_event_batch", "map", llmds::encode_kv_event_batch(batch, 1764900000.5, format));
  format.encoding = llmds::KVEventEncoding::kArray;
  format.data_parallel_rank = std::nullopt;
  write_seed("fuzz_kv_event_batch", "array", llmds::encode_kv_event_batch(batch, 1764900000.5, format));
}
#endif

void seeds_made_in_code() {
#ifdef LLMDS_HAS_ZMQ
  kv_event_batch_seeds();
#endif
  block_file_header_seeds();
  write_seed("fuzz_llama_model", "tiny_shared", tiny_model(8, 16, 1, 2, 1, 12, 4));
  write_seed("fuzz_llama_model", "tiny_unshared_2_layers", tiny_model(8, 12, 2, 4, 2, -10, 3));

  std::vector<std::string> bytes_and_merges;
  for (int b = 0; b < 256; ++b) {
    char piece[8];
    std::snprintf(piece, sizeof piece, "<0x%02X>", b);
    bytes_and_merges.emplace_back(piece);
  }
  for (const char* p : {" ", "a", "n", "e", " a", "an", " an", "O", "On", "ce", " t"}) bytes_and_merges.emplace_back(p);
  write_seed("fuzz_tokenizer", "tiny_byte_fallback", tiny_tokenizer(bytes_and_merges));
  write_seed("fuzz_tokenizer", "tiny_no_bytes", tiny_tokenizer({" ", "a", "b", " a", "ab"}));

  for (const std::uint64_t v : {0ull, 1ull, 127ull, 128ull, 300ull, 16384ull, 1ull << 32, 1ull << 63, ~0ull}) {
    std::vector<std::uint8_t> enc;
    llmds::detail::encode_varint(v, enc);
    llmds::detail::encode_varint(v / 3, enc);
    write_seed("fuzz_varint", "value_" + std::to_string(v), std::string(enc.begin(), enc.end()));
  }
  write_seed("fuzz_varint", "overlong_zero", std::string("\x80\x80\x00", 3));
  write_seed("fuzz_varint", "eleven_bytes", std::string(10, '\xff') + '\x01');
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: make_fuzz_corpus OUT_DIR [DATA_DIR]\n");
    return 2;
  }
  out_root = argv[1];
  fs::path data;
  if (argc == 3) {
    data = argv[2];
  } else if (const char* env = std::getenv("LLMDS_DATA_DIR"); env != nullptr && *env != '\0') {
    data = env;
  } else {
    data = "../shared/data";
  }
  try {
    seeds_made_in_code();
    if (fs::is_directory(data)) {
      hnsw_seeds(data);
      inverted_index_seeds(data);
      count_min_sketch_seeds(data);
      trace_seeds(data);
      model_seeds(data);
    } else {
      std::fprintf(stderr, "make_fuzz_corpus: no data folder at %s; only the seeds made in code were written\n",
                   data.string().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_fuzz_corpus: %s\n", e.what());
    return 1;
  }
  std::printf("make_fuzz_corpus: %d seeds in %s\n", written, out_root.string().c_str());
  return 0;
}
