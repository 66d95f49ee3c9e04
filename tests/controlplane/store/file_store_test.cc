#include "controlplane/store/file_store.h"
#include "controlplane/store/file_config_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <cerrno>
#include <fstream>

#include "absl/base/internal/endian.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

using sluice::testing::MakeTempDir;
using sluice::testing::ReadFile;

api::Resource Cluster(const std::string& name) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(9000);
  return r;
}

StoredState Sample() {
  StoredState s;
  s.version = 42;
  for (const char* n : {"a", "b", "c"}) s.resources[{config::v1::CLUSTER, n}] = Cluster(n);
  return s;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(FileStoreTest, EmptyDirLoadsVersionZero) {
  auto store = FileStore::Open(MakeTempDir("store"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->version, 0u);
  EXPECT_TRUE(state->resources.empty());
}

// Missing parents are made (as mkdir -p); the data dir itself is 0700.
TEST(FileStoreTest, OpenMakesMissingParents) {
  const std::string dir = MakeTempDir("store") + "/a/b/data";
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_TRUE((*store)->Save(Sample()).ok());
  // A parent that is a file is an error naming it.
  const std::string file = MakeTempDir("store") + "/file";
  WriteBytes(file, "x");
  auto refused = FileStore::Open(file + "/data");
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), file)) << refused.status();
}

TEST(FileStoreTest, SaveThenRestoreInANewStore) {
  std::string dir = MakeTempDir("store");
  {
    auto store = FileStore::Open(dir);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Save(Sample()).ok());
  }
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->version, 42u);
  ASSERT_EQ(state->resources.size(), 3u);
  EXPECT_EQ(state->resources.at({config::v1::CLUSTER, "b"}).cluster().endpoints(0).port(), 9000u);
}

TEST(FileStoreTest, SecondOpenOfTheSameDirIsRefused) {
  std::string dir = MakeTempDir("store");
  auto first = FileStore::Open(dir);
  ASSERT_TRUE(first.ok());
  auto second = FileStore::Open(dir);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use by another process"),
            std::string::npos);
}

TEST(FileStoreTest, EveryTruncationIsReportedNeverEmpty) {
  std::string bytes = FileStore::Encode(Sample());
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto state = FileStore::Decode(bytes.substr(0, len), "/x/state.db");
    ASSERT_FALSE(state.ok()) << "length " << len;
    EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(state.status().message().find("/x/state.db"), std::string::npos);
  }
}

TEST(FileStoreTest, TruncatedFileOnDiskNamesTheFile) {
  std::string dir = MakeTempDir("store");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE((*store)->Save(Sample()).ok());
  std::string bytes = ReadFile(dir + "/state.db");
  WriteBytes(dir + "/state.db", bytes.substr(0, bytes.size() - 7));
  auto state = (*store)->Load();
  ASSERT_FALSE(state.ok());
  EXPECT_NE(state.status().message().find(dir + "/state.db is damaged: truncated"),
            std::string::npos)
      << state.status();
}

TEST(FileStoreTest, ChecksumMismatchIsDetected) {
  std::string bytes = FileStore::Encode(Sample());
  for (size_t i = 24; i < bytes.size(); i += 7) {
    std::string flipped = bytes;
    flipped[i] ^= 0x40;
    auto state = FileStore::Decode(flipped, "state.db");
    ASSERT_FALSE(state.ok()) << "byte " << i;
    EXPECT_NE(state.status().message().find("checksum mismatch"), std::string::npos);
  }
}

TEST(FileStoreTest, BadMagicAndUnknownFormat) {
  std::string bytes = FileStore::Encode(Sample());
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_NE(FileStore::Decode(bad, "f").status().message().find("bad magic"),
            std::string::npos);
  bad = bytes;
  bad[8] = 9;
  EXPECT_NE(FileStore::Decode(bad, "f").status().message().find("format 9"),
            std::string::npos);
}

TEST(FileStoreTest, LeftoverTempFileFromACrashIsIgnored) {
  std::string dir = MakeTempDir("store");
  {
    auto store = FileStore::Open(dir);
    ASSERT_TRUE((*store)->Save(Sample()).ok());
  }
  WriteBytes(dir + "/state.db.tmp", "half a write");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->version, 42u);
  EXPECT_NE(access((dir + "/state.db.tmp").c_str(), F_OK), 0);
}

TEST(FileStoreTest, StoreIdIsKept) {
  std::string dir = MakeTempDir("store");
  StoredState state = Sample();
  state.store_id = "0123456789abcdef0123456789abcdef";
  {
    auto store = FileStore::Open(dir);
    ASSERT_TRUE((*store)->Save(state).ok());
  }
  auto store = FileStore::Open(dir);
  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->store_id, state.store_id);
  EXPECT_EQ(loaded->version, 42u);
  EXPECT_EQ(loaded->resources.size(), 3u);
}

