#include "dataplane/policy/cache/internal.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace sluice::policy::cache {
namespace {

absl::Mutex clock_mu(absl::kConstInit);
Clock* test_clock ABSL_GUARDED_BY(clock_mu) = nullptr;

}  // namespace

int64_t WallNanos() { return absl::GetCurrentTimeNanos(); }

void SetClockForTesting(Clock clock) {
  absl::MutexLock lock(&clock_mu);
  delete test_clock;
  test_clock = clock ? new Clock(std::move(clock)) : nullptr;
}

Clock CurrentClock() {
  absl::MutexLock lock(&clock_mu);
  return test_clock != nullptr ? *test_clock : Clock(&WallNanos);
}

std::string StateIdentity(const v1::CacheConfig& config) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.SetSerializationDeterministic(true);
    config.SerializeToCodedStream(&out);
  }
  return bytes;
}

bool QueryNameIs(std::string_view sent, std::string_view name) {
  size_t n = 0;
  for (size_t i = 0; i < sent.size(); ++i, ++n) {
    char c = sent[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < sent.size() && absl::ascii_isxdigit(sent[i + 1]) &&
               absl::ascii_isxdigit(sent[i + 2])) {
      auto hex = [](char h) { return absl::ascii_isdigit(h) ? h - '0' : (h | 0x20) - 'a' + 10; };
      c = static_cast<char>(hex(sent[i + 1]) * 16 + hex(sent[i + 2]));
      i += 2;
    }
    if (n >= name.size() || name[n] != c) return false;
  }
  return n == name.size();
}

std::string KeyedPath(std::string_view path_and_query,
                      const std::vector<std::string>& query_params) {
  const size_t q = path_and_query.find('?');
  std::string out(path_and_query.substr(0, q));
  if (q == std::string_view::npos) return out;
  const std::string_view query = path_and_query.substr(q + 1);
  if (query_params.empty()) {
    if (!query.empty()) out.append("?").append(query);
    return out;
  }
  // As the key is built: each named parameter by name, equal names in
  // their order, the value as sent (with its '=').
  std::string kept;
  for (const std::string& name : query_params) {
    for (absl::string_view pair : absl::StrSplit(absl::string_view(query.data(), query.size()), '&')) {
      const size_t eq = pair.find('=');
      const absl::string_view pname = pair.substr(0, eq);
      if (!QueryNameIs(std::string_view(pname.data(), pname.size()), name)) continue;
      if (!kept.empty()) kept.push_back('&');
      kept.append(name);
      if (eq != absl::string_view::npos) kept.append(pair.data() + eq, pair.size() - eq);
    }
  }
  if (!kept.empty()) out.append("?").append(kept);
  return out;
}

}  // namespace sluice::policy::cache
