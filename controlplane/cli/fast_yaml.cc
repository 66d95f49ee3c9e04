#include "controlplane/cli/fast_yaml.h"

#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "yaml-cpp/null.h"

namespace sluice::cli {
namespace {

// Reads one document's lines; any construct outside the subset sets failed_
// (the whole text then goes to yaml-cpp).
class FastYamlParser {
 public:
  struct Line {
    size_t begin;
    size_t end;  // the '\n' or the end of the text
  };

  FastYamlParser(const std::string& text, const std::vector<Line>& lines, FastYamlData* data)
      : text_(text), lines_(lines), data_(data) {}

  // The root of the document made of lines [first, last); -1 when it is
  // outside the subset.
  int64_t ParseDocument(size_t first, size_t last) {
    pos_ = first;
    end_ = last;
    SkipBlank();
    if (pos_ >= end_) return -1;  // an empty document: yaml-cpp decides
    int64_t root = ParseBlockNode(Indent(pos_));
    if (failed_) return -1;
    SkipBlank();
    if (pos_ != end_) return -1;
    return root;
  }

 private:
  static bool IsKeyStart(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  static bool IsKeyChar(char c) {
    return IsKeyStart(c) || (c >= '0' && c <= '9') || c == '.' || c == '/' || c == '-';
  }

  char At(size_t line, size_t col) const {
    size_t p = lines_[line].begin + col;
    return p < lines_[line].end ? text_[p] : '\n';
  }
  size_t Length(size_t line) const { return lines_[line].end - lines_[line].begin; }
  size_t Indent(size_t line) const {
    size_t col = 0;
    while (At(line, col) == ' ') ++col;
    return col;
  }
  bool Blank(size_t line) const {
    char c = At(line, Indent(line));
    return c == '\n' || c == '#';
  }
  void SkipBlank() {
    while (pos_ < end_ && Blank(pos_)) ++pos_;
  }
  int64_t Fail() {
    failed_ = true;
    return -1;
  }

  uint32_t Add(FastYamlData::Type type, int line) {
    data_->items.emplace_back();
    data_->items.back().type = type;
    data_->items.back().line = line;
    return static_cast<uint32_t>(data_->items.size() - 1);
  }
  uint32_t AddScalar(int line, std::string value, bool quoted) {
    uint32_t index = Add(FastYamlData::kScalar, line);
    data_->items[index].scalar = std::move(value);
    data_->items[index].quoted = quoted;
    return index;
  }

  // A plain key at `col` followed by ':' and a space or the line's end:
  // its length, else 0.
  size_t KeyLength(size_t line, size_t col) const {
    if (!IsKeyStart(At(line, col))) return 0;
    size_t n = 1;
    while (IsKeyChar(At(line, col + n))) ++n;
    if (At(line, col + n) != ':') return 0;
    char after = At(line, col + n + 1);
    return after == ' ' || after == '\n' ? n : 0;
  }
  bool IsEntry(size_t line, size_t col) const {
    char c = At(line, col);
    return c == '-' && (At(line, col + 1) == ' ' || At(line, col + 1) == '\n');
  }

  // The node whose first line is pos_, starting at column `col`.
  int64_t ParseBlockNode(size_t col) {
    if (IsEntry(pos_, col)) return ParseSequence(col);
    if (KeyLength(pos_, col) > 0) return ParseMap(col);
    size_t line = pos_;
    int64_t value = ParseInlineValue(line, col);
    if (failed_) return -1;
    ++pos_;
    SkipBlank();
    if (pos_ < end_ && Indent(pos_) > Indent(line)) return Fail();
    return value;
  }

  // A block mapping whose keys are at column `col`; its first key is on
  // pos_ (maybe after "- ").
  int64_t ParseMap(size_t col) {
    DepthGuard guard(this);
    if (failed_) return -1;
    uint32_t map = Add(FastYamlData::kMap, static_cast<int>(pos_));
    absl::flat_hash_set<std::string_view> keys;
    while (true) {
      size_t line = pos_;
      size_t n = KeyLength(line, col);
      if (n == 0) return Fail();
      std::string_view key(text_.data() + lines_[line].begin + col, n);
      // Duplicate keys: as yaml-cpp does.
      if (!keys.insert(key).second) return Fail();
      if (YAML::IsNullString(std::string(key))) return Fail();
      uint32_t key_node = AddScalar(static_cast<int>(line), std::string(key), false);
      size_t value_col = col + n + 1;
      while (At(line, value_col) == ' ') ++value_col;
      int64_t value;
      char c = At(line, value_col);
      if (c == '\n' || c == '#') {
        // The value is on the next lines: more indented, or a sequence at
        // this indentation. Nothing there would be a null.
        ++pos_;
        SkipBlank();
        if (pos_ >= end_) return Fail();
        size_t indent = Indent(pos_);
        if (indent > col) {
          value = ParseBlockNode(indent);
        } else if (indent == col && IsEntry(pos_, col)) {
          value = ParseSequence(col);
        } else {
          return Fail();
        }
      } else {
        value = ParseInlineValue(line, value_col);
        if (failed_) return -1;
        ++pos_;
        SkipBlank();
        if (pos_ < end_ && Indent(pos_) > col) return Fail();
      }
      if (failed_) return -1;
      data_->items[map].children.push_back(key_node);
      data_->items[map].children.push_back(static_cast<uint32_t>(value));
      if (pos_ >= end_) return map;
      size_t indent = Indent(pos_);
      if (indent < col) return map;
      if (indent > col || IsEntry(pos_, col)) return Fail();
    }
  }

  // A block sequence whose '-' are at column `col`.
  int64_t ParseSequence(size_t col) {
    DepthGuard guard(this);
    if (failed_) return -1;
    uint32_t seq = Add(FastYamlData::kSequence, static_cast<int>(pos_));
    while (true) {
      size_t line = pos_;
      if (!IsEntry(line, col)) return Fail();
      size_t item_col = col + 1;
      while (At(line, item_col) == ' ') ++item_col;
      char c = At(line, item_col);
      if (c == '\n' || c == '#' || IsEntry(line, item_col)) return Fail();
      int64_t item;
      if (KeyLength(line, item_col) > 0) {
        item = ParseMap(item_col);
      } else {
        item = ParseInlineValue(line, item_col);
        if (failed_) return -1;
        ++pos_;
        SkipBlank();
        if (pos_ < end_ && Indent(pos_) > col) return Fail();
      }
      if (failed_) return -1;
      data_->items[seq].children.push_back(static_cast<uint32_t>(item));
      if (pos_ >= end_) return seq;
      size_t indent = Indent(pos_);
      if (indent < col || (indent == col && !IsEntry(pos_, col))) return seq;
      if (indent > col) return Fail();
    }
  }

  // A scalar or a one-line flow collection at (line, col); what follows it
  // on the line may only be spaces and a comment.
  int64_t ParseInlineValue(size_t line, size_t col) {
    size_t p = col;
    int64_t value;
    char c = At(line, p);
    if (c == '{' || c == '[' || c == '"' || c == '\'') {
      value = ParseFlowValue(line, &p);
      if (failed_) return -1;
      while (At(line, p) == ' ') ++p;
      if (At(line, p) != '\n' && !(At(line, p) == '#' && At(line, p - 1) == ' ')) return Fail();
      return value;
    }
    if (!PlainStart(line, p)) return Fail();
    size_t end = p;
    while (true) {
      char d = At(line, end);
      if (d == '\n') break;
      if (d == '#' && At(line, end - 1) == ' ') break;  // a comment
      if (d == ':') {
        // "http://x" is one scalar; "a: b" would be a mapping.
        char after = At(line, end + 1);
        if (after == ' ' || after == '\n' || !IsPlainChar(after)) return Fail();
      } else if (d != ' ' && !IsPlainChar(d)) {
        return Fail();
      }
      ++end;
    }
    size_t stop = end;
    while (stop > p && At(line, stop - 1) == ' ') --stop;
    std::string text(text_.data() + lines_[line].begin + p, stop - p);
    if (YAML::IsNullString(text)) return Fail();
    return AddScalar(static_cast<int>(line), std::move(text), false);
  }

  // Whether a plain scalar may start at (line, p): a letter, digit, or one
  // of "/_.+", or '-' before a character other than a space.
  bool PlainStart(size_t line, size_t p) const {
    char c = At(line, p);
    if (c == '-') return At(line, p + 1) != ' ' && At(line, p + 1) != '\n';
    return IsPlainChar(c) && c != '=' && c != '@';
  }
  // The characters a plain scalar may hold (besides ':' and ' ' where the
  // caller allows them): yaml-cpp reads others in ways of its own (a '?' in
  // a flow is an error to it), so they go to yaml-cpp.
  static bool IsPlainChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '/' || c == '_' || c == '.' || c == '+' || c == '-' || c == '=' || c == '@';
  }