// A state file written before stores had ids (format 1) still loads, with
// the id unknown.
TEST(FileStoreTest, FormatOneLoadsWithoutStoreId) {
  std::string payload;
  char buf[8];
  absl::little_endian::Store64(buf, 7);
  payload.append(buf, 8);
  absl::little_endian::Store32(buf, 1);
  payload.append(buf, 4);
  std::string resource = Cluster("a").SerializeAsString();
  absl::little_endian::Store32(buf, static_cast<uint32_t>(resource.size()));
  payload.append(buf, 4);
  payload.append(resource);
  std::string bytes("SLUICEDB", 8);
  absl::little_endian::Store32(buf, 1);
  bytes.append(buf, 4);
  absl::little_endian::Store64(buf, payload.size());
  bytes.append(buf, 8);
  absl::little_endian::Store32(
      buf, static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0),
                                       reinterpret_cast<const Bytef*>(payload.data()),
                                       static_cast<uInt>(payload.size()))));
  bytes.append(buf, 4);
  bytes.append(payload);
  auto state = FileStore::Decode(bytes, "old/state.db");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->version, 7u);
  EXPECT_EQ(state->store_id, "");
  ASSERT_EQ(state->resources.size(), 1u);
  EXPECT_EQ(state->resources.begin()->second.cluster().name(), "a");
}

// After the rename the new state is what a restart reads: a failed fsync of
// the directory must not be reported as "nothing changed".
TEST(FileStoreTest, DirectoryFsyncFailureAfterRenameSaysTheStateIsReplaced) {
  std::string dir = MakeTempDir("store");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Save(Sample()).ok());
  (*store)->set_directory_fsync_for_testing([](int) {
    errno = EIO;
    return -1;
  });
  StoredState next = Sample();
  next.version = 43;
  bool replaced = false;
  absl::Status status = (*store)->Save(next, &replaced);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(replaced);
  EXPECT_NE(status.message().find(dir + "/state.db is replaced, but cannot fsync its directory"),
            std::string::npos)
      << status;
  EXPECT_EQ((*store)->Load()->version, 43u);

  // A failure before the rename: not replaced, the old state intact.
  ASSERT_EQ(::chmod(dir.c_str(), 0500), 0);
  next.version = 44;
  status = (*store)->Save(next, &replaced);
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  if (::geteuid() != 0) {  // root writes anyway
    EXPECT_FALSE(status.ok());
    EXPECT_FALSE(replaced);
    EXPECT_EQ((*store)->Load()->version, 43u);
  }
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// The state holds private keys: readable by the owner only, whatever the
// umask and whatever mode a file left there before had.
TEST(FileStoreTest, StateFileIsOwnerOnly) {
  mode_t old_umask = ::umask(0);
  std::string dir = MakeTempDir("store");
  {
    auto store = FileStore::Open(dir);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Save(Sample()).ok());
    EXPECT_EQ(ModeOf(dir + "/state.db"), 0600u);
    // A temp file already there (wider mode) is what Save renames into
    // place: it is narrowed before the keys are written to it.
    WriteBytes(dir + "/state.db.tmp", "");
    ASSERT_EQ(::chmod((dir + "/state.db.tmp").c_str(), 0644), 0);
    ASSERT_TRUE((*store)->Save(Sample()).ok());
    EXPECT_EQ(ModeOf(dir + "/state.db"), 0600u);
  }
  // A state file from an older build or a backup, readable by all, in a
  // directory anyone may write (who could replace its files).
  ASSERT_EQ(::chmod((dir + "/state.db").c_str(), 0644), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(ModeOf(dir + "/state.db"), 0600u);
  EXPECT_EQ(ModeOf(dir), 0700u);
  EXPECT_EQ((*store)->Load()->version, 42u);
  std::string fresh = MakeTempDir("store") + "/data";
  ASSERT_TRUE(FileStore::Open(fresh).ok());
  EXPECT_EQ(ModeOf(fresh), 0700u);
  ::umask(old_umask);
}

}  // namespace
}  // namespace sluice::controlplane

