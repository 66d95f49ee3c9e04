// A real Prometheus (Debian's /usr/bin/prometheus) scraping a real fleet:
// sluice-control with --metrics-listen and two sluice-proxy processes that
// share one listener port, in front of an upstream_server, with the alert
// rules of deploy/prometheus/alerts.yml loaded. A client sends a known
// request rate through the proxies; what Prometheus's HTTP API answers must
// match it, every target must be up, the control plane's own families must
// tell the state of the fleet, and every alert rule must evaluate cleanly
// against these real series.
#include <gtest/gtest.h>
#include <signal.h>
#include <simdjson.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";
// Requests per second the client sends, spread over both proxies.
constexpr double kRate = 40;

std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// One sample of an instant vector: its labels and value.
struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Polls `condition` every 200 ms (each poll is an HTTP query) until it holds
// or `timeout` passes.
template <typename F>
bool PollFor(F condition, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(200));
  }
}

class PrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    std::optional<std::string> line =
        cp_.process().WaitForLogLine("Prometheus metrics on http://127.0.0.1:", absl::Seconds(10));
    ASSERT_TRUE(line.has_value()) << cp_.process().Log();
    std::string tail = line->substr(line->find("127.0.0.1:") + 10);
    ASSERT_TRUE(absl::SimpleAtoi(tail.substr(0, tail.find('/')), &control_metrics_port_)) << *line;
    ASSERT_TRUE(upstream_.ok());

    listener_port_ = PickFreePort();
    std::string yaml = absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - name: api\n          match: {prefix: /}\n          route: {cluster: web}\n"
        "---\nkind: Listener\nname: public\nspec:\n  address: 127.0.0.1\n  port: ",
        listener_port_, "\n  route_table: main\n---\n",
        // A certificate (2 days left) for sluice_control_certificate_expiry_*.
        CertificateSecretYaml("web-cert", MakeSelfSigned(dir_, "web", "web.test", {"web.test"})));
    CommandResult applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    for (const char* name : {"prom-proxy-1", "prom-proxy-2"}) {
      proxies_.push_back(std::make_unique<Proxy>(cp_.address(), name, 1));
      ASSERT_TRUE(proxies_.back()->ok()) << proxies_.back()->process().Log();
    }
    for (auto& proxy : proxies_) {
      ASSERT_TRUE(proxy->WaitForVersion(1)) << proxy->process().Log();
    }

    // Scraped every second, the rules evaluated every second; everything
    // Prometheus writes stays under dir_.
    const int port = PickFreePort();
    ASSERT_GT(port, 0);
    prometheus_address_ = absl::StrCat("127.0.0.1:", port);
    std::string config = absl::StrCat(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - ",
        RunfilePath("deploy/prometheus/alerts.yml"), "\n",
        "scrape_configs:\n"
        "  - job_name: sluice-proxy\n    static_configs:\n      - targets: ['",
        proxies_[0]->admin_address(), "', '", proxies_[1]->admin_address(), "']\n",
        "  - job_name: sluice-control\n    static_configs:\n      - targets: ['127.0.0.1:",
        control_metrics_port_, "']\n");
    prometheus_ = std::make_unique<Process>(
        kPrometheus,
        std::vector<std::string>{
            absl::StrCat("--config.file=", WriteFile(dir_, "prometheus.yml", config)),
            absl::StrCat("--storage.tsdb.path=", dir_, "/tsdb"),
            absl::StrCat("--web.listen-address=", prometheus_address_), "--log.level=warn"},
        dir_ + "/prometheus.log");
    bool ready = WaitFor(
        [&] {
          return HttpGet(prometheus_address_, "/-/ready", {}, absl::Seconds(2)).status == 200 ||
                 !prometheus_->Running();
        },
        absl::Seconds(20));
    ASSERT_TRUE(ready && prometheus_->Running()) << prometheus_->Log();
  }

  void TearDown() override {
    if (prometheus_ && prometheus_->Running()) {
      prometheus_->Signal(SIGTERM);
      prometheus_->Wait(absl::Seconds(10));  // else the destructor's SIGKILL
    }
  }

  // GET on Prometheus's HTTP API: true with the parsed answer in *doc (valid
  // until the next call), or false with the reason in *error.
  bool ApiGet(const std::string& path_and_query, simdjson::dom::element* doc, std::string* error) {
    HttpResponse r = HttpGet(prometheus_address_, path_and_query, {}, absl::Seconds(5));
    body_ = r.body;
    if (r.status != 200) {
      *error = absl::StrCat("HTTP ", r.status, " ", r.error, ": ", r.body);
      return false;
    }
    std::string_view status;
    if (parser_.parse(body_).get(*doc) || (*doc)["status"].get_string().get(status) ||
        status != "success") {
      *error = absl::StrCat("not a successful API answer: ", body_);
      return false;
    }
    return true;
  }

  // An instant query's vector; empty on any failure, with the reason in
  // last_error_.
  std::vector<Sample> Query(const std::string& promql) {
    std::vector<Sample> out;
    simdjson::dom::element doc;
    if (!ApiGet("/api/v1/query?query=" + UrlEncode(promql), &doc, &last_error_)) return out;
    simdjson::dom::array result;
    if (doc["data"]["result"].get_array().get(result)) {
      last_error_ = absl::StrCat("no data.result: ", body_);
      return out;
    }
    for (simdjson::dom::element item : result) {
      Sample sample;
      simdjson::dom::object metric;
      if (!item["metric"].get_object().get(metric)) {
        for (simdjson::dom::key_value_pair label : metric) {
          std::string_view value;
          if (!label.value.get_string().get(value)) {
            sample.labels[std::string(label.key)] = std::string(value);
          }
        }
      }
      std::string_view value;
      if (item["value"].at(1).get_string().get(value) ||
          !absl::SimpleAtod(std::string(value), &sample.value)) {
        last_error_ = absl::StrCat("a sample without a value: ", body_);
        return {};
      }
      out.push_back(std::move(sample));
    }
    last_error_ = absl::StrCat(promql, " -> ", body_);
    return out;
  }

  // A query whose answer is one sample; NaN when it is not.
  double QueryOne(const std::string& promql) {
    std::vector<Sample> samples = Query(promql);
    return samples.size() == 1 ? samples[0].value : std::nan("");
  }

  std::string PrometheusLog() const { return prometheus_ ? prometheus_->Log() : ""; }

  ControlPlane cp_{"", "info", {"--metrics-listen", "127.0.0.1:0"}};
  UpstreamServer upstream_{"web-1"};
  std::string dir_ = MakeTempDir("prometheus");
  std::vector<std::unique_ptr<Proxy>> proxies_;
  std::unique_ptr<Process> prometheus_;
  std::string prometheus_address_;
  int control_metrics_port_ = 0;
  int listener_port_ = 0;
  simdjson::dom::parser parser_;
  std::string body_;
  std::string last_error_;
};

