#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/<target>/ (seed-*; the fuzzer's finds have hash
names). Stdlib only: protobuf messages are encoded by hand from the field numbers of proto/.

    fuzz/make_seeds.py        # from the repository root
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, "seed-" + name), "wb") as f:
        f.write(data)


# ---- protobuf wire format
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def f_int(num, v):
    return varint(num << 3) + varint(v)


def f_bytes(num, v):
    if isinstance(v, str):
        v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v


def f_double(num, v):
    return varint(num << 3 | 1) + struct.pack("<d", v)


def names(ns, key):
    return (f_bytes(1, ns) if ns is not None else b"") + (f_bytes(2, key) if key is not None else b"")


def cond(op, operand):
    return f_int(1, op) + f_int(2, operand)


# ---- RESP
def bulk(s):
    if isinstance(s, str):
        s = s.encode()
    return b"$%d\r\n%s\r\n" % (len(s), s)


def integer(n):
    return b":%d\r\n" % n


def array(*items):
    return b"*%d\r\n" % len(items) + b"".join(items)


def script_ok(value, prev, applied=1, dropped=0, seq=0, status="ok"):
    return array(bulk(status), bulk(str(value)), bulk(str(prev)), integer(applied),
                 integer(dropped), integer(seq))


def config_seeds():
    t = "config_fuzz"
    write(t, "empty", "")
    write(t, "help", "--help")
    write(t, "listen", "--listen=unix:/tmp/x.sock\0--listen\0127.0.0.1:50051")
    write(t, "redis-seeds", "--redis=redis://a:1,redis://b:2\0--redis_mode=cluster")
    write(t, "redis-unix", "--redis\0unix:/run/redis.sock?db=2&password=p")
    write(t, "rediss", "--redis=rediss://u:p@h:6380/1\0--redis_tls_ca=/ca.pem\0"
                       "--redis_tls_server_name=h")
    write(t, "ints", "--flush_interval_ms=1\0--allowed_lag_ms=0\0--redis_timeout_ms=999999999")
    write(t, "negative", "--flush_interval_ms=-1")
    write(t, "overflow", "--rate_window_seconds=99999999999999999999")
    write(t, "double", "--hard_limit_factor=1.5\0--rate_bucket_ms=50")
    write(t, "nan", "--hard_limit_factor=nan")
    write(t, "failure-mode", "--rate_limit_failure_mode=local")
    write(t, "socket-mode", "--socket_mode=0600")
    write(t, "socket-mode-bad", "--socket_mode=999")
    write(t, "namespace", "--namespace=a:b")
    write(t, "instance-id", "--instance_id=i-1\0--dead_instance_threshold_ms=3000")
    write(t, "metrics", "--metrics_listen=127.0.0.1:9090\0--log_level=debug")
    write(t, "unknown", "--nope=1")
    write(t, "missing-value", "--redis")
    write(t, "positional", "extra")
    write(t, "env", "DISTKIT_REDIS=redis://e:1\0DISTKIT_FLUSH_INTERVAL_MS=7\0--flush_interval_ms=8")
    write(t, "env-bad", "DISTKIT_MAX_PENDING_KEYS=x")
    write(t, "pending", "--max_pending_keys=1\0--shutdown_grace_ms=0")
    write(t, "sync", "--sync_interval_ms=1\0--suppression_cache_ms=0")


def url_seeds():
    t = "redis_url_fuzz"
    for i, u in enumerate([
            "redis://127.0.0.1:6379", "redis://h", "redis://user:pass@host:1/3",
            "redis://:pass@host", "rediss://[::1]:6380/0", "redis://[fe80::1%25eth0]:1",
            "unix:/tmp/r.sock", "unix:/tmp/r.sock?db=1&user=u&password=p", "unix:",
            "redis://h:0", "redis://h:65536", "redis://h:-1", "redis://h/x", "redis://h/99999999999",
            "redis://p%40ss:w%3Ard@h", "http://h", "redis://", "redis://a:1,redis://b:2",
            " redis://a:1 , rediss://b:2 ", "redis://a:1,unix:/x", "redis://a:1,,",
            "MOVED 3999 127.0.0.1:6381", "ASK 1 [::1]:7000", "MOVED 16384 h:1",
            "cluster_enabled:1\r\n", "# Cluster\r\ncluster_enabled:0\r\n", "{user1}.following",
            "{}{x}", "rediss://u@h:1"]):
        write(t, "%02d" % i, u)


