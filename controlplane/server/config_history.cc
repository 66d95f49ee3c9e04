#include "controlplane/server/config_history.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sluice::controlplane {
namespace {

bool SameContent(const api::ResourceMap& a, const api::ResourceMap& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    if (ia->first != ib->first || api::ContentHash(ia->second) != api::ContentHash(ib->second)) {
      return false;
    }
  }
  return true;
}

}  // namespace

void ApplyEntry(const HistoryEntry& entry, api::ResourceMap* content) {
  for (const auto* list : {&entry.added, &entry.changed}) {
    for (const PackedResource& r : list->items()) (*content)[r.id] = r.Unpack();
  }
  for (const api::ResourceId& id : entry.removed) content->erase(id);
}

ConfigHistory ConfigHistory::Restore(StoredHistory stored, size_t retention, uint64_t version,
                                     const api::ResourceMap& content, std::string* warning) {
  ConfigHistory history(retention);
  const bool had_history = !stored.entries.empty();
  history.stored_ = std::move(stored);
  auto& entries = history.stored_.entries;
  while (!entries.empty() && entries.back().version > version) entries.pop_back();
  history.Trim();
  if (!entries.empty() && version > entries.back().version) {
    // The newest entries are gone (a history.log record lost to a write the
    // disk never made): keep the older ones, and record the state's version
    // as one change from the newest kept (time, author and message unknown).
    const uint64_t kept = entries.back().version;
    if (absl::StatusOr<api::ResourceMap> last = history.ContentAt(kept); last.ok()) {
      const api::StateDiff diff = api::ComputeDiff(*last, content);
      HistoryEntry current;
      current.version = version;
      current.message = "(its history record was lost: time, author and message unknown)";
      for (const auto& id : diff.added) current.added.push_back(content.at(id));
      for (const auto& id : diff.changed) current.changed.push_back(content.at(id));
      current.removed = diff.removed;
      current.unchanged = static_cast<uint32_t>(diff.unchanged);
      history.Append(std::move(current), content);
      if (warning != nullptr) {
        *warning = absl::StrCat(
            "the history ends at version ", kept, ", before the state's version ", version,
            version == kept + 1 ? ""
                                : absl::StrCat(" (versions ", kept + 1, "..", version - 1,
                                               " are lost from it)"),
            "; version ", version, " is kept as one change from version ", kept,
            ", its time, author and message unknown");
      }
      return history;
    }
  }
  std::string mismatch;
  if (version == 0) {
    if (!entries.empty()) mismatch = "the state has no version yet";
  } else if (entries.empty()) {
    mismatch = "no entry is left for it";
  } else if (entries.back().version != version) {
    mismatch = absl::StrCat("it ends at version ", entries.back().version);
  } else if (absl::StatusOr<api::ResourceMap> last = history.ContentAt(version);
             !last.ok() || !SameContent(*last, content)) {
    mismatch = absl::StrCat("its version ", version, " has other content");
  }
  if (mismatch.empty()) return history;
  // No history file (a data dir from before history was kept) is no news;
  // one that disagrees with the state is.
  if (had_history && warning != nullptr) {
    *warning = absl::StrCat("the history does not match the state at version ", version, " (",
                            mismatch, "); it restarts from version ", version);
  }
  history.stored_ = StoredHistory{};
  if (version > 0) {
    // Made before history was kept: time, author and change unknown.
    HistoryEntry current;
    current.version = version;
    history.Append(std::move(current), content);
  }
  return history;
}

void ConfigHistory::Append(HistoryEntry entry, const api::ResourceMap& content) {
  if (stored_.entries.empty()) stored_.base = content;
  stored_.entries.push_back(std::move(entry));
  Trim();
}

void ConfigHistory::Trim() {
  auto& entries = stored_.entries;
  if (entries.size() <= retention_) return;
  const size_t drop = entries.size() - retention_;
  // The new oldest's content becomes the base.
  for (size_t i = 1; i <= drop; ++i) ApplyEntry(entries[i], &stored_.base);
  entries.erase(entries.begin(), entries.begin() + static_cast<std::ptrdiff_t>(drop));
}

const HistoryEntry* ConfigHistory::Find(uint64_t version) const {
  for (const HistoryEntry& e : stored_.entries) {
    if (e.version == version) return &e;
  }
  return nullptr;
}

absl::StatusOr<api::ResourceMap> ConfigHistory::ContentAt(uint64_t version) const {
  const auto& entries = stored_.entries;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].version != version) continue;
    api::ResourceMap content = stored_.base;
    for (size_t j = 1; j <= i; ++j) ApplyEntry(entries[j], &content);
    return content;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "version ", version, " is not in the history (", DescribeKept(),
      "; sluice-control --history sets how many)"));
}

std::string ConfigHistory::DescribeKept() const {
  const auto& entries = stored_.entries;
  if (entries.empty()) return "no version is kept";
  if (entries.size() == 1) return absl::StrCat("only version ", entries.front().version,
                                               " is kept");
  return absl::StrCat("versions ", entries.front().version, "..", entries.back().version,
                      " are kept");
}

}  // namespace sluice::controlplane
