// The servers' flag parser: flags with values, switches, and the errors a
// mistyped command line gets.
#include "common/flags.h"

#include <gtest/gtest.h>

#include <limits>
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
  EXPECT_EQ(Parse({"--port", "x"}).status().message(), "unknown flag --port");
  EXPECT_EQ(Parse({"--listen"}).status().message(), "flag --listen needs a value");
  EXPECT_EQ(Parse({"--insecure=yes"}).status().message(), "flag --insecure takes no value");
}

// A typo names the flag meant, on every binary that parses flags here
// (sluice-proxy and sluice-control said only "unknown flag --workrs").
TEST(FlagsTest, TypoNamesTheFlagMeant) {
  EXPECT_EQ(Parse({"--lisen", "x"}).status().message(),
            "unknown flag --lisen; did you mean --listen?");
  EXPECT_EQ(Parse({"--datadir=/d"}).status().message(),
            "unknown flag --datadir; did you mean --data-dir?");
  EXPECT_EQ(Parse({"-insecrue"}).status().message(),
            "unknown flag -insecrue; did you mean --insecure?");
  // Cut short: the one flag it begins; two: no guess.
  EXPECT_EQ(Parse({"--insec"}).status().message(),
            "unknown flag --insec; did you mean --insecure?");
  EXPECT_EQ(Parse({"--data"}).status().message(), "unknown flag --data; did you mean --data-dir?");
  // Nothing near: no guess.
  EXPECT_EQ(Parse({"-x"}).status().message(), "unknown flag -x");
}

// A number out of range, or not a number, is refused with the range and the
// value given (it said only "--workers must be 1..256").
TEST(FlagsTest, IntFlagInRangeEchoesTheValue) {
  auto parsed = Parse({"--listen", "abc", "--data-dir=300"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  int64_t value = 7;
  EXPECT_EQ(IntFlagInRange(*parsed, "listen", 1, 256, &value).message(),
            "--listen must be 1..256, not 'abc'");
  EXPECT_EQ(IntFlagInRange(*parsed, "data-dir", 1, 256, &value).message(),
            "--data-dir must be 1..256, not '300'");
  EXPECT_EQ(IntFlagInRange(*parsed, "data-dir", 400, std::numeric_limits<int64_t>::max(), &value)
                .message(),
            "--data-dir must be at least 400, not '300'");
  EXPECT_EQ(value, 7);
  EXPECT_TRUE(IntFlagInRange(*parsed, "data-dir", 1, 300, &value).ok());
  EXPECT_EQ(value, 300);
  EXPECT_TRUE(IntFlagInRange(*parsed, "absent", 1, 2, &value).ok());  // default kept
  EXPECT_EQ(value, 300);
}

}  // namespace
}  // namespace sluice
