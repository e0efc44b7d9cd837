#!/usr/bin/python3
"""End-to-end test of distkitd's CounterService and RateLimitService from Python
(docs/api.md: CounterService, RateLimitService, Numbers, Shutdown).

Runs the built daemon binary as a process against a private redis-server, talks to it over gRPC
on Unix sockets, and checks values. Uses Debian's python3-grpcio / python3-protobuf and stdlib
unittest only.

    /usr/bin/python3 tests/python/e2e_test.py --daemon build/distkitd \
        --redis-server /usr/bin/redis-server --stubs build/gen_py [-v] [-k PATTERN]

--stubs is a folder with the modules generated from proto/ by `protoc --python_out` and
grpc_python_plugin (distkit/v1/counter_pb2.py, ...). Set E2E_KEEP_TMP=1 to keep the temporary
folder with the Redis and daemon logs.
"""

import argparse
import atexit
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import unittest

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
FLUSH_MS = 20  # --flush_interval_ms and --allowed_lag_ms of the shared daemons
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 20.0
# Polls for something that needs one flush (or one cache refresh) give up after this long.
EVENTUAL_TIMEOUT_S = 5.0
# "Nothing more happens" is watched for this long: many flush intervals of the shared daemons.
QUIET_S = 0.4

ARGS = None  # parsed command line (set in main)
grpc = None  # imported in main, after the checks of the command line
pb = None  # distkit.v1.counter_pb2
pb_grpc = None  # distkit.v1.counter_pb2_grpc
common_pb = None  # distkit.v1.common_pb2
rl_pb = None  # distkit.v1.rate_limit_pb2
rl_pb_grpc = None  # distkit.v1.rate_limit_pb2_grpc
rls_pb = None  # envoy.service.ratelimit.v3.rls_pb2 (generated from our proto/envoy/...)
rls_pb_grpc = None  # envoy.service.ratelimit.v3.rls_pb2_grpc

# ------------------------------------------------------------------------------------------------
# Processes


_children = []  # every Popen we started, killed at exit whatever happens


def _kill_children():
    for p in _children:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:  # pylint: disable=broad-except
                pass


atexit.register(_kill_children)


def _clean_env():
    # Flags also come from DISTKIT_* variables: the test's daemons must see only their command line.
    return {k: v for k, v in os.environ.items() if not k.startswith("DISTKIT_")}


def _tail(path, lines=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def wait_until(predicate, timeout, what, interval=0.01):
    """Polls predicate() until it returns a truthy value; fails with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except AssertionError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            last = e  # not up yet, UNAVAILABLE, ...: try again
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def _stop_processes(procs, timeout):
    """SIGTERM to all, wait up to timeout; returns their exit codes (None: hung, was killed)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.01)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
            codes.append(None)
    return codes


def _stop_process(proc, timeout):
    return _stop_processes([proc], timeout)[0]


