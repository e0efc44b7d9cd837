#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "daemon/redis/reply.h"

namespace distkit::redis {

// Called exactly once per command, on the Redis loop thread (or inline when the command is
// refused at submission, or on the submitting thread at the end of its InlineScope). Must not
// block. Script errors arrive as an OK Reply of kError type;
// a failed status means transport trouble: UNAVAILABLE (not connected or connection lost; see
// IsNotSent) or DEADLINE_EXCEEDED (no answer within the per-command deadline).
using ReplyCallback = absl::AnyInvocable<void(absl::StatusOr<Reply>)>;

// The inline path (docs/design.md "The inline path"). While an InlineScope lives on a thread,
// the commands submitted from that thread are held back and submitted when it ends: a lone
// command may then be run on this very thread by a RedisClient that can (the Executor, when it
// has nothing else queued or in flight: written and its reply awaited here, for a short while),
// its `done` called before the scope's destructor returns; several go the usual way, together
// (a Batch stays pipelined). A gRPC handler opens one around the core call of one RPC: its
// thread then waits one Redis round trip instead of paying two thread wake-ups. A scope opened
// while one is open on the thread does nothing.
class InlineScope {
 public:
  // Submits a held-back command; `alone`: it was the only one held by the scope.
  using Submit = absl::AnyInvocable<void(bool alone) &&>;

  InlineScope() : owner_(!state().open) { state().open = true; }
  ~InlineScope() {
    if (!owner_) return;
    State& s = state();
    s.open = false;
    auto held = std::move(s.held);
    s.held.clear();
    const bool alone = held.size() == 1 && !no_inline_;
    for (Submit& submit : held) std::move(submit)(alone);
  }
  InlineScope(const InlineScope&) = delete;
  InlineScope& operator=(const InlineScope&) = delete;

  // Nothing on this thread waits for what was held back (the call was answered already, e.g.
  // from memory): it goes the usual way.
  void NoInline() { no_inline_ = true; }

  // For RedisClient implementations: whether a scope is open on this thread, and holding a
  // command back until it ends.
  static bool Open() { return state().open; }
  static void HoldBack(Submit submit) { state().held.push_back(std::move(submit)); }

 private:
  struct State {
    bool open = false;
    absl::InlinedVector<Submit, 1> held;
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  const bool owner_;
  bool no_inline_ = false;
};

// The narrow interface core/ talks to, so unit tests can use a fake.
class RedisClient {
 public:
  virtual ~RedisClient() = default;

  // Runs a raw command. Thread-safe; never blocks.
  virtual void Command(std::vector<std::string> argv, ReplyCallback done) = 0;

  // Runs the embedded script `name` (lua/<name>.lua) with EVALSHA, transparently falling back
  // to EVAL on NOSCRIPT. Thread-safe; never blocks.
  virtual void Script(std::string_view name, std::vector<std::string> keys,
                      std::vector<std::string> args, ReplyCallback done) = 0;

  // True while connected and the last health PING was answered recently.
  virtual bool Healthy() const = 0;
};

}  // namespace distkit::redis