def validation_seeds():
    t = "validation_fuzz"
    for i, s in enumerate([b"", b"k", b"a:b", b"x" * 255, b"x" * 256, "ключ".encode(),
                           "😀".encode(), b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                           b"\xe2\x82", b"\x80", b"\x00", b"a\x00b", b"\xef\xbb\xbf"]):
        write(t, "%02d" % i, s)


def reply_seeds():
    t = "reply_fuzz"
    write(t, "script-ok", script_ok(5, 3, seq=7))
    write(t, "script-overflow", script_ok(5, 5, applied=0, status="overflow"))
    write(t, "script-notint", script_ok(0, 0, applied=0, status="notint"))
    write(t, "script-short", array(bulk("ok"), bulk("1")))
    write(t, "script-bad-number", script_ok("x", "1"))
    write(t, "script-nil", b"$-1\r\n")
    write(t, "errors", b"-NOSCRIPT No matching script\r\n-WRONGTYPE Operation\r\n"
                       b"-OOM command not allowed\r\n-LOADING\r\n-BUSY\r\n-MOVED 1 h:2\r\n")
    write(t, "status", b"+OK\r\n+PONG\r\n:42\r\n")
    node = array(bulk("id"), bulk("abc"), bulk("port"), integer(7000), bulk("tls-port"),
                 integer(7100), bulk("ip"), bulk("127.0.0.1"), bulk("endpoint"),
                 bulk("127.0.0.1"), bulk("role"), bulk("master"), bulk("health"), bulk("online"))
    replica = array(bulk("port"), integer(7001), bulk("ip"), bulk("127.0.0.1"), bulk("role"),
                    bulk("replica"), bulk("health"), bulk("online"))
    write(t, "shards", array(array(bulk("slots"), array(integer(0), integer(5460)),
                                   bulk("nodes"), array(node, replica)),
                             array(bulk("slots"), array(integer(5461), integer(16383)),
                                   bulk("nodes"), array(node))))
    write(t, "shards-bad-range", array(array(bulk("slots"), array(integer(9), integer(2)),
                                             bulk("nodes"), array(node))))
    write(t, "shards-odd-slots", array(array(bulk("slots"), array(integer(1)),
                                             bulk("nodes"), array(node))))
    write(t, "slots", array(array(integer(0), integer(16383),
                                  array(bulk("127.0.0.1"), integer(7000), bulk("id")),
                                  array(bulk("127.0.0.1"), integer(7001), bulk("id2")))))
    write(t, "slots-out-of-range", array(array(integer(0), integer(20000),
                                               array(bulk("h"), integer(1)))))
    write(t, "slots-no-node", array(array(integer(0), integer(1))))
    write(t, "info", bulk("# Cluster\r\ncluster_enabled:1\r\n"))
    write(t, "nested", array(array(array(array(integer(1))))))
    write(t, "partial", b"*3\r\n$2\r\nok\r\n")


def req(type_, msg, replies=b""):
    return bytes([type_]) + struct.pack("<H", len(msg)) + msg + replies