class Redis:
    """A private redis-server on a Unix socket, no TCP, no persistence."""

    def __init__(self, workdir):
        self.dir = workdir
        self.sock = os.path.join(workdir, "redis.sock")
        self.log = os.path.join(workdir, "redis.log")
        self.proc = subprocess.Popen(
            [ARGS.redis_server, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--dir", workdir, "--save", "", "--appendonly", "no", "--logfile", self.log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            env=_clean_env())
        _children.append(self.proc)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n"
                                     + _tail(self.log))
            return self.command("PING") == "PONG"

        wait_until(up, START_TIMEOUT_S, "redis-server to answer PING")

    def command(self, *args):
        """Sends one command over RESP and returns the decoded reply (tiny client, no deps)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.sock)
            parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            s.sendall(b"*%d\r\n" % len(parts)
                      + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
            with s.makefile("rb") as f:
                return _read_resp(f)

    def scan_keys(self, match):
        keys, cursor = [], "0"
        while True:
            cursor, batch = self.command("SCAN", cursor, "MATCH", match, "COUNT", "1000")
            keys.extend(batch)
            if cursor in ("0", b"0"):
                return keys

    def stop(self):
        _stop_process(self.proc, 10)


def _read_resp(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"truncated RESP reply: {line!r}")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError(f"redis error: {body.decode()}")
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [_read_resp(f) for _ in range(n)]
    raise ConnectionError(f"bad RESP reply: {line!r}")


# --- grpc.health.v1 without grpc_health (not packaged by Debian): hand-encoded protobuf.
# HealthCheckRequest { string service = 1; }  HealthCheckResponse { ServingStatus status = 1; }
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _encode_health_request(service):
    data = service.encode()
    return (b"\x0a" + _varint(len(data)) + data) if data else b""


def _decode_health_response(data):
    status, i = 0, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            if field == 1:
                status = value
        elif wire == 2:
            n, i = _read_varint(data, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire} in HealthCheckResponse")
    return status


def _read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


class Daemon:
    """A distkitd process listening on a Unix socket in workdir."""

    def __init__(self, workdir, name, redis, *extra_flags, flush_ms=FLUSH_MS):
        self.name = name
        self.sock = os.path.join(workdir, f"{name}.sock")
        self.log = os.path.join(workdir, f"{name}.log")
        self.addr = "unix:" + self.sock
        cmd = [ARGS.daemon, "--redis", "unix:" + redis.sock, "--listen", self.addr,
               "--flush_interval_ms", str(flush_ms), "--allowed_lag_ms", str(FLUSH_MS),
               "--log_level", "warn", *extra_flags]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=_clean_env())
        _children.append(self.proc)
        self.channel = None
        try:
            self.wait_serving("")
            # Readiness (Redis reachable) too, so that the first STRICT call does not race the
            # daemon's first connection to Redis.
            self.wait_serving("distkit.v1.CounterService")
        except BaseException:
            self.close()
            raise
        self.channel = grpc.insecure_channel(self.addr)
        self.counters = pb_grpc.CounterServiceStub(self.channel)
        self.ratelimit = rl_pb_grpc.RateLimitServiceStub(self.channel)

    @staticmethod
    def _check(channel, service, timeout):
        call = channel.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        return _decode_health_response(call(_encode_health_request(service), timeout=timeout))

    def health(self, service, timeout=1.0):
        """grpc.health.v1.Health/Check(service) -> status; raises grpc.RpcError."""
        return self._check(self.channel, service, timeout)

    def wait_serving(self, service):
        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} at start:\n"
                                     + _tail(self.log))
            # A fresh channel per attempt: a channel whose first connect failed (no socket yet)
            # waits out gRPC's reconnect backoff (seconds) before it tries again.
            with grpc.insecure_channel(self.addr) as channel:
                try:
                    return self._check(channel, service, 0.5) == SERVING
                except grpc.RpcError:
                    return False

        wait_until(serving, START_TIMEOUT_S, f"{self.name} health({service!r}) == SERVING",
                   interval=0.02)

    def terminate(self, timeout=20):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.channel is not None:
            self.channel.close()
        return _stop_process(self.proc, timeout)

    def close(self):
        if self.channel is not None:
            self.channel.close()
        _stop_process(self.proc, 20)


# ------------------------------------------------------------------------------------------------
# Request helpers


def rand_suffix(n=8):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def cond(op, operand):
    return common_pb.Condition(op=op, operand=operand)


STRICT = None  # set in main (enum values from the generated module)
LAX = None


class CounterTestBase(unittest.TestCase):
    """One Redis and two daemons (A, B) for the class; every test uses its own namespace."""

    tmp = None
    redis = None
    a = None
    b = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = _make_tmpdir()
        try:
            cls.redis = Redis(cls.tmp)
            cls.a = Daemon(cls.tmp, "a", cls.redis)
            cls.b = Daemon(cls.tmp, "b", cls.redis)
        except BaseException:
            cls.tearDownClass()  # unittest does not call it when setUpClass fails
            raise

    @classmethod
    def tearDownClass(cls):
        daemons = [d for d in (cls.a, cls.b) if d is not None]
        for d in daemons:
            d.channel.close()
        codes = dict(zip([d.name for d in daemons],
                         _stop_processes([d.proc for d in daemons], 20)))
        if cls.redis is not None:
            cls.redis.stop()
        _finish_tmpdir(cls.tmp)
        bad = {k: v for k, v in codes.items() if v != 0}
        if bad:
            raise AssertionError(f"daemons did not exit 0 on SIGTERM: {bad}")

    def setUp(self):
        self.ns = f"e2e-{self._testMethodName[5:25]}-{rand_suffix()}"

    # --- calls (timeouts everywhere: a hung daemon fails the test instead of hanging it)
    def inc(self, key, delta, consistency=None, condition=None, ns=None, d=None):
        req = pb.IncRequest(namespace=self.ns if ns is None else ns, key=key, delta=delta)
        if consistency is not None:
            req.consistency = consistency
        if condition is not None:
            req.condition.CopyFrom(condition)
        return (d or self.a).counters.Inc(req, timeout=CALL_TIMEOUT_S)

    def get(self, key, consistency=None, ns=None, d=None):
        req = pb.GetRequest(namespace=self.ns if ns is None else ns, key=key)
        if consistency is not None:
            req.consistency = consistency
        return (d or self.a).counters.Get(req, timeout=CALL_TIMEOUT_S).value

    def set(self, key, value, condition=None, ns=None, d=None):
        req = pb.SetRequest(namespace=self.ns if ns is None else ns, key=key, value=value)
        if condition is not None:
            req.condition.CopyFrom(condition)
        return (d or self.a).counters.Set(req, timeout=CALL_TIMEOUT_S)

    def delete(self, key, ns=None, d=None):
        req = pb.DelRequest(namespace=self.ns if ns is None else ns, key=key)
        return (d or self.a).counters.Del(req, timeout=CALL_TIMEOUT_S)

    def clear(self, ns=None, d=None):
        req = pb.ClearRequest(namespace=self.ns if ns is None else ns)
        return (d or self.a).counters.Clear(req, timeout=CALL_TIMEOUT_S)

    def assertResult(self, resp, value, previous, applied):
        self.assertEqual((resp.value, resp.previous, resp.applied), (value, previous, applied),
                         "(value, previous, applied)")

    def assertRpcError(self, code, fn, *args, mentions=None, **kwargs):
        with self.assertRaises(grpc.RpcError) as ctx:
            fn(*args, **kwargs)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        if mentions:
            self.assertIn(mentions, (ctx.exception.details() or "").lower(),
                          "the error message should name the field")
        return ctx.exception

    def eventually_get(self, key, expected, d, consistency=None, what="", ns=None):
        wait_until(lambda: self.get(key, consistency, ns=ns, d=d) == expected, EVENTUAL_TIMEOUT_S,
                   f"{d.name}.Get({key!r}) == {expected} {what}")

    def stays(self, key, expected, d, ns=None):
        """Checks that a STRICT read stays at `expected` for QUIET_S (late/doubled flushes)."""
        deadline = time.monotonic() + QUIET_S
        while time.monotonic() < deadline:
            self.assertEqual(self.get(key, STRICT, ns=ns, d=d), expected,
                             f"{d.name}.Get({key!r}) changed afterwards")
            time.sleep(FLUSH_MS / 1000 / 2)


class HealthTest(CounterTestBase):
    def test_health_entries(self):
        self.assertEqual(self.a.health(""), SERVING)
        self.assertEqual(self.a.health("distkit.v1.CounterService"), SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.a.health("no.such.Service")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)


class StrictTest(CounterTestBase):
    def test_inc_get_set_del(self):
        self.assertEqual(self.get("k"), 0)
        self.assertEqual(self.get("k", STRICT), 0)
        self.assertResult(self.inc("k", 5, STRICT), 5, 0, True)
        # CONSISTENCY_UNSPECIFIED means STRICT; a negative delta decrements.
        self.assertResult(self.inc("k", -7), -2, 5, True)
        self.assertResult(self.inc("k", 0), -2, -2, True)
        self.assertEqual(self.get("k", STRICT), -2)
        self.assertEqual(self.get("k", STRICT, d=self.b), -2, "STRICT is visible at once elsewhere")
        self.assertResult(self.set("k", 100), 100, -2, True)
        self.assertEqual(self.get("k", d=self.b), 100)
        self.assertResult(self.delete("k"), 0, 100, True)
        self.assertEqual(self.get("k"), 0)
        self.assertResult(self.delete("k"), 0, 0, True)
        self.assertResult(self.set("neg", -42), -42, 0, True)
        self.assertEqual(self.get("neg", d=self.b), -42)
        self.assertEqual(self.get("k2"), 0, "other keys untouched")

    def test_default_namespace(self):
        key = "dflt-" + rand_suffix()
        self.assertResult(self.set(key, 7, ns=""), 7, 0, True)
        self.assertEqual(self.get(key, ns="distkit"), 7, "'' means --namespace (distkit)")
        self.assertResult(self.inc(key, 1, ns="distkit"), 8, 7, True)
        self.assertEqual(self.get(key, ns=""), 8)
        self.delete(key, ns="")

    def test_conditions(self):
        # (comparator, operand, holds for the current value 10)
        cases = [
            (common_pb.COMPARATOR_EQ, 10, True), (common_pb.COMPARATOR_EQ, 11, False),
            (common_pb.COMPARATOR_NE, 10, False), (common_pb.COMPARATOR_NE, 9, True),
            (common_pb.COMPARATOR_LT, 11, True), (common_pb.COMPARATOR_LT, 10, False),
            (common_pb.COMPARATOR_LE, 10, True), (common_pb.COMPARATOR_LE, 9, False),
            (common_pb.COMPARATOR_GT, 9, True), (common_pb.COMPARATOR_GT, 10, False),
            (common_pb.COMPARATOR_GE, 10, True), (common_pb.COMPARATOR_GE, 11, False),
            (common_pb.COMPARATOR_UNSPECIFIED, 12345, True),  # no condition, whatever the operand
        ]
        for op, operand, holds in cases:
            name = common_pb.Comparator.Name(op)
            with self.subTest(rpc="Inc", op=name, operand=operand):
                key = f"inc-{name}-{operand}"
                self.set(key, 10)
                r = self.inc(key, 3, STRICT, cond(op, operand))
                if holds:
                    self.assertResult(r, 13, 10, True)
                else:
                    self.assertResult(r, 10, 10, False)
                self.assertEqual(self.get(key, STRICT, d=self.b), 13 if holds else 10)
            with self.subTest(rpc="Set", op=name, operand=operand):
                key = f"set-{name}-{operand}"
                self.set(key, 10)
                r = self.set(key, 42, cond(op, operand))
                if holds:
                    self.assertResult(r, 42, 10, True)
                else:
                    self.assertResult(r, 10, 10, False)
                self.assertEqual(self.get(key, STRICT, d=self.b), 42 if holds else 10)

    def test_condition_on_absent_key_compares_with_zero(self):
        r = self.inc("absent", 1, STRICT, cond(common_pb.COMPARATOR_EQ, 0))
        self.assertResult(r, 1, 0, True)
        r = self.set("absent2", 5, cond(common_pb.COMPARATOR_GT, 0))
        self.assertResult(r, 0, 0, False)
        self.assertEqual(self.get("absent2"), 0)


class LaxTest(CounterTestBase):
    def test_lax_inc_reaches_redis(self):
        self.assertResult(self.inc("k", 3, LAX), 3, 0, True)
        self.assertResult(self.inc("k", 3, LAX), 6, 3, True)
        self.assertResult(self.inc("k", -1, LAX), 5, 6, True)
        self.assertEqual(self.get("k", LAX), 5, "LAX Get shows the pending delta")
        # The flush carries it to Redis, where another daemon's STRICT Get finds it.
        self.eventually_get("k", 5, self.b, STRICT, "(flush of A's lax deltas)")
        # ... exactly once.
        self.stays("k", 5, self.b)
        self.assertEqual(self.get("k", STRICT), 5)

    def test_strict_op_applies_own_pending_delta_first(self):
        # A daemon never reorders its own writes: a STRICT Get right after a LAX Inc sees it.
        self.inc("k", 4, LAX)
        self.assertEqual(self.get("k", STRICT), 4)
        self.stays("k", 4, self.b)

    def test_set_previous_includes_pending_lax(self):
        # docs/api.md#strict-and-lax: LAX +5 (pending), then Set 100 -> previous 5; the +5 is not
        # applied again later.
        self.inc("k", 5, LAX)
        self.assertResult(self.set("k", 100), 100, 5, True)
        self.stays("k", 100, self.b)

    def test_lax_get_sees_other_daemon_after_refresh(self):
        self.assertEqual(self.get("k", LAX), 0)  # A caches 0
        self.inc("k", 9, STRICT, d=self.b)
        self.eventually_get("k", 9, self.a, LAX, "(cache refresh after --allowed_lag_ms)")

    def test_lax_increments_from_two_daemons_add_up(self):
        for _ in range(10):
            self.inc("k", 1, LAX, d=self.a)
            self.inc("k", 2, LAX, d=self.b)
        self.eventually_get("k", 30, self.a, STRICT)
        self.eventually_get("k", 30, self.b, LAX)
        self.stays("k", 30, self.a)

    def test_lax_conditions_use_local_view(self):
        self.set("k", 10)
        self.assertResult(self.inc("k", 1, LAX, cond(common_pb.COMPARATOR_GT, 10)), 10, 10, False)
        self.assertResult(self.inc("k", 1, LAX, cond(common_pb.COMPARATOR_EQ, 10)), 11, 10, True)
        self.eventually_get("k", 11, self.b, STRICT)


class NumbersTest(CounterTestBase):
    def test_int64_max_overflow(self):
        self.assertResult(self.set("max", INT64_MAX), INT64_MAX, 0, True)
        self.assertEqual(self.get("max", d=self.b), INT64_MAX)
        self.assertRpcError(grpc.StatusCode.OUT_OF_RANGE, self.inc, "max", 1, STRICT)
        self.assertEqual(self.get("max"), INT64_MAX, "a refused Inc changes nothing")
        self.assertRpcError(grpc.StatusCode.OUT_OF_RANGE, self.inc, "max", INT64_MAX, STRICT)
        self.assertResult(self.inc("max", -1), INT64_MAX - 1, INT64_MAX, True)
        self.assertResult(self.inc("max", 1), INT64_MAX, INT64_MAX - 1, True)

    def test_int64_min_overflow(self):
        self.assertResult(self.set("min", INT64_MIN), INT64_MIN, 0, True)
        self.assertRpcError(grpc.StatusCode.OUT_OF_RANGE, self.inc, "min", -1, STRICT)
        self.assertEqual(self.get("min", d=self.b), INT64_MIN)
        self.assertResult(self.inc("min", INT64_MAX), -1, INT64_MIN, True)

    def test_full_range_deltas(self):
        self.assertResult(self.inc("d", INT64_MAX), INT64_MAX, 0, True)
        self.assertResult(self.inc("d", INT64_MIN), -1, INT64_MAX, True)
        self.assertResult(self.inc("d", INT64_MIN + 1), INT64_MIN, -1, True)
        self.assertRpcError(grpc.StatusCode.OUT_OF_RANGE, self.inc, "d", -1)
        self.assertEqual(self.get("d"), INT64_MIN)

    def test_exact_above_2_pow_53(self):
        big = 2**53 + 1  # not representable as a double
        self.assertResult(self.set("big", big), big, 0, True)
        self.assertEqual(self.get("big", d=self.b), big)
        self.assertResult(self.inc("big", 2), big + 2, big, True)
        self.assertResult(self.inc("big", 2**60), big + 2 + 2**60, big + 2, True)
        self.assertEqual(self.get("big", STRICT, d=self.b), 2**60 + 2**53 + 3)
        r = self.set("big", -big, cond(common_pb.COMPARATOR_EQ, 2**60 + 2**53 + 3))
        self.assertResult(r, -big, 2**60 + 2**53 + 3, True)
        r = self.inc("big", 1, STRICT, cond(common_pb.COMPARATOR_EQ, -big + 1))
        self.assertResult(r, -big, -big, False)  # a double comparison would say equal

    def test_lax_exact_and_overflow(self):
        big = 2**53 + 1
        self.set("lax", big)
        self.assertResult(self.inc("lax", 2, LAX), big + 2, big, True)
        self.eventually_get("lax", big + 2, self.b, STRICT)
        self.set("laxmax", INT64_MAX)
        self.assertRpcError(grpc.StatusCode.OUT_OF_RANGE, self.inc, "laxmax", 1, LAX)
        self.assertEqual(self.get("laxmax", LAX), INT64_MAX)
        self.stays("laxmax", INT64_MAX, self.b)


class ValidationTest(CounterTestBase):
    def test_invalid_keys(self):
        bad_keys = {"empty": "", "colon": "a:b", "256 bytes": "k" * 256,
                    "256 bytes of emoji": "\U0001F600" * 64}
        for what, key in bad_keys.items():
            for rpc, call in [
                ("Inc strict", lambda k: self.inc(k, 1, STRICT)),
                ("Inc lax", lambda k: self.inc(k, 1, LAX)),
                ("Get strict", lambda k: self.get(k, STRICT)),
                ("Get lax", lambda k: self.get(k, LAX)),
                ("Set", lambda k: self.set(k, 1)),
                ("Del", self.delete),
            ]:
                with self.subTest(key=what, rpc=rpc):
                    self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, call, key,
                                        mentions="key")

    def test_invalid_namespaces(self):
        bad = {"colon": "ns:x", "256 bytes": "n" * 256}
        for what, ns in bad.items():
            with self.subTest(ns=what):
                self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.inc, "k", 1, STRICT,
                                    ns=ns, mentions="namespace")
                self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.inc, "k", 1, LAX,
                                    ns=ns, mentions="namespace")
                self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.get, "k", ns=ns,
                                    mentions="namespace")
                self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.clear, ns=ns,
                                    mentions="namespace")

    def test_limits_are_bytes_and_inclusive(self):
        ok_keys = ["k" * 255, "\U0001F600" * 63 + "abc", "x"]  # 255, 255 and 1 bytes
        for key in ok_keys:
            with self.subTest(key_len=len(key.encode())):
                self.assertResult(self.set(key, 3), 3, 0, True)
                self.assertEqual(self.get(key, d=self.b), 3)
        ns255 = "n" * 245 + rand_suffix(10)
        self.assertResult(self.inc("k", 1, ns=ns255), 1, 0, True)
        self.clear(ns=ns255)

    def test_special_characters(self):
        ns = "{tag} 🚀 " + rand_suffix()
        self.assertResult(self.set("k}{ 🦀", 5, ns=ns), 5, 0, True)
        self.assertResult(self.inc("k}{ 🦀", 1, STRICT, ns=ns), 6, 5, True)
        self.assertEqual(self.get("k}{ 🦀", ns=ns, d=self.b), 6)
        self.assertResult(self.inc("k}{ 🦀", 1, LAX, ns=ns), 7, 6, True)
        self.eventually_get("k}{ 🦀", 7, self.b, STRICT, ns=ns)
        self.assertEqual(self.get("k}{ 🦀", ns=ns + " "), 0, "another namespace")
        self.clear(ns=ns)
        self.assertEqual(self.get("k}{ 🦀", ns=ns), 0)

    def test_distinct_pairs_do_not_share_state(self):
        # Pairs that a careless key layout (concatenation, hash tags) could make collide.
        base = rand_suffix()
        pairs = [(base, "a}b"), (base + "}", "a}b"), (base, "}a}b"), (base + "{", "a"),
                 (base, "{a"), (base + "{a", "b"), (base + "{", "a}b"), ("{" + base + "}", "a"),
                 ("{" + base, "}a")]
        for i, (ns, key) in enumerate(pairs):
            self.set(key, 1000 + i, ns=ns)
        for i, (ns, key) in enumerate(pairs):
            self.assertEqual(self.get(key, ns=ns, d=self.b), 1000 + i, (ns, key))

    def test_redis_keys_contain_the_namespace(self):
        ns = "scanme" + rand_suffix()
        self.set("k1", 1, ns=ns)
        self.inc("k2", 1, LAX, ns=ns)
        self.eventually_get("k2", 1, self.b, STRICT, ns=ns)
        keys = self.redis.scan_keys(f"*{ns}*")
        self.assertTrue(keys, "SCAN finds the namespace's keys by its name")


class BatchTest(CounterTestBase):
    def op(self, kind, **fields):
        fields.setdefault("namespace", self.ns)
        cls = {"inc": pb.IncRequest, "get": pb.GetRequest, "set": pb.SetRequest,
               "del": pb.DelRequest}[kind]
        return pb.BatchOp(**{kind: cls(**fields)})

    def batch(self, ops, d=None):
        return (d or self.a).counters.Batch(pb.BatchRequest(ops=ops), timeout=60)

    def test_one_bad_item_fails_alone_and_order_holds(self):
        ops = [
            self.op("set", key="k", value=5),
            self.op("inc", key="k", delta=2),
            self.op("inc", key="", delta=100),  # invalid: fails alone
            self.op("get", key="k"),
            self.op("inc", key="k", delta=1, condition=cond(common_pb.COMPARATOR_GT, 100)),
            self.op("set", key="max", value=INT64_MAX),
            self.op("inc", key="max", delta=1),  # overflow: fails alone
            self.op("get", key="max"),
            self.op("del", key="k"),
            self.op("get", key="k"),
            self.op("inc", key="lax", delta=4, consistency=LAX),
            self.op("inc", key="k", delta=1, namespace="bad:ns"),  # invalid namespace
            self.op("inc", key="k", delta=3),
        ]
        res = self.batch(ops).results
        self.assertEqual(len(res), len(ops))
        codes = [r.code for r in res]
        self.assertEqual(codes, [0, 0, 3, 0, 0, 0, 11, 0, 0, 0, 0, 3, 0], "per-item status codes")
        for i in (2, 6, 11):
            self.assertIsNone(res[i].WhichOneof("result"), f"item {i} failed: no response")
            self.assertTrue(res[i].message, f"item {i} failed: has a message")
        self.assertIn("key", res[2].message.lower())
        self.assertIn("namespace", res[11].message.lower())
        self.assertResult(res[0].set, 5, 0, True)
        self.assertResult(res[1].inc, 7, 5, True)
        self.assertEqual(res[3].get.value, 7)
        self.assertResult(res[4].inc, 7, 7, False)
        self.assertEqual(res[7].get.value, INT64_MAX)
        self.assertResult(getattr(res[8], "del"), 0, 7, True)  # `del` is a Python keyword
        self.assertEqual(res[9].get.value, 0)
        self.assertResult(res[10].inc, 4, 0, True)
        self.assertResult(res[12].inc, 3, 0, True)
        self.assertEqual(self.get("k", d=self.b), 3)
        self.assertEqual(self.get("max", d=self.b), INT64_MAX)
        self.eventually_get("lax", 4, self.b, STRICT)

    def test_empty_batch(self):
        self.assertEqual(len(self.batch([]).results), 0)

    def test_ten_thousand_items_is_the_limit(self):
        ops = [self.op("inc", key="many", delta=1)] * 10000
        res = self.batch(ops).results
        self.assertEqual(len(res), 10000)
        self.assertEqual({r.code for r in res}, {0})
        self.assertEqual(res[-1].inc.value, 10000)
        self.assertEqual(self.get("many", d=self.b), 10000)

        too_many = [self.op("inc", key="toomany", delta=1)] * 10001
        self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.batch, too_many)
        self.assertEqual(self.get("toomany"), 0, "a refused batch applies nothing")
        self.stays("toomany", 0, self.b)


class ClearTest(CounterTestBase):
    def test_clear_one_namespace_only(self):
        other = self.ns + "-other"
        for ns in (self.ns, other):
            self.set("a", 1, ns=ns)
            self.inc("b", 2, STRICT, ns=ns)
            self.inc("c", 3, LAX, ns=ns, d=self.b)
        self.eventually_get("c", 3, self.a, STRICT)
        self.eventually_get("c", 3, self.a, STRICT, ns=other)

        self.assertIsInstance(self.clear(), pb.ClearResponse)
        for key in "abc":
            self.assertEqual(self.get(key, STRICT), 0, key)
            self.assertEqual(self.get(key, STRICT, d=self.b), 0, key)
        self.assertEqual([self.get(k, STRICT, ns=other) for k in "abc"], [1, 2, 3])
        self.assertEqual([self.get(k, LAX, ns=other, d=self.b) for k in "abc"], [1, 2, 3])
        self.stays("c", 0, self.b)
        # The namespace is usable again afterwards.
        self.assertResult(self.inc("a", 1), 1, 0, True)

    def test_clear_covers_own_pending_lax_delta(self):
        # A daemon never reorders its own writes: its LAX +4 issued before Clear is cleared too.
        self.inc("p", 4, LAX)
        self.clear()
        self.assertEqual(self.get("p", STRICT), 0)
        self.stays("p", 0, self.b)


class RateLimitTest(CounterTestBase):
    """RateLimitService: REDIS and HYBRID limits are shared by the daemons, LOCAL is per daemon.
    Capacity = rate × the default 10 s window."""

    def rl_inc(self, key, rate, provider, count=1, d=None, strategy=None):
        req = rl_pb.RateLimitIncRequest(namespace=self.ns, key=key, rate_per_second=rate,
                                        count=count, provider=provider)
        if strategy is not None:
            req.strategy = strategy
        return (d or self.a).ratelimit.Inc(req, timeout=CALL_TIMEOUT_S)

    def rl_total(self, key, provider, d=None):
        req = rl_pb.RateLimitGetRequest(namespace=self.ns, key=key, provider=provider)
        return (d or self.a).ratelimit.Get(req, timeout=CALL_TIMEOUT_S).total

    def test_redis_limit_is_shared_exactly(self):
        admitted = 0
        for i in range(30):  # rate 1/s: capacity 10, requests alternate between the daemons
            r = self.rl_inc("shared", 1, rl_pb.PROVIDER_REDIS, d=self.a if i % 2 else self.b)
            self.assertFalse(r.degraded)
            if r.allowed:
                self.assertEqual(r.decision, rl_pb.DECISION_ALLOWED)
                admitted += 1
            else:
                self.assertEqual(r.decision, rl_pb.DECISION_REJECTED)
                self.assertGreater(r.retry_after_ms, 0)
                self.assertLessEqual(r.retry_after_ms, 10000)
        self.assertEqual(admitted, 10)
        self.assertEqual(self.rl_total("shared", rl_pb.PROVIDER_REDIS, d=self.b), 10)

    def test_hybrid_limit_is_shared_and_never_exceeded(self):
        admitted, i = 0, 0
        deadline = time.monotonic() + EVENTUAL_TIMEOUT_S  # well inside the 10 s window
        while admitted < 10 and time.monotonic() < deadline:  # unused leases lapse by themselves
            r = self.rl_inc("shared", 1, rl_pb.PROVIDER_HYBRID, d=self.a if i % 2 else self.b)
            self.assertNotEqual(r.decision, rl_pb.DECISION_SUPPRESSED)
            admitted += 1 if r.allowed else 0
            i += 1
        self.assertEqual(admitted, 10)
        for i in range(20):  # the capacity is used: both daemons reject
            r = self.rl_inc("shared", 1, rl_pb.PROVIDER_HYBRID, d=self.a if i % 2 else self.b)
            self.assertEqual(r.decision, rl_pb.DECISION_REJECTED)
        # Each daemon's usage reaches the other through Redis (its next sync).
        for d in (self.a, self.b):
            wait_until(lambda d=d: self.rl_total("shared", rl_pb.PROVIDER_HYBRID, d=d) == admitted,
                       EVENTUAL_TIMEOUT_S, f"{d.name} HYBRID Get == {admitted}")

    def test_local_limit_is_per_daemon(self):
        for d in (self.a, self.b):
            results = [self.rl_inc("own", 1, rl_pb.PROVIDER_LOCAL, d=d).allowed for _ in range(12)]
            self.assertEqual(results, [True] * 10 + [False] * 2, d.name)
            self.assertEqual(self.rl_total("own", rl_pb.PROVIDER_LOCAL, d=d), 10)

    def test_suppressed_answers_carry_a_factor(self):
        # hard_limit_factor is 1 by default: no band, SUPPRESSED with factor 1 past the limit.
        answers = [self.rl_inc("sup", 1, rl_pb.PROVIDER_REDIS, strategy=rl_pb.STRATEGY_SUPPRESSED)
                   for _ in range(12)]
        self.assertEqual([a.allowed for a in answers], [True] * 10 + [False] * 2)
        self.assertEqual(answers[0].decision, rl_pb.DECISION_ALLOWED)
        self.assertEqual(answers[-1].decision, rl_pb.DECISION_SUPPRESSED)
        self.assertEqual(answers[-1].suppression_factor, 1.0)

    def test_bad_input_is_invalid_argument(self):
        for rate in (0.0, -1.0, float("nan"), float("inf")):
            with self.subTest(rate=rate):
                self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.rl_inc, "k", rate,
                                    rl_pb.PROVIDER_LOCAL, mentions="rate")


RLS_RULES = """domain: py
descriptors:
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 5, name: per_client}
  - key: client
    value: vip
    rate_limit: {unlimited: true}
