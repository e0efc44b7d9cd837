// PushDedup and Deduplicated (daemon/transport/push_dedup.h): a resent Batch push is answered
// with the first answer, never run twice; a push still running is ABORTED; failures are
// forgotten; the memory is bounded by entries, bytes and age.

#include "daemon/transport/push_dedup.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "absl/time/time.h"
#include "distkit/v1/counter.pb.h"

namespace distkit::transport {
namespace {

using Dedup = PushDedup<v1::BatchResponse>;

v1::BatchResponse Answer(int64_t value) {
  v1::BatchResponse r;
  r.add_results()->mutable_inc()->set_value(value);
  return r;
}

TEST(PushDedupTest, ReplaysTheFirstAnswer) {
  Dedup dedup;
  v1::BatchResponse resp;
  EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kNew);
  EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kBusy);
  dedup.Complete("c", 1, absl::OkStatus(), Answer(5));
  EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kReplayed);
  EXPECT_EQ(resp.results(0).inc().value(), 5);
  EXPECT_EQ(dedup.Begin("c", 2, &resp), Dedup::Claim::kNew);
  EXPECT_EQ(dedup.Begin("other", 1, &resp), Dedup::Claim::kNew);
}

TEST(PushDedupTest, AFailedPushIsForgotten) {
  Dedup dedup;
  v1::BatchResponse resp;
  EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kNew);
  dedup.Complete("c", 1, absl::InvalidArgumentError("too many"), resp);
  EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kNew);
}

TEST(PushDedupTest, BoundedByEntriesBytesAndAge) {
  v1::BatchResponse resp;
  {
    Dedup dedup(PushDedupLimits{3, size_t{1} << 20, absl::Minutes(5)});
    for (uint64_t seq = 1; seq <= 10; ++seq) {
      ASSERT_EQ(dedup.Begin("c", seq, &resp), Dedup::Claim::kNew);
      dedup.Complete("c", seq, absl::OkStatus(), Answer(1));
    }
    EXPECT_EQ(dedup.size(), 3u);
    EXPECT_EQ(dedup.Begin("c", 10, &resp), Dedup::Claim::kReplayed);
    EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kNew);  // the oldest were dropped
  }
  {
    const size_t one = Answer(1).ByteSizeLong();
    Dedup dedup(PushDedupLimits{100, 2 * one, absl::Minutes(5)});
    for (uint64_t seq = 1; seq <= 5; ++seq) {
      ASSERT_EQ(dedup.Begin("c", seq, &resp), Dedup::Claim::kNew);
      dedup.Complete("c", seq, absl::OkStatus(), Answer(1));
    }
    EXPECT_LE(dedup.size(), 3u);
  }
  {
    Dedup dedup(PushDedupLimits{100, size_t{1} << 20, absl::ZeroDuration()});
    ASSERT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kNew);
    dedup.Complete("c", 1, absl::OkStatus(), Answer(1));
    absl::SleepFor(absl::Milliseconds(2));
    EXPECT_EQ(dedup.Begin("c", 1, &resp), Dedup::Claim::kNew);  // expired
  }
}

// Deduplicated around a Batch `op` that completes through its callback: the op runs once per
// (client_id, seq); requests without client_id run every time.
TEST(PushDedupTest, DeduplicatedRunsEachPushOnce) {
  Dedup dedup;
  int runs = 0;
  auto run = [&](v1::BatchRequest req) {
    v1::BatchResponse resp;
    auto op = [&runs, &resp](const auto& callback) -> std::optional<absl::Status> {
      ++runs;
      resp.add_results()->mutable_inc()->set_value(runs);
      callback()(absl::OkStatus());
      return std::nullopt;
    };
    std::optional<absl::Status> final_status;
    auto deduped = Deduplicated(&dedup, &req, &resp, op);
    auto make = [&]() -> core::StatusCallback { return [&](absl::Status s) { final_status = s; }; };
    if (auto now = deduped(make)) final_status = *now;
    EXPECT_TRUE(final_status.has_value() && final_status->ok());
    return resp.results(0).inc().value();
  };
  v1::BatchRequest req;
  req.set_client_id("c");
  req.set_seq(1);
  EXPECT_EQ(run(req), 1);
  EXPECT_EQ(run(req), 1);  // the remembered answer
  EXPECT_EQ(runs, 1);
  req.set_seq(2);
  EXPECT_EQ(run(req), 2);
  req.clear_client_id();
  EXPECT_EQ(run(req), 3);
  EXPECT_EQ(run(req), 4);
}

}  // namespace
}  // namespace distkit::transport
