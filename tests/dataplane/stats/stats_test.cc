// Counters, histograms and their Prometheus text: bucket placement, per
// worker shards summed, pruning of unheld series.
#include "dataplane/stats/stats.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/strings/match.h"

namespace sluice::stats {
namespace {

TEST(HistogramTest, ObservationsLandInTheirBucketsAndRenderCumulatively) {
  SetHistogramShards(4);
  StatsStore store;
  std::shared_ptr<const void> hold;
  Histogram* h = store.GetHistogram("sluice_test_seconds", "route=\"r\"", &hold);
  h->Observe(0, 400);       // <= 0.0005
  h->Observe(1, 500);       // <= 0.0005 (bounds are inclusive)
  h->Observe(2, 20000);     // <= 0.025
  h->Observe(3, 30000000);  // +Inf
  Histogram::Totals t = h->Sum();
  EXPECT_EQ(t.count, 4u);
  EXPECT_EQ(t.buckets[0], 2u);
  EXPECT_EQ(t.buckets[5], 1u);
  EXPECT_EQ(t.buckets[Histogram::kFinite], 1u);
  EXPECT_EQ(t.sum_micros, 30020900u);
  std::string text = store.RenderPrometheus();
  EXPECT_TRUE(absl::StrContains(text, "# TYPE sluice_test_seconds histogram\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_test_seconds_bucket{route=\"r\",le=\"0.0005\"} 2\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_test_seconds_bucket{route=\"r\",le=\"0.025\"} 3\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_test_seconds_bucket{route=\"r\",le=\"10\"} 3\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_test_seconds_bucket{route=\"r\",le=\"+Inf\"} 4\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_test_seconds_sum{route=\"r\"} 30.0209\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_test_seconds_count{route=\"r\"} 4\n")) << text;
}

TEST(HistogramTest, ConcurrentWorkersLoseNothing) {
  SetHistogramShards(4);
  StatsStore store;
  std::shared_ptr<const void> hold;
  Histogram* h = store.GetHistogram("sluice_test_seconds", "", &hold);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([h, w] {
      for (int i = 0; i < 100000; ++i) h->Observe(w, i % 3000);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h->Sum().count, 400000u);
}

TEST(HistogramTest, UnheldHistogramsArePruned) {
  StatsStore store;
  {
    std::shared_ptr<const void> hold;
    store.GetHistogram("sluice_test_seconds", "route=\"gone\"", &hold);
    store.Prune();
    EXPECT_TRUE(absl::StrContains(store.RenderPrometheus(), "route=\"gone\""));
  }
  store.Prune();
  EXPECT_FALSE(absl::StrContains(store.RenderPrometheus(), "route=\"gone\""));
}

// Prune() looks only at metrics whose last hold went: a metric stays while
// any of its holds (or a copy of one) lives, a permanent one stays always,
// and one taken again before the prune keeps its value.
TEST(StatsStoreTest, PruneForgetsOnlyWhatNoHoldKeeps) {
  StatsStore store;
  std::shared_ptr<const void> first, second, kept;
  store.GetCounter("sluice_test_total", "route=\"a\"", &first)->Inc(3);
  store.GetCounter("sluice_test_total", "route=\"a\"", &second);
  store.GetCounter("sluice_test_total", "route=\"b\"", &kept);
  store.GetCounter("sluice_test_total", "route=\"p\"");  // permanent
  std::shared_ptr<const void> copy = first;
  first.reset();
  store.Prune();
  EXPECT_TRUE(absl::StrContains(store.RenderPrometheus(), "route=\"a\"} 3"));
  copy.reset();
  store.Prune();
  EXPECT_TRUE(absl::StrContains(store.RenderPrometheus(), "route=\"a\"} 3"));  // `second`
  second.reset();
  // Taken again before the prune: the same counter, value kept.
  std::shared_ptr<const void> again;
  EXPECT_EQ(store.GetCounter("sluice_test_total", "route=\"a\"", &again)->value(), 3u);
  store.Prune();
  EXPECT_TRUE(absl::StrContains(store.RenderPrometheus(), "route=\"a\"} 3"));
  again.reset();
  kept.reset();
  store.Prune();
  std::string text = store.RenderPrometheus();
  EXPECT_FALSE(absl::StrContains(text, "route=\"a\"")) << text;
  EXPECT_FALSE(absl::StrContains(text, "route=\"b\"")) << text;
  EXPECT_TRUE(absl::StrContains(text, "route=\"p\"")) << text;
  EXPECT_EQ(store.size(), 1u);
}

// A hold may outlive its store (a snapshot freed late).
TEST(StatsStoreTest, HoldMayOutliveTheStore) {
  std::shared_ptr<const void> hold;
  {
    StatsStore store;
    store.GetCounter("sluice_test_total", "", &hold)->Inc();
  }
  hold.reset();
}

}  // namespace
}  // namespace sluice::stats