"""


class RlsTest(unittest.TestCase):
    """Envoy's RateLimitService/ShouldRateLimit (docs/rls.md) through stubs generated from our
    proto/envoy/service/ratelimit/v3/rls.proto: the call Envoy makes, from another language."""

    tmp = None
    redis = None
    d = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = _make_tmpdir()
        try:
            cls.redis = Redis(cls.tmp)
            rules = os.path.join(cls.tmp, "rules.yaml")
            with open(rules, "w") as f:
                f.write(RLS_RULES)
            cls.d = Daemon(cls.tmp, "rls", cls.redis, "--rls_config", rules)
            cls.stub = rls_pb_grpc.RateLimitServiceStub(cls.d.channel)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.d is not None:
            cls.d.close()
        if cls.redis is not None:
            cls.redis.stop()
        _finish_tmpdir(cls.tmp)

    def call(self, value, hits=0, limit=None):
        req = rls_pb.RateLimitRequest(domain="py", hits_addend=hits)
        desc = req.descriptors.add()
        desc.entries.add(key="client", value=value)
        if limit is not None:
            desc.limit.requests_per_unit, desc.limit.unit = limit
        return self.stub.ShouldRateLimit(req, timeout=CALL_TIMEOUT_S)

    def test_sliding_limit_hits_and_statuses(self):
        ok, over = rls_pb.RateLimitResponse.OK, rls_pb.RateLimitResponse.OVER_LIMIT
        client = "c-" + rand_suffix()
        r = self.call(client, hits=3)
        self.assertEqual(r.overall_code, ok)
        self.assertEqual(len(r.statuses), 1)
        limit = r.statuses[0].current_limit
        self.assertEqual((limit.requests_per_unit, limit.name), (5, "per_client"))
        self.assertEqual(limit.unit, rls_pb.RateLimitResponse.RateLimit.MINUTE)
        self.assertEqual(self.call(client, hits=3).overall_code, over)  # 3 + 3 > 5: not recorded
        self.assertEqual(self.call(client, hits=2).overall_code, ok)
        r = self.call(client)
        self.assertEqual(r.overall_code, over)
        self.assertEqual(r.statuses[0].limit_remaining, 0)
        self.assertGreater(r.statuses[0].duration_until_reset.ToMilliseconds(), 0)
        self.assertLessEqual(r.statuses[0].duration_until_reset.ToMilliseconds(), 60000)

    def test_unlimited_override_and_no_rule(self):
        ok, over = rls_pb.RateLimitResponse.OK, rls_pb.RateLimitResponse.OVER_LIMIT
        for _ in range(8):
            r = self.call("vip")
            self.assertEqual(r.overall_code, ok)
            self.assertEqual(r.statuses[0].limit_remaining, 2**32 - 1)
        week = 7  # envoy.type.v3.RateLimitUnit.WEEK
        client = "o-" + rand_suffix()
        self.assertEqual(self.call(client, limit=(1, week)).overall_code, ok)
        r = self.call(client, limit=(1, week))
        self.assertEqual(r.overall_code, over)
        self.assertEqual(r.statuses[0].current_limit.unit, week)
        req = rls_pb.RateLimitRequest(domain="no-such-domain")
        req.descriptors.add().entries.add(key="client", value="x")
        r = self.stub.ShouldRateLimit(req, timeout=CALL_TIMEOUT_S)
        self.assertEqual(r.overall_code, ok)
        self.assertFalse(r.statuses[0].HasField("current_limit"))


class ShutdownTest(unittest.TestCase):
    """SIGTERM flushes pending LAX deltas before exit 0 (docs/api.md#shutdown)."""

    def setUp(self):
        self.tmp = _make_tmpdir()
        self.redis = Redis(self.tmp)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.close()
        self.redis.stop()
        _finish_tmpdir(self.tmp)

    def start(self, name, **kwargs):
        d = Daemon(self.tmp, name, self.redis, **kwargs)
        self.daemons.append(d)
        return d

    def test_sigterm_flushes_pending_lax_deltas(self):
        slow = self.start("slow", flush_ms=60000)  # nothing is flushed by the timer in this test
        reader = self.start("reader")
        ns = "shutdown-" + rand_suffix()

        def inc(key, delta):
            return slow.counters.Inc(
                pb.IncRequest(namespace=ns, key=key, delta=delta, consistency=LAX),
                timeout=CALL_TIMEOUT_S)

        def strict_get(key):
            return reader.counters.Get(pb.GetRequest(namespace=ns, key=key, consistency=STRICT),
                                       timeout=CALL_TIMEOUT_S).value

        self.assertEqual(inc("k1", 7).value, 7)
        self.assertEqual(inc("k1", 8).value, 15)
        self.assertEqual(inc("k2", -3).value, -3)
        self.assertEqual(strict_get("k1"), 0, "precondition: the deltas are still pending")

        started = time.monotonic()
        code = slow.terminate(timeout=20)
        self.assertEqual(code, 0, "exit code after SIGTERM:\n" + _tail(slow.log))
        self.assertLess(time.monotonic() - started, 15, "within --shutdown_grace_ms (10 s)")
        # After the exit the deltas must be in Redis: no polling here.
        self.assertEqual(strict_get("k1"), 15)
        self.assertEqual(strict_get("k2"), -3)

        # And a fresh daemon reads them from Redis too.
        fresh = self.start("fresh")
        got = fresh.counters.Get(pb.GetRequest(namespace=ns, key="k1", consistency=LAX),
                                 timeout=CALL_TIMEOUT_S).value
        self.assertEqual(got, 15)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_certs(d):
    """CA, a server certificate (127.0.0.1, localhost) and a client certificate it signed, and a
    client certificate of another CA; made with the openssl CLI. Returns {name: path}."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    p = {n: os.path.join(d, n) for n in (
        "ca.crt", "ca.key", "other-ca.crt", "other-ca.key", "server.crt", "server.key",
        "client.crt", "client.key", "other-client.crt", "other-client.key", "server.ext",
        "client.ext")}
    with open(p["server.ext"], "w", encoding="ascii") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(p["client.ext"], "w", encoding="ascii") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name in ("ca", "other-ca", "server", "client", "other-client"):
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p[name + ".key"])
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-new", "-key", p[ca + ".key"], "-days", "2", "-subj",
                "/CN=" + ca, "-out", p[ca + ".crt"])
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("other-client", "other-ca", "client.ext")):
        csr = os.path.join(d, name + ".csr")
        openssl("req", "-new", "-key", p[name + ".key"], "-subj", "/CN=" + name, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", p[ca + ".crt"], "-CAkey", p[ca + ".key"],
                "-CAcreateserial", "-days", "2", "-extfile", p[ext], "-out", p[name + ".crt"])
    return p


class TlsTest(unittest.TestCase):
    """TLS and mutual TLS on a TCP listener (--tls_cert, --tls_key, --tls_client_ca) from Python's
    grpc, and a Kubernetes-style grpc probe on the plaintext --health_listen port."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = _make_tmpdir()
        cls.daemons = []
        try:
            cls.redis = Redis(cls.tmp)
            cls.certs = _make_certs(cls.tmp)
            cls.tls_addr = f"127.0.0.1:{_free_port()}"
            cls.mtls_addr = f"127.0.0.1:{_free_port()}"
            cls.health_addr = f"127.0.0.1:{_free_port()}"
            c = cls.certs
            cls.daemons.append(Daemon(
                cls.tmp, "tls", cls.redis, "--listen",
                f"unix:{os.path.join(cls.tmp, 'tls.sock')},{cls.tls_addr}",
                "--tls_cert", c["server.crt"], "--tls_key", c["server.key"]))
            cls.daemons.append(Daemon(
                cls.tmp, "mtls", cls.redis, "--listen",
                f"unix:{os.path.join(cls.tmp, 'mtls.sock')},{cls.mtls_addr}",
                "--tls_cert", c["server.crt"], "--tls_key", c["server.key"],
                "--tls_client_ca", c["ca.crt"], "--health_listen", cls.health_addr))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        codes = _stop_processes([d.proc for d in cls.daemons], 20)
        if getattr(cls, "redis", None) is not None:
            cls.redis.stop()
        _finish_tmpdir(cls.tmp)
        if any(code != 0 for code in codes):
            raise AssertionError(f"daemons did not exit 0 on SIGTERM: {codes}")

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    def inc(self, channel, key):
        ns = "tls-" + self._testMethodName[5:25]
        stub = pb_grpc.CounterServiceStub(channel)
        return stub.Inc(pb.IncRequest(namespace=ns, key=key, delta=1, consistency=STRICT),
                        timeout=CALL_TIMEOUT_S).value

    def credentials(self, ca="ca.crt", client=None):
        c = self.certs
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.read(c[ca]))
        return grpc.ssl_channel_credentials(root_certificates=self.read(c[ca]),
                                            private_key=self.read(c[client + ".key"]),
                                            certificate_chain=self.read(c[client + ".crt"]))

    def assertRefused(self, channel, what):
        with self.assertRaises(grpc.RpcError, msg=what) as caught:
            self.inc(channel, "refused")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE, what)

    def test_tls_client(self):
        with grpc.secure_channel(self.tls_addr, self.credentials()) as ch:
            self.assertEqual(self.inc(ch, "k"), 1)
            self.assertEqual(self.inc(ch, "k"), 2)
        with grpc.insecure_channel(self.tls_addr) as ch:
            self.assertRefused(ch, "plaintext on a TLS port")
        with grpc.secure_channel(self.tls_addr, self.credentials(ca="other-ca.crt")) as ch:
            self.assertRefused(ch, "a CA that did not sign the daemon's certificate")

    def test_mutual_tls_client(self):
        with grpc.secure_channel(self.mtls_addr, self.credentials(client="client")) as ch:
            self.assertEqual(self.inc(ch, "k"), 1)
        with grpc.secure_channel(self.mtls_addr, self.credentials()) as ch:
            self.assertRefused(ch, "no client certificate")
        with grpc.secure_channel(self.mtls_addr,
                                 self.credentials(client="other-client")) as ch:
            self.assertRefused(ch, "a client certificate of another CA")

    def test_grpc_probe_on_health_port(self):
        # What kubelet's `grpc:` probe does: grpc.health.v1.Health/Check, plaintext, no TLS.
        with grpc.insecure_channel(self.health_addr) as ch:
            self.assertEqual(Daemon._check(ch, "", CALL_TIMEOUT_S), SERVING)
            self.assertEqual(Daemon._check(ch, "distkit.v1.CounterService", CALL_TIMEOUT_S),
                             SERVING)
            with self.assertRaises(grpc.RpcError) as caught:
                self.inc(ch, "k")
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)


