// The `ip-restriction` policy: address and CIDR parsing, the compiled
// set, its config rules and its filter, through the registries the
// binaries use.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/ip_restriction/cidr.h"
#include "dataplane/policy/ip_restriction/ip_restriction_config.pb.h"
#include "dataplane/policy/registry.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::ip_restriction {
namespace {

using testing::FakeCallbacks;

std::vector<api::PolicyConfigError> Errors(const v1::IpRestrictionConfig& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("ip-restriction")->Validate(config, &errors);
  return errors;
}

std::shared_ptr<const http::FilterFactory> Compile(const v1::IpRestrictionConfig& config) {
  auto errors = Errors(config);
  EXPECT_TRUE(errors.empty()) << errors[0].field << ": " << errors[0].message;
  auto compiled = FindPolicyFactory("ip-restriction")->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

v1::IpRestrictionConfig Lists(std::vector<std::string> allow, std::vector<std::string> deny) {
  v1::IpRestrictionConfig config;
  for (const auto& a : allow) config.add_allow(a);
  for (const auto& d : deny) config.add_deny(d);
  return config;
}

struct Outcome {
  http::FilterStatus status;
  int reply_status = 0;
  std::string message;
};

Outcome Request(const http::FilterFactory& factory, std::string_view client_ip) {
  FakeCallbacks callbacks;
  callbacks.info_.client_ip = client_ip;
  http::HeaderMap headers;
  Outcome o;
  o.status = factory.CreateFilter()->OnRequestHeaders(headers, callbacks);
  o.reply_status = callbacks.replies_ > 0 ? callbacks.status_ : 0;
  o.message = callbacks.message_;
  return o;
}

bool Passes(const http::FilterFactory& factory, std::string_view client_ip) {
  Outcome o = Request(factory, client_ip);
  if (o.status == http::FilterStatus::kContinue) return true;
  EXPECT_EQ(o.status, http::FilterStatus::kStopLocalReply);
  return false;
}

// --- parsing ---

TEST(CidrTest, AddressesParseAsInetPtonReadsThem) {
  auto v4 = ParseIpAddress("10.1.2.3");
  ASSERT_TRUE(v4.has_value());
  EXPECT_FALSE(v4->v6);
  EXPECT_EQ(v4->bits, absl::uint128(0x0a010203));
  auto v6 = ParseIpAddress("2001:db8::1");
  ASSERT_TRUE(v6.has_value());
  EXPECT_TRUE(v6->v6);
  EXPECT_EQ(v6->bits, absl::MakeUint128(0x20010db800000000, 1));
  // IPv4-mapped IPv6 is IPv4; a zone is ignored.
  auto mapped = ParseIpAddress("::ffff:10.1.2.3");
  ASSERT_TRUE(mapped.has_value());
  EXPECT_FALSE(mapped->v6);
  EXPECT_EQ(mapped->bits, absl::uint128(0x0a010203));
  auto zoned = ParseIpAddress("fe80::1%eth0");
  ASSERT_TRUE(zoned.has_value());
  EXPECT_TRUE(zoned->v6);
  for (const char* bad : {"", "10.0.0.256", "10.0.0", "010.0.0.1", " 10.0.0.1", "10.0.0.1 ", "::g",
                          "1:2:3:4:5:6:7:8:9", "localhost", "10.0.0.1%eth0"}) {
    EXPECT_FALSE(ParseIpAddress(bad).has_value()) << bad;
  }
}

TEST(CidrTest, BlocksParseWithPrefixOrAsSingleAddresses) {
  auto block = ParseCidrBlock("10.0.0.0/8");
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(FormatCidrBlock(*block), "10.0.0.0/8");
  EXPECT_EQ(FormatCidrBlock(*ParseCidrBlock("127.0.0.1")), "127.0.0.1/32");
  EXPECT_EQ(FormatCidrBlock(*ParseCidrBlock("2001:db8::/32")), "2001:db8::/32");
  EXPECT_EQ(FormatCidrBlock(*ParseCidrBlock("::1")), "::1/128");
  EXPECT_EQ(FormatCidrBlock(*ParseCidrBlock("0.0.0.0/0")), "0.0.0.0/0");
  EXPECT_EQ(FormatCidrBlock(*ParseCidrBlock("::/0")), "::/0");
  // An IPv4-mapped block is the IPv4 block.
  auto mapped = ParseCidrBlock("::ffff:10.0.0.0/104");
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_FALSE(mapped->network.v6);
  EXPECT_EQ(FormatCidrBlock(*mapped), "10.0.0.0/8");
}

TEST(CidrTest, BadBlocksSayWhatIsWrong) {
  EXPECT_EQ(ParseCidrBlock("10.0.0.300/8").status().message(),
            "'10.0.0.300/8' is not an IP address or CIDR");
  for (const char* bad : {"10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0.0/0008",
                          "/8", "10.0.0.0 /8", "example.com/8"}) {
    EXPECT_EQ(ParseCidrBlock(bad).status().message(),
              absl::StrCat("'", bad, "' is not an IP address or CIDR"));
  }
  // inet_pton stopped at a NUL: "10.0.0.1\0junk" was 10.0.0.1.
  EXPECT_FALSE(ParseCidrBlock(std::string("10.0.0.1\0junk", 14)).ok());
  EXPECT_FALSE(ParseIpAddress(std::string("10.0.0.1\0junk", 14)).has_value());
  EXPECT_EQ(ParseCidrBlock("10.0.0.0/33").status().message(),
            "'10.0.0.0/33' has prefix length 33; an IPv4 block's is 0..32");
  EXPECT_EQ(ParseCidrBlock("::/129").status().message(),
            "'::/129' has prefix length 129; an IPv6 block's is 0..128");
  // Host bits set: refused, with the block that was probably meant.
  EXPECT_EQ(ParseCidrBlock("10.0.0.1/8").status().message(),
            "'10.0.0.1/8' has host bits set (the block is '10.0.0.0/8')");
  EXPECT_EQ(ParseCidrBlock("2001:db8::1/32").status().message(),
            "'2001:db8::1/32' has host bits set (the block is '2001:db8::/32')");
}

TEST(CidrSetTest, ContainsIsExactAtTheEdgesOfEachBlock) {
  std::vector<CidrBlock> blocks;
  for (const char* b : {"10.0.0.0/8", "192.168.1.0/24", "203.0.113.7", "2001:db8::/32", "::1"}) {
    blocks.push_back(*ParseCidrBlock(b));
  }
  CidrSet set(blocks);
  for (const char* in :
       {"10.0.0.0", "10.255.255.255", "192.168.1.0", "192.168.1.255", "203.0.113.7",
        "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "::1", "::ffff:10.9.9.9"}) {
    EXPECT_TRUE(set.Contains(*ParseIpAddress(in))) << in;
  }
  for (const char* out :
       {"9.255.255.255", "11.0.0.0", "192.168.0.255", "192.168.2.0", "203.0.113.6", "203.0.113.8",
        "2001:db7:ffff::", "2001:db9::", "::2", "::", "0.0.0.1"}) {
    EXPECT_FALSE(set.Contains(*ParseIpAddress(out))) << out;
  }
}

TEST(CidrSetTest, FamiliesStayApartAndWholeRangesWork) {
  CidrSet all_v6({*ParseCidrBlock("::/0")});
  EXPECT_TRUE(all_v6.Contains(*ParseIpAddress("2001:db8::1")));
  EXPECT_TRUE(all_v6.Contains(*ParseIpAddress("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
  EXPECT_FALSE(all_v6.Contains(*ParseIpAddress("10.0.0.1")));
  EXPECT_FALSE(all_v6.Contains(*ParseIpAddress("::ffff:10.0.0.1")));
  CidrSet all_v4({*ParseCidrBlock("0.0.0.0/0")});
  EXPECT_TRUE(all_v4.Contains(*ParseIpAddress("255.255.255.255")));
  EXPECT_TRUE(all_v4.Contains(*ParseIpAddress("::ffff:1.2.3.4")));
  EXPECT_FALSE(all_v4.Contains(*ParseIpAddress("::1")));
  EXPECT_TRUE(CidrSet().empty());
  EXPECT_FALSE(CidrSet().Contains(*ParseIpAddress("10.0.0.1")));
}

TEST(CidrSetTest, OverlappingAndAdjacentBlocksMerge) {
  std::vector<CidrBlock> blocks;
  for (const char* b : {"10.0.0.0/8", "10.1.0.0/16", "10.0.0.5", "11.0.0.0/8", "13.0.0.0/8",
                        "255.255.255.255", "255.255.255.254"}) {
    blocks.push_back(*ParseCidrBlock(b));
  }
  CidrSet set(blocks);
  EXPECT_EQ(set.range_count(), 3u);  // 10-11/8, 13/8, the last two addresses
  EXPECT_TRUE(set.Contains(*ParseIpAddress("11.255.255.255")));
  EXPECT_FALSE(set.Contains(*ParseIpAddress("12.0.0.0")));
  EXPECT_TRUE(set.Contains(*ParseIpAddress("255.255.255.255")));
}

TEST(CidrSetTest, ManyBlocksMatchLikeALinearScan) {
  // 1024 scattered /24s and /32s: the binary search agrees with a scan.
  std::vector<CidrBlock> blocks;
  for (int i = 0; i < 1024; ++i) {
    int a = (i * 37) % 223 + 1, b = (i * 101) % 256, c = (i * 7) % 256;
    blocks.push_back(*ParseCidrBlock(i % 2 ? absl::StrCat(a, ".", b, ".", c, ".0/24")
                                           : absl::StrCat(a, ".", b, ".", c, ".", i % 256)));
  }
  CidrSet set(blocks);
  auto scan = [&](const IpAddress& ip) {
    for (const CidrBlock& b : blocks) {
      int host = 32 - b.prefix_length;
      if ((ip.bits >> host) == (b.network.bits >> host)) return true;
    }
    return false;
  };
  int hits = 0;
  for (int i = 0; i < 20000; ++i) {
    IpAddress ip = *ParseIpAddress(absl::StrCat((i * 37) % 223 + 1, ".", (i * 101) % 256, ".",
                                                (i * 7) % 256, ".", (i * 13) % 256));
    EXPECT_EQ(set.Contains(ip), scan(ip)) << i;
    hits += scan(ip);
  }
  EXPECT_GT(hits, 0);
}

// --- config rules ---

TEST(IpRestrictionConfigTest, AtLeastOneList) {
  auto errors = Errors(v1::IpRestrictionConfig());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "allow");
  EXPECT_EQ(errors[0].message, "set at least one of allow and deny");
  EXPECT_TRUE(Errors(Lists({"10.0.0.0/8"}, {})).empty());
  EXPECT_TRUE(Errors(Lists({}, {"10.0.0.0/8"})).empty());
  EXPECT_TRUE(Errors(Lists({"10.0.0.0/8"}, {"10.0.0.1"})).empty());
}

TEST(IpRestrictionConfigTest, BadEntriesAreNamed) {
  auto errors = Errors(Lists({"10.0.0.0/8", "::1", "10.0.0.300/8"}, {"2001:db8::1/32", "x"}));
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].field, "allow[2]");
  EXPECT_EQ(errors[0].message, "'10.0.0.300/8' is not an IP address or CIDR");
  EXPECT_EQ(errors[1].field, "deny[0]");
  EXPECT_EQ(errors[1].message, "'2001:db8::1/32' has host bits set (the block is '2001:db8::/32')");
  EXPECT_EQ(errors[2].field, "deny[1]");
}

TEST(IpRestrictionConfigTest, ListsStatusAndMessageAreBounded) {
  v1::IpRestrictionConfig config;
  for (int i = 0; i < 1025; ++i) config.add_deny("10.0.0.1");
  config.set_status(302);
  config.set_message("line\nbreak");
  auto errors = Errors(config);
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].field, "deny");
  EXPECT_EQ(errors[0].message, "at most 1024 entries, got 1025");
  EXPECT_EQ(errors[1].field, "status");
  EXPECT_EQ(errors[1].message, "must be 400..599, got 302");
  EXPECT_EQ(errors[2].field, "message");
  config.clear_deny();
  for (int i = 0; i < 1024; ++i) config.add_deny("10.0.0.1");
  config.set_status(599);
  config.set_message(std::string(257, 'm'));
  errors = Errors(config);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "message");
  config.set_message(std::string(256, 'm'));
  EXPECT_TRUE(Errors(config).empty());
  // 401 and 407 need a challenge this policy has none of: refused at apply
  // only (a stored one keeps answering as before).
  for (int status : {401, 407}) {
    config.set_status(status);
    EXPECT_TRUE(Errors(config).empty()) << status;
    std::vector<api::PolicyConfigError> apply;
    api::FindPolicyValidator("ip-restriction")->ValidateNew(config, &apply);
    ASSERT_EQ(apply.size(), 1u) << status;
    EXPECT_EQ(apply[0].field, "status");
    EXPECT_TRUE(absl::StartsWith(apply[0].message, absl::StrCat("a ", status,
                                                                " answer must carry an "
                                                                "authentication challenge")))
        << apply[0].message;
  }
  config.set_status(403);
  std::vector<api::PolicyConfigError> apply;
  api::FindPolicyValidator("ip-restriction")->ValidateNew(config, &apply);
  EXPECT_TRUE(apply.empty());
}

