// FastYaml: a reader for the plain subset of YAML that config files are
// written in, about ten times faster than yaml-cpp's YAML::LoadAll (155 ms
// for scripts/bench-config.sh's 1 MB file; yaml-cpp scans through streams
// and builds reference-counted nodes).
//
// It gives the same tree, scalar texts, quoting and line numbers as
// yaml-cpp, or nothing: whatever is outside the subset, or is not valid
// YAML, makes ParseFastYaml return std::nullopt and the caller reads the
// text with yaml-cpp instead, so its errors and rare constructs stay
// yaml-cpp's. The subset:
//   - documents separated by lines that are exactly "---" (one may open the
//     file after blank and comment lines); no empty document, no "...",
//     no directives;
//   - block mappings whose keys are plain words ([A-Za-z_][A-Za-z0-9_./-]*)
//     with distinct keys; block sequences ("- item"), also at the
//     indentation of the key they belong to, and "- key: value" items;
//   - flow mappings and sequences that open and close on one line;
//   - plain scalars on one line (not null: ~, null, empty), and quoted
//     scalars on one line without backslash escapes;
//   - comments, spaces for indentation; printable ASCII only (no tab, no
//     carriage return, no byte over 0x7e).
// No anchors, aliases, tags, block scalars (| >), explicit keys (?),
// multi-line scalars or flows.
//
// Nodes mimic the part of YAML::Node's interface that the loader uses
// (yaml_loader.cc is written once for both). Thread-compatible.
#ifndef SLUICE_CONTROLPLANE_CLI_FAST_YAML_H_
#define SLUICE_CONTROLPLANE_CLI_FAST_YAML_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sluice::cli {

// The nodes of every document of one text.
struct FastYamlData {
  enum Type : uint8_t { kScalar, kSequence, kMap };
  struct Item {
    Type type = kScalar;
    bool quoted = false;  // a quoted scalar: yaml-cpp's tag "!", else "?"
    int line = 0;         // 0-based, as YAML::Mark::line
    std::string scalar;
    // Sequence: the items' indexes. Map: key, value, key, value...
    std::vector<uint32_t> children;
  };
  std::vector<Item> items;
  std::vector<uint32_t> documents;  // the root of each document
};

class FastYamlNode;

// A map entry (first, second) or a sequence item (the node itself), as
// yaml-cpp's iterator value is both.
struct FastYamlItem;

// Where a node starts, as YAML::Mark (the line only).
struct FastYamlMark {
  int line = -1;
};

class FastYamlNode {
 public:
  FastYamlNode() = default;
  FastYamlNode(const FastYamlData* data, int64_t index) : data_(data), index_(index) {}

  explicit operator bool() const { return index_ >= 0; }
  bool IsDefined() const { return index_ >= 0; }
  bool IsNull() const { return false; }  // the subset has no null node
  bool IsScalar() const { return index_ >= 0 && item().type == FastYamlData::kScalar; }
  bool IsSequence() const { return index_ >= 0 && item().type == FastYamlData::kSequence; }
  bool IsMap() const { return index_ >= 0 && item().type == FastYamlData::kMap; }
  const std::string& Scalar() const;
  std::string Tag() const { return index_ >= 0 && item().quoted ? "!" : "?"; }
  FastYamlMark Mark() const { return {index_ >= 0 ? item().line : -1}; }
  // Sequence items (or map entries).
  size_t size() const;
  FastYamlNode operator[](size_t i) const;
  // The value of the first entry whose key is `key`; undefined when none.
  FastYamlNode operator[](const std::string& key) const;
  FastYamlNode operator[](const char* key) const { return (*this)[std::string(key)]; }
  template <typename T>
  T as() const;

  class const_iterator;
  const_iterator begin() const;
  const_iterator end() const;

 private:
  const FastYamlData::Item& item() const { return data_->items[index_]; }
  const FastYamlData* data_ = nullptr;
  int64_t index_ = -1;
};

template <>
inline std::string FastYamlNode::as<std::string>() const {
  return Scalar();
}

struct FastYamlItem : FastYamlNode {
  FastYamlNode first;
  FastYamlNode second;
};

class FastYamlNode::const_iterator {
 public:
  const_iterator(const FastYamlData* data, const FastYamlData::Item* item, size_t position)
      : data_(data), item_(item), position_(position) {}
  FastYamlItem operator*() const;
  const_iterator& operator++() {
    position_ += item_->type == FastYamlData::kMap ? 2 : 1;
    return *this;
  }
  bool operator!=(const const_iterator& other) const { return position_ != other.position_; }
  bool operator==(const const_iterator& other) const { return position_ == other.position_; }

 private:
  const FastYamlData* data_;
  const FastYamlData::Item* item_;
  size_t position_;
};

// Every document of `text`, or std::nullopt when the text is not entirely
// in the subset (read it with yaml-cpp then).
std::optional<std::shared_ptr<const FastYamlData>> ParseFastYaml(const std::string& text);

}  // namespace sluice::cli

#endif  // SLUICE_CONTROLPLANE_CLI_FAST_YAML_H_