namespace sluice::controlplane {
namespace {

// History entries hold their resources packed (serialized): what goes in
// comes back whole, with its id and the content hash the unpacked resource
// has, and bytes that do not parse are refused, not kept.
TEST(SharedResourceListTest, KeepsResourcesPackedAndGivesThemBackWhole) {
  api::Resource secret;
  secret.mutable_secret()->set_name("tls");
  secret.mutable_secret()->mutable_tls_certificate()->set_certificate_chain("chain");
  SharedResourceList list{Cluster("a"), secret};
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list.items()[1].id, (api::ResourceId{config::v1::SECRET, "tls"}));
  EXPECT_EQ(list.items()[1].Hash(), api::ContentHash(secret));
  EXPECT_EQ(list[0].SerializeAsString(), Cluster("a").SerializeAsString());
  EXPECT_EQ(list.Ids(), (std::vector<api::ResourceId>{{config::v1::CLUSTER, "a"},
                                                       {config::v1::SECRET, "tls"}}));
  // A copy shares the items until it is changed.
  SharedResourceList copy = list;
  copy.push_back(Cluster("b"));
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(copy.size(), 3u);
  EXPECT_TRUE(copy.PushSerialized(Cluster("c").SerializeAsString()));
  EXPECT_EQ(copy.items()[3].id, (api::ResourceId{config::v1::CLUSTER, "c"}));
  EXPECT_EQ(copy.items()[3].Hash(), api::ContentHash(Cluster("c")));
  EXPECT_FALSE(copy.PushSerialized("\xff\xff\xff"));
  EXPECT_EQ(copy.size(), 4u);
}

TEST(FileStoreHistoryTest, MissingIsEmptyRoundTripsAndDamageIsRefused) {
  std::string dir = sluice::testing::MakeTempDir("history_store");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto empty = (*store)->LoadHistory();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->entries.empty());

