#include "dataplane/http/header_map.h"

#include <algorithm>

#include "dataplane/http/http_util.h"

namespace sluice::http {

const std::string* HeaderMap::Get(std::string_view name) const {
  for (const Field& f : fields_) {
    if (EqualsIgnoreCase(f.name, name)) return &f.value;
  }
  return nullptr;
}

std::vector<HeaderField> HeaderMap::Views() const {
  std::vector<HeaderField> views;
  views.reserve(fields_.size());
  for (const Field& f : fields_) views.push_back({f.name, f.value});
  return views;
}

size_t HeaderMap::Count(std::string_view name) const {
  size_t n = 0;
  for (const Field& f : fields_) n += EqualsIgnoreCase(f.name, name) ? 1 : 0;
  return n;
}

void HeaderMap::Add(std::string_view name, std::string_view value) {
  fields_.push_back(Field{std::string(name), std::string(value)});
}

void HeaderMap::Set(std::string_view name, std::string_view value) {
  auto first = std::find_if(fields_.begin(), fields_.end(),
                            [&](const Field& f) { return EqualsIgnoreCase(f.name, name); });
  if (first == fields_.end()) {
    Add(name, value);
    return;
  }
  first->value.assign(value);
  fields_.erase(std::remove_if(first + 1, fields_.end(),
                               [&](const Field& f) { return EqualsIgnoreCase(f.name, name); }),
                fields_.end());
}

size_t HeaderMap::Remove(std::string_view name) {
  size_t before = fields_.size();
  fields_.erase(std::remove_if(fields_.begin(), fields_.end(),
                               [&](const Field& f) { return EqualsIgnoreCase(f.name, name); }),
                fields_.end());
  return before - fields_.size();
}

size_t HeaderMap::RemoveOtherCgiSpellings(std::string_view name) {
  return RemoveOtherCgiSpellings(name, {});
}

size_t HeaderMap::RemoveOtherCgiSpellings(std::string_view name,
                                          const std::vector<std::string>& keep) {
  size_t before = fields_.size();
  fields_.erase(std::remove_if(fields_.begin(), fields_.end(),
                               [&](const Field& f) {
                                 if (!SameCgiName(f.name, name) || EqualsIgnoreCase(f.name, name)) {
                                   return false;
                                 }
                                 return std::none_of(keep.begin(), keep.end(),
                                                     [&](const std::string& k) {
                                                       return EqualsIgnoreCase(f.name, k);
                                                     });
                               }),
                fields_.end());
  return before - fields_.size();
}

size_t HeaderMap::ByteSize() const {
  size_t n = 0;
  for (const Field& f : fields_) n += f.name.size() + f.value.size();
  return n;
}

}  // namespace sluice::http