// --- the filter ---

TEST(IpRestrictionTest, DenyRefusesWith403AndTheMessage) {
  auto factory = Compile(Lists({}, {"127.0.0.1", "10.0.0.0/8"}));
  EXPECT_EQ(factory->phase(), http::FilterPhase::kAccess);  // before credentials are checked
  EXPECT_EQ(factory->policy_name(), "ip-restriction");
  Outcome o = Request(*factory, "127.0.0.1");
  EXPECT_EQ(o.status, http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(o.reply_status, 403);
  EXPECT_EQ(o.message, "your IP address is not allowed");
  EXPECT_FALSE(Passes(*factory, "10.20.30.40"));
  EXPECT_TRUE(Passes(*factory, "127.0.0.2"));
  EXPECT_TRUE(Passes(*factory, "2001:db8::1"));  // deny-only: everyone else passes
}

TEST(IpRestrictionTest, AllowLetsOnlyItsClientsThrough) {
  auto factory = Compile(Lists({"127.0.0.0/8", "2001:db8::/32"}, {}));
  EXPECT_TRUE(Passes(*factory, "127.0.0.1"));
  EXPECT_TRUE(Passes(*factory, "127.255.0.9"));
  EXPECT_TRUE(Passes(*factory, "2001:db8:1::5"));
  EXPECT_FALSE(Passes(*factory, "128.0.0.1"));
  EXPECT_FALSE(Passes(*factory, "::1"));
  EXPECT_FALSE(Passes(*factory, "2001:db9::1"));
}

TEST(IpRestrictionTest, DenyWinsOverAllow) {
  auto factory =
      Compile(Lists({"10.0.0.0/8", "2001:db8::/32"}, {"10.1.0.0/16", "2001:db8:bad::/48"}));
  EXPECT_TRUE(Passes(*factory, "10.2.0.1"));
  EXPECT_FALSE(Passes(*factory, "10.1.2.3"));
  EXPECT_TRUE(Passes(*factory, "2001:db8:600d::1"));
  EXPECT_FALSE(Passes(*factory, "2001:db8:bad::1"));
  // The same address in both: refused.
  auto both = Compile(Lists({"127.0.0.1"}, {"127.0.0.1"}));
  EXPECT_FALSE(Passes(*both, "127.0.0.1"));
}

TEST(IpRestrictionTest, MappedClientsMatchIpv4RulesAndMappedRulesMatchIpv4Clients) {
  auto deny_v4 = Compile(Lists({}, {"192.0.2.0/24"}));
  EXPECT_FALSE(Passes(*deny_v4, "::ffff:192.0.2.10"));
  EXPECT_FALSE(Passes(*deny_v4, "::FFFF:c000:020a"));  // the same, in hex
  EXPECT_TRUE(Passes(*deny_v4, "::ffff:192.0.3.10"));
  auto allow_v4 = Compile(Lists({"127.0.0.0/8"}, {}));
  EXPECT_TRUE(Passes(*allow_v4, "::ffff:127.0.0.1"));
  auto deny_mapped = Compile(Lists({}, {"::ffff:192.0.2.0/120"}));
  EXPECT_FALSE(Passes(*deny_mapped, "192.0.2.10"));
  EXPECT_FALSE(Passes(*deny_mapped, "::ffff:192.0.2.10"));
  EXPECT_TRUE(Passes(*deny_mapped, "192.0.3.10"));
  // An IPv6 block never covers IPv4 clients.
  auto deny_all_v6 = Compile(Lists({}, {"::/0"}));
  EXPECT_TRUE(Passes(*deny_all_v6, "192.0.2.10"));
  EXPECT_TRUE(Passes(*deny_all_v6, "::ffff:192.0.2.10"));
  EXPECT_FALSE(Passes(*deny_all_v6, "2001:db8::1"));
}

TEST(IpRestrictionTest, AnAddressThatDoesNotParseIsRefused) {
  auto deny_only = Compile(Lists({}, {"10.0.0.0/8"}));
  EXPECT_FALSE(Passes(*deny_only, ""));
  EXPECT_FALSE(Passes(*deny_only, "unix"));
}

TEST(IpRestrictionTest, StatusAndMessageCanBeChanged) {
  v1::IpRestrictionConfig config = Lists({}, {"127.0.0.1"});
  config.set_status(451);
  config.set_message("not from there");
  auto factory = Compile(config);
  Outcome o = Request(*factory, "127.0.0.1");
  EXPECT_EQ(o.reply_status, 451);
  EXPECT_EQ(o.message, "not from there");
}

}  // namespace
}  // namespace sluice::policy::ip_restriction