# ------------------------------------------------------------------------------------------------
# Main

_tmpdirs = []
_failed_logs = []


def _make_tmpdir():
    # Unix socket paths are limited to 107 bytes: stay short even with a long $TMPDIR.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    path = tempfile.mkdtemp(prefix="dk-e2e-", dir=base)
    _tmpdirs.append(path)
    return path


def _finish_tmpdir(path):
    if path is None:
        return
    if os.environ.get("E2E_KEEP_TMP") == "1":
        print(f"\n[e2e] kept {path}", file=sys.stderr)
        return
    # Keep the daemons' non-empty log tails for the failure report before removing the folder.
    for name in sorted(os.listdir(path)):
        if name.endswith(".log") and name != "redis.log":
            tail = _tail(os.path.join(path, name), 20)
            if tail.strip():
                _failed_logs.append((os.path.join(path, name), tail))
    shutil.rmtree(path, ignore_errors=True)


def main():
    global ARGS, grpc, pb, pb_grpc, common_pb, rl_pb, rl_pb_grpc, rls_pb, rls_pb_grpc, STRICT, LAX
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True, help="path of the distkitd binary")
    parser.add_argument("--redis-server", required=True, help="path of redis-server")
    parser.add_argument("--stubs", required=True, help="folder with the generated Python stubs")
    ARGS, rest = parser.parse_known_args()
    for what, path in (("--daemon", ARGS.daemon), ("--redis-server", ARGS.redis_server)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            parser.error(f"{what}: {path} is not an executable file")
    if not os.path.isfile(os.path.join(ARGS.stubs, "distkit", "v1", "counter_pb2.py")):
        parser.error(f"--stubs: {ARGS.stubs}/distkit/v1/counter_pb2.py not found")
    ARGS.daemon = os.path.abspath(ARGS.daemon)

    sys.path.insert(0, os.path.abspath(ARGS.stubs))
    import grpc as grpc_module  # pylint: disable=import-outside-toplevel
    # pylint: disable-next=import-outside-toplevel
    from distkit.v1 import common_pb2, counter_pb2, counter_pb2_grpc
    # pylint: disable-next=import-outside-toplevel
    from distkit.v1 import rate_limit_pb2, rate_limit_pb2_grpc

    grpc, pb, pb_grpc, common_pb = grpc_module, counter_pb2, counter_pb2_grpc, common_pb2
    rl_pb, rl_pb_grpc = rate_limit_pb2, rate_limit_pb2_grpc
    # pylint: disable-next=import-outside-toplevel
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
    rls_pb, rls_pb_grpc = rls_pb2, rls_pb2_grpc
    STRICT, LAX = common_pb2.CONSISTENCY_STRICT, common_pb2.CONSISTENCY_LAX

    # A SIGTERM (e.g. a ctest timeout) stops the run like Ctrl-C; the atexit clean-up still runs.
    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    program = unittest.main(module=sys.modules[__name__], argv=[sys.argv[0]] + rest, exit=False,
                            verbosity=2)
    result = program.result
    ok = result.wasSuccessful() and result.testsRun > 0
    if not ok and _failed_logs:
        print("\n[e2e] tails of the daemon logs:", file=sys.stderr)
        for path, tail in _failed_logs:
            print(f"--- {path}\n{tail}", file=sys.stderr)
    _kill_children()
    for path in _tmpdirs:
        if os.environ.get("E2E_KEEP_TMP") != "1":
            shutil.rmtree(path, ignore_errors=True)
    # Count tests, not subtests: a failed subtest fails its test.
    failed = {getattr(t, "test_case", t).id()
              for t, _ in result.failures + result.errors if isinstance(t, unittest.TestCase)}
    failed |= {t.id() for t in result.unexpectedSuccesses}
    errors_outside_tests = sum(1 for t, _ in result.errors if not isinstance(t, unittest.TestCase))
    skipped = len(result.skipped)
    print(f"{max(result.testsRun - len(failed) - skipped, 0)} passed, "
          f"{len(failed) + errors_outside_tests} failed"
          + (f", {skipped} skipped" if skipped else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
