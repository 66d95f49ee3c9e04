// The servers' flag parser: flags with values, switches, and the errors a
// mistyped command line gets.
#include "common/flags.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice {
namespace {

absl::StatusOr<ParsedFlags> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "binary");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseFlags(static_cast<int>(argv.size()), argv.data(), {"listen", "data-dir"},
                    {"help", "insecure"});
}

TEST(FlagsTest, ValuesSwitchesAndPositionals) {
  auto parsed = Parse({"--listen", "127.0.0.1:1", "--data-dir=/d", "--insecure", "rest"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->values.at("listen"), "127.0.0.1:1");
  EXPECT_EQ(parsed->values.at("data-dir"), "/d");
  EXPECT_EQ(parsed->switches.count("insecure"), 1u);
  EXPECT_EQ(parsed->positional, std::vector<std::string>{"rest"});
}

// -h is --help, as every command line takes it (it was "unknown flag -h").
TEST(FlagsTest, DashHIsHelp) {
  auto parsed = Parse({"-h"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->switches.count("help"), 1u);
}

TEST(FlagsTest, MistakesAreNamed) {
  EXPECT_EQ(Parse({"--lisen", "x"}).status().message(), "unknown flag --lisen");
  EXPECT_EQ(Parse({"--listen"}).status().message(), "flag --listen needs a value");
  EXPECT_EQ(Parse({"--insecure=yes"}).status().message(), "flag --insecure takes no value");
}

}  // namespace
}  // namespace sluice