  // A value inside (or opening) a flow collection, at *p; *p moves past it.
  int64_t ParseFlowValue(size_t line, size_t* p) {
    char c = At(line, *p);
    int node_line = static_cast<int>(line);
    if (c == '"' || c == '\'') {
      std::string value;
      size_t q = *p + 1;
      while (true) {
        char d = At(line, q);
        if (d == '\n' || d == '\\') return Fail();  // multi-line, or escapes
        if (d == c) {
          if (c == '\'' && At(line, q + 1) == '\'') {
            value += '\'';
            q += 2;
            continue;
          }
          break;
        }
        value += d;
        ++q;
      }
      *p = q + 1;
      return AddScalar(node_line, std::move(value), true);
    }
    if (c == '{' || c == '[') {
      DepthGuard guard(this);
      if (failed_) return -1;
      const bool is_map = c == '{';
      const char close = is_map ? '}' : ']';
      uint32_t node = Add(is_map ? FastYamlData::kMap : FastYamlData::kSequence, node_line);
      size_t q = *p + 1;
      while (At(line, q) == ' ') ++q;
      if (At(line, q) == close) {
        *p = q + 1;
        return node;
      }
      absl::flat_hash_set<std::string_view> keys;
      while (true) {
        if (is_map) {
          if (!IsKeyStart(At(line, q))) return Fail();
          size_t n = 1;
          while (IsKeyChar(At(line, q + n))) ++n;
          if (At(line, q + n) != ':' || At(line, q + n + 1) != ' ') return Fail();
          std::string_view key(text_.data() + lines_[line].begin + q, n);
          if (!keys.insert(key).second) return Fail();
          if (YAML::IsNullString(std::string(key))) return Fail();
          uint32_t key_node = AddScalar(node_line, std::string(key), false);
          data_->items[node].children.push_back(key_node);
          q += n + 1;
          while (At(line, q) == ' ') ++q;
        }
        int64_t value = ParseFlowValue(line, &q);
        if (failed_) return -1;
        data_->items[node].children.push_back(static_cast<uint32_t>(value));
        while (At(line, q) == ' ') ++q;
        if (At(line, q) == close) {
          *p = q + 1;
          return node;
        }
        if (At(line, q) != ',') return Fail();
        ++q;
        while (At(line, q) == ' ') ++q;
        if (At(line, q) == close) return Fail();  // a trailing comma
      }
    }
    if (!PlainStart(line, *p)) return Fail();
    size_t end = *p;
    while (true) {
      char d = At(line, end);
      if (d == '\n' || d == ',' || d == ']' || d == '}') break;
      if (d != ' ' && !IsPlainChar(d)) return Fail();
      ++end;
    }
    size_t stop = end;
    while (stop > *p && At(line, stop - 1) == ' ') --stop;
    std::string text(text_.data() + lines_[line].begin + *p, stop - *p);
    if (text.empty() || YAML::IsNullString(text)) return Fail();
    *p = end;
    return AddScalar(node_line, std::move(text), false);
  }