def request_seeds():
    t = "request_fuzz"
    STRICT, LAX = 1, 2
    inc = names("ns", "k") + f_int(3, 5) + f_int(4, STRICT)
    write(t, "00-inc-strict", req(0, inc, script_ok(5, 0)))
    write(t, "00-inc-lax", req(0, names("", "k") + f_int(3, 1) + f_int(4, LAX),
                               script_ok(0, 0) + script_ok(1, 0, seq=1)))
    write(t, "00-inc-cond", req(0, inc + f_bytes(5, cond(5, 3)), script_ok(5, 5, applied=0)))
    write(t, "00-inc-bad-cond", req(0, inc + f_bytes(5, cond(77, 3))))
    write(t, "00-inc-bad-consistency", req(0, names("ns", "k") + f_int(4, 9)))
    write(t, "00-inc-colon", req(0, names("a:b", "k")))
    write(t, "00-inc-no-key", req(0, names("ns", None)))
    write(t, "00-inc-error-reply", req(0, inc, b"-WRONGTYPE Operation against a key\r\n"))
    write(t, "01-get", req(1, names("ns", "k") + f_int(3, STRICT), script_ok(9, 9)))
    write(t, "01-get-lax", req(1, names("ns", "k") + f_int(3, LAX), script_ok(9, 9)))
    write(t, "02-set", req(2, names("ns", "k") + f_int(3, -4) + f_bytes(4, cond(1, 0)),
                           script_ok(-4, 0)))
    write(t, "03-del", req(3, names("ns", "k"), script_ok(0, 3)))
    write(t, "04-clear", req(4, f_bytes(1, "ns"), array(bulk("0"), array(bulk("dk:{ns}:k")))))
    batch = b"".join(f_bytes(1, f_bytes(i, m)) for i, m in [
        (1, inc), (2, names("ns", "k")), (3, names("ns", "k") + f_int(3, 1)),
        (4, names("ns", "k"))]) + f_bytes(1, b"")
    write(t, "05-batch", req(5, batch, script_ok(5, 0) * 4))
    iinc = names("ns", "k") + f_int(3, 2) + f_int(4, STRICT)
    write(t, "06-iinc", req(6, iinc))
    write(t, "06-iinc-lax", req(6, names("ns", "k") + f_int(3, 2) + f_int(4, LAX)))
    write(t, "07-iget", req(7, names("ns", "k") + f_int(3, LAX)))
    write(t, "08-iset", req(8, names("ns", "k") + f_int(3, 1) + f_bytes(4, cond(6, 0))))
    write(t, "09-set-on-instance", req(9, names("ns", "k") + f_int(3, 1) + f_int(4, LAX)))
    write(t, "10-idel", req(10, names("ns", "k")))
    write(t, "11-del-on-instance", req(11, names("ns", "k")))
    write(t, "12-iclear", req(12, f_bytes(1, "ns")))
    write(t, "13-clear-on-instance", req(13, b""))
    ibatch = b"".join(f_bytes(1, f_bytes(i, m)) for i, m in [
        (1, iinc), (2, names("ns", "k")), (3, names("ns", "k")), (4, names("ns", "k")),
        (5, names("ns", "k")), (6, names("ns", "k"))])
    write(t, "14-ibatch", req(14, ibatch))
    rl = names("ns", "r") + f_double(3, 10.0) + f_int(4, 1)
    write(t, "15-rl-local", req(15, rl + f_int(5, 1) + f_int(6, 1)))
    write(t, "15-rl-suppressed", req(15, rl + f_int(5, 1) + f_int(6, 2)))
    write(t, "15-rl-redis", req(15, rl + f_int(5, 2),
                                array(integer(1), integer(0), integer(9), bulk("1"))))
    write(t, "15-rl-hybrid", req(15, rl + f_int(5, 3)))
    write(t, "15-rl-nan", req(15, names("ns", "r") + f_double(3, float("nan"))))
    write(t, "15-rl-inf", req(15, names("ns", "r") + f_double(3, float("inf"))))
    write(t, "15-rl-huge-count", req(15, rl + f_int(4, (1 << 64) - 1)))
    write(t, "15-rl-bad-provider", req(15, rl + f_int(5, 9)))
    write(t, "16-rl-get", req(16, names("ns", "r") + f_int(3, 2), array(integer(3), integer(1))))
    write(t, "17-rl-batch", req(17, f_bytes(1, f_bytes(1, rl)) * 3 + f_bytes(1, b"")))
    write(t, "unparseable", req(0, b"\xff\xff\xff"))


if __name__ == "__main__":
    config_seeds()
    url_seeds()
    validation_seeds()
    reply_seeds()
    request_seeds()
