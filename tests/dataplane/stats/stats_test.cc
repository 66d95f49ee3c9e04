// Counters, histograms and their Prometheus text: bucket placement, per
// worker shards summed, pruning of unheld series.
#include "dataplane/stats/stats.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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

// A route's shape: five status classes (extra labels) and a histogram.
const MetricGroupSpec& RouteSpec() {
  static const MetricGroupSpec spec = {
      {{"sluice_route_requests_total", ",status_class=\"1xx\""},
       {"sluice_route_requests_total", ",status_class=\"2xx\""},
       {"sluice_route_requests_total", ",status_class=\"5xx\""}},
      {"sluice_route_request_duration_seconds"}};
  return spec;
}

// A cluster's shape: series of several families, one family twice.
const MetricGroupSpec& ClusterSpec() {
  static const MetricGroupSpec spec = {
      {{"sluice_upstream_requests_total", ""},
       {"sluice_breaker_total", ",breaker=\"max_requests\""},
       {"sluice_breaker_total", ",breaker=\"max_connections\""},
       {"sluice_a_total", ""}},
      {"sluice_upstream_seconds", "sluice_route_request_duration_seconds"}};
  return spec;
}

// The same series with the same values, made as groups in one store and one
// by one in another, render to the same text: families once, in name order,
// series in label order, whatever order they were made in. Some families
// also have series of their own (merged in label order with the groups').
TEST(MetricGroupTest, RendersExactlyAsSeparateSeries) {
  SetHistogramShards(1);
  StatsStore grouped, separate;
  std::vector<std::shared_ptr<const void>> holds;
  auto hold = [&] { return &holds.emplace_back(); };
  grouped.Describe("sluice_route_requests_total", "Requests by route.");
  separate.Describe("sluice_route_requests_total", "Requests by route.");
  // Names chosen so that one label set is a prefix of another's value
  // (r1, r10) and in an order unlike the label order.
  const std::vector<std::string> routes = {"r2", "r10", "r1", "a\"q", "r1x"};
  uint64_t value = 1;
  for (const std::string& route : routes) {
    for (const MetricGroupSpec* spec : {&RouteSpec(), &ClusterSpec()}) {
      std::string labels = absl::StrCat(spec == &RouteSpec() ? "route=" : "cluster=",
                                        LabelValue(route));
      MetricGroup* group = grouped.GetGroup(*spec, labels, hold());
      for (size_t i = 0; i < spec->counters.size(); ++i) {
        const auto& c = spec->counters[i];
        group->counter(i)->Inc(value);
        separate.GetCounter(c.name, labels + c.extra_labels, hold())->Inc(value);
        ++value;
      }
      for (size_t i = 0; i < spec->histograms.size(); ++i) {
        group->histogram(i)->Observe(0, static_cast<int64_t>(value * 1000));
        separate.GetHistogram(spec->histograms[i], labels, hold())
            ->Observe(0, static_cast<int64_t>(value * 1000));
        ++value;
      }
    }
  }
  for (StatsStore* store : {&grouped, &separate}) {
    store->GetCounter("sluice_route_requests_total", "route=\"r1\",status_class=\"4xx\"")
        ->Inc(7);
    store->GetCounter("sluice_route_requests_total", "route=\"zz\"")->Inc(8);
    store->GetCounter("sluice_b_total")->Inc(9);
    store->GetGauge("sluice_g", "x=\"1\"")->Set(-2);
    store->GetHistogram("sluice_route_request_duration_seconds", "", hold())->Observe(0, 5);
  }
  std::string text = grouped.RenderPrometheus();
  EXPECT_EQ(text, separate.RenderPrometheus());
  EXPECT_EQ(grouped.size(), separate.size());
  // Spot checks of what a scraper sees.
  EXPECT_TRUE(absl::StrContains(
      text, "# HELP sluice_route_requests_total Requests by route.\n"
            "# TYPE sluice_route_requests_total counter\n"
            "sluice_route_requests_total{route=\"a\\\"q\",status_class=\"1xx\"}"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_breaker_total{cluster=\"r1\",breaker=\"max_connections\"}"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_request_duration_seconds_bucket{route=\"r1\",le=\"+Inf\"} 1\n"))
      << text;
}

// A group is held as a whole: it stays while any hold of it lives (and keeps
// its values when taken again before the prune), and goes, all its series
// at once, when the last one does. Permanent series stay.
TEST(MetricGroupTest, PruneForgetsAGroupOnlyWhenNothingHoldsIt) {
  StatsStore store;
  store.GetCounter("sluice_route_requests_total", "route=\"p\"");  // permanent
  std::shared_ptr<const void> first, second;
  MetricGroup* group = store.GetGroup(RouteSpec(), "route=\"a\"", &first);
  group->counter(1)->Inc(3);
  group->histogram(0)->Observe(0, 100);
  EXPECT_EQ(store.GetGroup(RouteSpec(), "route=\"a\"", &second), group);
  EXPECT_EQ(store.size(), 5u);  // 3 counters, 1 histogram, 1 permanent counter
  first.reset();
  store.Prune();
  EXPECT_TRUE(absl::StrContains(store.RenderPrometheus(),
                                "route=\"a\",status_class=\"2xx\"} 3\n"));
  second.reset();
  // Taken again before the prune: the same group, values kept.
  std::shared_ptr<const void> again;
  MetricGroup* taken = store.GetGroup(RouteSpec(), "route=\"a\"", &again);
  EXPECT_EQ(taken->counter(1)->value(), 3u);
  EXPECT_EQ(taken->histogram(0)->Sum().count, 1u);
  store.Prune();
  EXPECT_TRUE(absl::StrContains(store.RenderPrometheus(),
                                "route=\"a\",status_class=\"2xx\"} 3\n"));
  again.reset();
  store.Prune();
  std::string text = store.RenderPrometheus();
  EXPECT_FALSE(absl::StrContains(text, "route=\"a\"")) << text;
  EXPECT_FALSE(absl::StrContains(text, "sluice_route_request_duration_seconds")) << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_route_requests_total{route=\"p\"} 0\n")) << text;
  EXPECT_EQ(store.size(), 1u);
  // Made anew after the prune: from zero.
  std::shared_ptr<const void> fresh;
  EXPECT_EQ(store.GetGroup(RouteSpec(), "route=\"a\"", &fresh)->counter(1)->value(), 0u);
}

// A group's hold may outlive its store, as a counter's may.
TEST(MetricGroupTest, HoldMayOutliveTheStore) {
  std::shared_ptr<const void> hold;
  {
    StatsStore store;
    store.GetGroup(ClusterSpec(), "cluster=\"c\"", &hold)->histogram(1)->Observe(0, 1);
  }
  hold.reset();
}

// A group hidden until counted (a route's) lists no series while its
// counters are 0 and its histograms empty; a count or an observation shows
// all of them. Families keep their HELP and TYPE lines.
TEST(MetricGroupTest, HiddenUntilCountedShowsWithTheFirstCount) {
  static const MetricGroupSpec spec = [] {
    MetricGroupSpec s;
    s.counters = {{"sluice_route_requests_total", ",status_class=\"2xx\""},
                  {"sluice_route_requests_total", ",status_class=\"5xx\""}};
    s.histograms = {"sluice_route_request_duration_seconds"};
    s.hidden_until_counted = true;
    return s;
  }();
  StatsStore store;
  std::shared_ptr<const void> a_hold, b_hold, c_hold;
  MetricGroup* a = store.GetGroup(spec, "route=\"a\"", &a_hold);
  MetricGroup* b = store.GetGroup(spec, "route=\"b\"", &b_hold);
  store.GetGroup(spec, "route=\"c\"", &c_hold);
  std::string text = store.RenderPrometheus();
  EXPECT_TRUE(absl::StrContains(text, "# TYPE sluice_route_requests_total counter\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "route=")) << text;

  a->counter(1)->Inc();
  b->histogram(0)->Observe(0, 5);
  text = store.RenderPrometheus();
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_requests_total{route=\"a\",status_class=\"2xx\"} 0\n")) << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_requests_total{route=\"a\",status_class=\"5xx\"} 1\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_route_request_duration_seconds_count{route=\"a\"} 0\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_route_request_duration_seconds_count{route=\"b\"} 1\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_requests_total{route=\"b\",status_class=\"2xx\"} 0\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "route=\"c\"")) << text;
}

}  // namespace
}  // namespace sluice::stats