  // Collections nest at most kMaxDepth deep here; deeper text goes to
  // yaml-cpp (no stack is exhausted on a hostile file).
  static constexpr int kMaxDepth = 64;
  struct DepthGuard {
    explicit DepthGuard(FastYamlParser* parser) : parser(parser) {
      if (++parser->depth_ > kMaxDepth) parser->Fail();
    }
    ~DepthGuard() { --parser->depth_; }
    FastYamlParser* parser;
  };

  const std::string& text_;
  const std::vector<Line>& lines_;
  FastYamlData* data_;
  size_t pos_ = 0;
  size_t end_ = 0;
  int depth_ = 0;
  bool failed_ = false;
};

}  // namespace

const std::string& FastYamlNode::Scalar() const {
  static const std::string kEmpty;
  return IsScalar() ? item().scalar : kEmpty;
}

size_t FastYamlNode::size() const {
  if (index_ < 0 || item().type == FastYamlData::kScalar) return 0;
  return item().type == FastYamlData::kMap ? item().children.size() / 2
                                           : item().children.size();
}

FastYamlNode FastYamlNode::operator[](size_t i) const {
  if (!IsSequence() || i >= item().children.size()) return FastYamlNode();
  return FastYamlNode(data_, item().children[i]);
}

FastYamlNode FastYamlNode::operator[](const std::string& key) const {
  if (!IsMap()) return FastYamlNode();
  const auto& children = item().children;
  for (size_t i = 0; i + 1 < children.size(); i += 2) {
    if (data_->items[children[i]].scalar == key) return FastYamlNode(data_, children[i + 1]);
  }
  return FastYamlNode();
}

FastYamlNode::const_iterator FastYamlNode::begin() const {
  static const FastYamlData::Item kNone;
  return const_iterator(data_, index_ >= 0 ? &item() : &kNone, 0);
}

FastYamlNode::const_iterator FastYamlNode::end() const {
  static const FastYamlData::Item kNone;
  return const_iterator(data_, index_ >= 0 ? &item() : &kNone,
                        index_ >= 0 && item().type != FastYamlData::kScalar
                            ? item().children.size()
                            : 0);
}

FastYamlItem FastYamlNode::const_iterator::operator*() const {
  FastYamlItem out;
  if (item_->type == FastYamlData::kMap) {
    out.first = FastYamlNode(data_, item_->children[position_]);
    out.second = FastYamlNode(data_, item_->children[position_ + 1]);
  } else {
    static_cast<FastYamlNode&>(out) = FastYamlNode(data_, item_->children[position_]);
  }
  return out;
}

std::optional<std::shared_ptr<const FastYamlData>> ParseFastYaml(const std::string& text) {
  for (char c : text) {
    if ((c < 0x20 || c > 0x7e) && c != '\n') return std::nullopt;
  }
  std::vector<FastYamlParser::Line> lines;
  for (size_t begin = 0; begin <= text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    lines.push_back({begin, end});
    begin = end + 1;
  }
  auto data = std::make_shared<FastYamlData>();
  FastYamlParser parser(text, lines, data.get());
  // Documents: the lines between "---" separators.
  std::vector<std::pair<size_t, size_t>> documents;
  size_t first = 0;
  bool separated = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line(text.data() + lines[i].begin, lines[i].end - lines[i].begin);
    if (line.substr(0, 3) == "..." || line.substr(0, 1) == "%") return std::nullopt;
    if (line.substr(0, 3) != "---") continue;
    // "---", or "---" and a space, more spaces and a comment ("--- # next"):
    // a separator; with anything else on the line, yaml-cpp decides.
    if (line.size() > 3) {
      if (line[3] != ' ') return std::nullopt;
      const size_t k = line.find_first_not_of(' ', 3);
      if (k != std::string_view::npos && line[k] != '#') return std::nullopt;
    }
    if (!separated) {
      // Blank and comment lines before the first separator are no document.
      bool blank = true;
      for (size_t j = 0; j < i; ++j) {
        std::string_view l(text.data() + lines[j].begin, lines[j].end - lines[j].begin);
        size_t k = l.find_first_not_of(' ');
        if (k != std::string_view::npos && l[k] != '#') blank = false;
      }
      if (!blank) documents.emplace_back(0, i);
      separated = true;
    } else {
      documents.emplace_back(first, i);
    }
    first = i + 1;
  }
  // A last "---" with nothing after it (generators end every document so)
  // opens an empty document, which the loader skips: left out here, it
  // keeps the file on this path (yaml-cpp took 4 times the memory).
  bool trailing_blank = !documents.empty();
  for (size_t j = first; j < lines.size() && trailing_blank; ++j) {
    std::string_view l(text.data() + lines[j].begin, lines[j].end - lines[j].begin);
    size_t k = l.find_first_not_of(' ');
    trailing_blank = k == std::string_view::npos || l[k] == '#';
  }
  if (!trailing_blank) documents.emplace_back(first, lines.size());
  for (const auto& [begin, end] : documents) {
    int64_t root = parser.ParseDocument(begin, end);
    if (root < 0) return std::nullopt;
    data->documents.push_back(static_cast<uint32_t>(root));
  }
  return std::shared_ptr<const FastYamlData>(std::move(data));
}

}  // namespace sluice::cli