TEST_F(PrometheusTest, SeesTheRequestRateSentThroughBothProxies) {
  // The control plane's probe paths, beside its metrics (the gRPC port serves).
  const std::string control_metrics = absl::StrCat("127.0.0.1:", control_metrics_port_);
  EXPECT_EQ(HttpGet(control_metrics, "/ready").body, "ready\n");
  EXPECT_EQ(HttpGet(control_metrics, "/livez").body, "ok\n");
  // Each request on a new connection, so that the kernel spreads them over
  // the two proxies sharing the port (SO_REUSEPORT hashes the source port).
  const std::string address = absl::StrCat("127.0.0.1:", listener_port_);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::thread client([&] {
    const absl::Duration gap = absl::Seconds(1) / kRate;
    absl::Time next = absl::Now();
    while (!stop.load()) {
      HttpResponse r = HttpGet(address, "/api", {}, absl::Seconds(5));
      ++(r.status == 200 ? ok : failed);
      // Pacing to the rate; a late request makes the next ones go at once.
      next += gap;
      absl::SleepFor(next - absl::Now());
    }
  });

  // The rate over the last 10 s, summed over both proxies, within 30% of
  // what the client sends.
  double total = 0;
  std::string answer;
  bool converged = PollFor(
      [&] {
        total = QueryOne("sum(rate(sluice_route_requests_total[10s]))");
        answer = last_error_;
        return total >= kRate * 0.7 && total <= kRate * 1.3;
      },
      absl::Seconds(30));
  std::vector<Sample> by_instance =
      Query("sum by (instance) (rate(sluice_route_requests_total{route=\"api\"}[10s]))");
  stop = true;
  client.join();
  EXPECT_TRUE(converged) << "sum(rate(...)) = " << total << ", sent " << kRate
                         << "/s; last answer: " << answer << "\n"
                         << PrometheusLog();
  EXPECT_EQ(failed.load(), 0) << ok.load() << " requests answered 200";
  ASSERT_EQ(by_instance.size(), 2u) << last_error_;
  for (const Sample& sample : by_instance) {
    EXPECT_GT(sample.value, 0) << sample.labels.at("instance") << " served nothing";
  }

  // Every target is up: two proxies, one control plane.
  std::vector<Sample> up = Query("up");
  std::map<std::string, int> up_by_job;
  for (const Sample& sample : up) {
    EXPECT_EQ(sample.value, 1) << absl::StrJoin(sample.labels, ",", absl::PairFormatter("="));
    ++up_by_job[sample.labels.count("job") ? sample.labels.at("job") : ""];
  }
  EXPECT_EQ(up_by_job, (std::map<std::string, int>{{"sluice-control", 1}, {"sluice-proxy", 2}}))
      << last_error_;

  // The control plane's own view of the fleet, through Prometheus.
  EXPECT_EQ(QueryOne("sluice_control_connected_proxies"), 2) << last_error_;
  EXPECT_EQ(QueryOne("sluice_control_config_version"), 1) << last_error_;
  EXPECT_EQ(QueryOne("sluice_control_applies_total{result=\"ok\"}"), 1) << last_error_;
  EXPECT_GE(QueryOne("sluice_control_acks_total"), 2) << last_error_;
  EXPECT_EQ(QueryOne("sluice_control_nacks_total"), 0) << last_error_;
  EXPECT_EQ(QueryOne("count(sluice_config_version == 1)"), 2) << last_error_;
  EXPECT_EQ(QueryOne("sluice_control_build_info"), 1) << last_error_;
}