  StoredHistory history;
  api::Resource cluster;
  cluster.mutable_cluster()->set_name("users");
  history.base[api::IdOf(cluster)] = cluster;
  HistoryEntry first;
  first.version = 1;  // time unknown
  first.added.push_back(cluster);
  HistoryEntry second;
  second.version = 2;
  second.time = absl::FromUnixMicros(1'900'000'000'123'456);
  second.author = "ana@host-1";
  second.message = "drop users";
  second.removed.push_back(api::IdOf(cluster));
  second.unchanged = 3;
  history.entries = {first, second};
  ASSERT_TRUE((*store)->SaveHistory(history).ok());
  struct stat st;
  ASSERT_EQ(::stat((dir + "/history.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto loaded = (*store)->LoadHistory();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->base.size(), 1u);
  ASSERT_EQ(loaded->entries.size(), 2u);
  EXPECT_EQ(loaded->entries[0].time, absl::InfinitePast());
  EXPECT_EQ(loaded->entries[0].added.size(), 1u);
  EXPECT_EQ(loaded->entries[1].time, second.time);
  EXPECT_EQ(loaded->entries[1].author, "ana@host-1");
  EXPECT_EQ(loaded->entries[1].message, "drop users");
  EXPECT_EQ(loaded->entries[1].removed, second.removed);
  EXPECT_EQ(loaded->entries[1].unchanged, 3u);

  std::string bytes = FileStore::EncodeHistory(history);
  bytes[bytes.size() - 1] ^= 1;
  auto damaged = FileStore::DecodeHistory(bytes, "history.db");
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(damaged.status().message(),
                                "history file history.db is damaged: checksum mismatch"))
      << damaged.status();
  // The state file is not a history file.
  auto state = FileStore::DecodeHistory(FileStore::Encode(StoredState{}), "history.db");
  ASSERT_FALSE(state.ok());
  EXPECT_TRUE(absl::StrContains(state.status().message(), "bad magic")) << state.status();
}

// history.log: appended entries read back after history.db's; an append
// cut short by a crash is ignored; writing history.db drops the log, and
// entries a stale log repeats are skipped.
TEST(FileStoreHistoryTest, AppendedEntriesSurviveAndATornAppendIsIgnored) {
  std::string dir = sluice::testing::MakeTempDir("history_log");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  api::Resource cluster;
  cluster.mutable_cluster()->set_name("users");
  StoredHistory history;
  HistoryEntry first;
  first.version = 1;
  first.added.push_back(cluster);
  history.base[api::IdOf(cluster)] = cluster;
  history.entries = {first};
  ASSERT_TRUE((*store)->SaveHistory(history).ok());
  for (uint64_t v = 2; v <= 3; ++v) {
    HistoryEntry next;
    next.version = v;
    next.message = absl::StrCat("v", v);
    cluster.mutable_cluster()->add_endpoints()->set_port(static_cast<uint32_t>(9000 + v));
    next.changed.push_back(cluster);
    ASSERT_TRUE((*store)->AppendHistory(next).ok());
  }
  struct stat st;
  ASSERT_EQ(::stat((*store)->history_log_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = (*store)->LoadHistory();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->entries.size(), 3u);
  EXPECT_EQ(loaded->entries[2].version, 3u);
  EXPECT_EQ(loaded->entries[2].message, "v3");

  // A crash in the middle of appending version 4: its record is cut short.
  const off_t whole = st.st_size;
  HistoryEntry fourth;
  fourth.version = 4;
  ASSERT_TRUE((*store)->AppendHistory(fourth).ok());
  ASSERT_EQ(::truncate((*store)->history_log_path().c_str(), whole + 5), 0);
  loaded = (*store)->LoadHistory();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->entries.back().version, 3u);

  // Damage before the last record is refused, naming the log.
  std::string log;
  {
    std::ifstream in((*store)->history_log_path(), std::ios::binary);
    log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::string damaged_log = log.substr(0, static_cast<size_t>(whole));
  damaged_log[20] ^= 1;  // inside the first record's payload
  StoredHistory base_only = history;
  absl::Status damaged = FileStore::ApplyHistoryLog(damaged_log, "history.log", &base_only);
  EXPECT_EQ(damaged.code(), absl::StatusCode::kDataLoss) << damaged;
  EXPECT_TRUE(absl::StrContains(damaged.message(), "history log history.log is damaged"))
      << damaged;

  // history.db written whole drops the log; a stale log's entries that
  // history.db holds already are skipped.
  ASSERT_TRUE((*store)->SaveHistory(*loaded).ok());
  EXPECT_NE(::access((*store)->history_log_path().c_str(), F_OK), 0);
  StoredHistory again = *loaded;
  ASSERT_TRUE(FileStore::ApplyHistoryLog(log.substr(0, static_cast<size_t>(whole)),
                                         "history.log", &again)
                  .ok());
  EXPECT_EQ(again.entries.size(), 3u);
}

// A private key rotated away leaves the disk with the last kept version that
// had it (history.db is written whole then), not only once history.log grew
// past 1 MiB: with small changes that was hundreds of versions past
// --history. Versions that drop no Secret are still appended.
TEST(FileConfigStoreTest, ARotatedKeyLeavesTheDiskWithItsLastKeptVersion) {
  std::string dir = sluice::testing::MakeTempDir("history_secrets");
  auto opened = FileStore::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  FileStore* files = opened->get();
  FileConfigStore store(std::move(*opened));
  auto secret = [](const std::string& key) {
    api::Resource r;
    r.mutable_secret()->set_name("edge");
    r.mutable_secret()->mutable_tls_certificate()->set_private_key(key);
    return r;
  };
  auto cluster = [](uint32_t port) {
    api::Resource r;
    r.mutable_cluster()->set_name("web");
    r.mutable_cluster()->add_endpoints()->set_port(port);
    return r;
  };
  auto on_disk = [&](const std::string& text) {
    return absl::StrContains(ReadFile(files->history_path()), text) ||
           absl::StrContains(ReadFile(files->history_log_path()), text);
  };
  // Kept versions: two (as --history 2). v1 adds the key, v2 rotates it.
  HistoryEntry v1{.version = 1};
  v1.added.push_back(secret("OLD-KEY-PEM"));
  StoredHistory history;
  history.base[api::IdOf(secret(""))] = secret("OLD-KEY-PEM");
  history.entries = {v1};
  std::string warning;
  ASSERT_TRUE(store.Commit(0, StoredState{.version = 1}, history, &warning).ok());
  HistoryEntry v2{.version = 2};
  v2.changed.push_back(secret("NEW-KEY-PEM"));
  history.entries = {v1, v2};
  ASSERT_TRUE(store.Commit(1, StoredState{.version = 2}, history, &warning).ok());
  EXPECT_TRUE(on_disk("NEW-KEY-PEM"));  // appended
  EXPECT_TRUE(on_disk("OLD-KEY-PEM"));  // v1 is kept
  // v3 changes a cluster; v1 ages out, and the old key with it.
  HistoryEntry v3{.version = 3};
  v3.added.push_back(cluster(9001));
  history.base.clear();
  history.base[api::IdOf(secret(""))] = secret("NEW-KEY-PEM");
  history.entries = {v2, v3};
  ASSERT_TRUE(store.Commit(2, StoredState{.version = 3}, history, &warning).ok());
  EXPECT_FALSE(on_disk("OLD-KEY-PEM"));
  EXPECT_TRUE(on_disk("NEW-KEY-PEM"));
  // v4 ages v2 out, but the key it set is v3's too (in the base): appended.
  HistoryEntry v4{.version = 4};
  v4.changed.push_back(cluster(9002));
  history.entries = {v3, v4};
  struct stat st;
  ASSERT_TRUE(store.Commit(3, StoredState{.version = 4}, history, &warning).ok());
  ASSERT_EQ(::stat(files->history_log_path().c_str(), &st), 0);
  EXPECT_GT(st.st_size, 0);
  EXPECT_TRUE(on_disk("NEW-KEY-PEM"));
}

}  // namespace
}  // namespace sluice::controlplane