TEST_F(PrometheusTest, EveryAlertRuleEvaluatesAgainstRealSeries) {
  // Rules start with health "unknown"; after their first evaluation each
  // must be "ok" (a rule that fails, e.g. on a many-to-many match, says
  // "err" with the reason).
  std::vector<std::string> problems;
  int rules = 0;
  bool healthy = PollFor(
      [&] {
        problems.clear();
        rules = 0;
        simdjson::dom::element doc;
        std::string error;
        if (!ApiGet("/api/v1/rules", &doc, &error)) {
          problems.push_back(error);
          return false;
        }
        simdjson::dom::array groups;
        if (doc["data"]["groups"].get_array().get(groups)) return false;
        for (simdjson::dom::element group : groups) {
          simdjson::dom::array list;
          if (group["rules"].get_array().get(list)) continue;
          for (simdjson::dom::element rule : list) {
            ++rules;
            std::string_view name = "?", health = "?", last_error;
            if (rule["name"].get_string().get(name)) name = "?";
            if (rule["health"].get_string().get(health)) health = "?";
            if (rule["lastError"].get_string().get(last_error)) last_error = "";
            if (health != "ok") {
              problems.push_back(absl::StrCat(std::string(name), ": ", std::string(health), " ",
                                              std::string(last_error)));
            }
          }
        }
        return rules > 0 && problems.empty();
      },
      absl::Seconds(20));
  EXPECT_TRUE(healthy) << absl::StrJoin(problems, "\n") << "\n" << PrometheusLog();
  EXPECT_EQ(rules, 13);
  // The certificate's expiry, as sluice-control reads it from the Secret
  // (made for 2 days): SluiceCertificateExpiresSoon has a real series.
  double left = std::nan("");
  EXPECT_TRUE(PollFor(
      [&] {
        left = QueryOne(
            "sluice_control_certificate_expiry_timestamp_seconds{secret=\"web-cert\"} - time()");
        return !std::isnan(left);
      },
      absl::Seconds(20)))
      << last_error_;
  EXPECT_GT(left, 86400);
  EXPECT_LE(left, 2 * 86400 + 60);
  // A healthy fleet: nothing fires (the `for:` durations are minutes, so
  // nothing could yet; a rule that is pending already is worth knowing of),
  // but for the 2-day certificate made for this test, which is pending as
  // soon as the rule is evaluated (one evaluation in, this failed).
  std::vector<Sample> alerts = Query(
      "ALERTS{alertname!=\"SluiceControlPlaneDown\",alertname!=\"SluiceCertificateExpiresSoon\"}"
      " or ALERTS{alertname=\"SluiceCertificateExpiresSoon\",secret!=\"web-cert\"}");
  for (const Sample& alert : alerts) {
    ADD_FAILURE() << "unexpected alert: "
                  << absl::StrJoin(alert.labels, ",", absl::PairFormatter("="));
  }
}

}  // namespace
}  // namespace sluice::testing
