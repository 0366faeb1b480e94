#!/usr/bin/env bash
# `make bench-proxy`: queue-proxy and nginx side by side, in one run, in front of the same
# upstream (an nginx serving a 1 KiB JSON file), under the same wrk load (keep-alive). Prints
# requests/s, p50/p99, the latency each proxy adds over going direct, and each proxy's RSS and
# CPU; writes the figures to docs/benchmarks.md (section bench-proxy).
#   DURATION=10 CONNS=32 WORKERS=1 ROUNDS=4 PROFILE=release scripts/bench-proxy.sh
# PROFILE=release (the default) measures the binary that ships (deploy/Dockerfile builds
# `--release`: thin LTO); PROFILE=bench rebuilds quicker while working on the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
CONNS="${CONNS:-32}"
WORKERS="${WORKERS:-1}"
ROUNDS="${ROUNDS:-4}"   # even: the two proxies take turns going first
PROFILE="${PROFILE:-release}"
case "$PROFILE" in
  release) PROFILE_DESC="release profile as shipped: thin LTO" ;;
  bench) PROFILE_DESC="bench profile: no LTO" ;;
  *) echo "bench-proxy: PROFILE must be release or bench, not '$PROFILE'" >&2; exit 2 ;;
esac

scripts/bench-deps.sh

cargo build --profile "$PROFILE" -p queue-proxy --bin queue-proxy
BIN="$PWD/target/release/queue-proxy"   # both profiles write to target/release

WORK="$(mktemp -d)"
chmod 755 "$WORK"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for f in "$WORK"/*.pid; do [ -f "$f" ] && kill -QUIT "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
UP="$(free_port)"; NGX="$(free_port)"; QP="$(free_port)"

mkdir -p "$WORK/www/bench" "$WORK/tmp"
python3 - "$WORK/www/bench/1k.json" <<'EOF'
import json, sys
body = {"codes_remaining": 7, "generated_at": "2026-11-22T00:00:00Z", "pad": ""}
s = json.dumps(body)
body["pad"] = "x" * (1024 - len(s))
open(sys.argv[1], "w").write(json.dumps(body))
EOF

common="worker_rlimit_nofile 65536; $( [ "$(id -u)" = 0 ] && echo 'user root;' )
events { worker_connections 8192; }"
temps="client_body_temp_path $WORK/tmp/body; proxy_temp_path $WORK/tmp/proxy; fastcgi_temp_path $WORK/tmp/fcgi; uwsgi_temp_path $WORK/tmp/uwsgi; scgi_temp_path $WORK/tmp/scgi;"
cat >"$WORK/upstream.conf" <<EOF
worker_processes 1; pid $WORK/upstream.pid; error_log $WORK/upstream.err warn;
$common
http { access_log off; $temps keepalive_requests 1000000; default_type application/json;
  server { listen 127.0.0.1:$UP; root $WORK/www; } }
EOF
cat >"$WORK/nginx.conf" <<EOF
worker_processes $WORKERS; pid $WORK/nginx.pid; error_log $WORK/nginx.err warn;
$common
http { access_log off; $temps keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$NGX;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Request-Id \$request_id; } } }
EOF
nginx -p "$WORK" -e "$WORK/upstream.err" -c "$WORK/upstream.conf"
nginx -p "$WORK" -e "$WORK/nginx.err" -c "$WORK/nginx.conf"

openssl genpkey -algorithm ed25519 -out "$WORK/proxy.pem" 2>/dev/null
cat >"$WORK/routes.toml" <<EOF
phase = 1
default_legacy = "upstream"
[legacy.upstream]
url = "http://127.0.0.1:$UP"
[services.auth]
url = "http://127.0.0.1:1"
[[routes]]
name = "bench"
prefix = "/bench"
queue = { service = "auth" }
cutover_phase = 2
EOF
cat >"$WORK/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$QP"
workers = $WORKERS
[admin]
listen = "127.0.0.1:0"
[routing]
table = "$WORK/routes.toml"
[telemetry]
level = "warn"   # like nginx's access_log off: no line per request
[tokens]
issuer = "proxy"
signing_key = "$WORK/proxy.pem"
EOF
"$BIN" --config "$WORK/proxy.toml" 2>"$WORK/proxy.err" &
QP_PID=$!
pids+=("$QP_PID")
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$QP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$QP/bench/1k.json" >/dev/null || { echo "bench-proxy: queue-proxy does not forward" >&2; cat "$WORK/proxy.err" >&2; exit 1; }
curl -fsS "http://127.0.0.1:$NGX/bench/1k.json" >/dev/null || { echo "bench-proxy: nginx does not forward" >&2; exit 1; }

# Processes of a target: queue-proxy's pid, or nginx's master and workers.
procs() {
  case "$1" in
    queue-proxy) echo "$QP_PID" ;;
    nginx) m="$(cat "$WORK/nginx.pid")"; echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
    direct) echo "" ;;
  esac
}
cpu_ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
rss_kb() { local t=0; for p in $1; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
to_ms() { python3 -c "import re,sys; v=sys.argv[1]; n,u=re.match(r'([\d.]+)(us|ms|s)',v).groups(); print(float(n)*{'us':0.001,'ms':1,'s':1000}[u])" "$1"; }

declare -A RPS P50 P99 CPU RSS WRK
run() { # name port
  local name="$1" port="$2" ps before after out
  ps="$(procs "$name")"
  wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/bench/1k.json" >/dev/null   # warm-up: pools, caches
  before="$(cpu_ticks "$ps")"
  # wrk's own CPU (user + system), to see whether the load generator saturates its core.
  out="$( { TIMEFORMAT='%3U %3S'; time wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/bench/1k.json"; } 2>"$WORK/wrk.time")"
  after="$(cpu_ticks "$ps")"
  WRK[$name]+="$(tail -n1 "$WORK/wrk.time" | awk -v d="$DURATION" '{print ($1 + $2) / d * 100}') "
  if echo "$out" | grep -q "Non-2xx"; then echo "bench-proxy: $name answered non-2xx:" >&2; echo "$out" >&2; exit 1; fi
  RPS[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
  P50[$name]+="$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')") "
  P99[$name]+="$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')") "
  CPU[$name]+="$(python3 -c "print(($after - $before) / $(getconf CLK_TCK) / $DURATION * 100)") "
  [ -n "$ps" ] && RSS[$name]+="$(rss_kb "$ps") "
  echo "  $name: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-proxy: queue-proxy from the $PROFILE_DESC; $ROUNDS rounds of ${DURATION}s, wrk -t1 -c$CONNS, 1 KiB responses; $WORKERS worker(s) each:" \
  "nginx worker_processes $WORKERS, queue-proxy server.workers $WORKERS; $(nproc) cores shared by wrk, both proxies," \
  "the upstream and anything else running (load average $LOAD_BEFORE)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run direct "$UP"
  # The order alternates: whichever goes first in a round tends to meet a quieter machine.
  if [ $((r % 2)) = 1 ]; then run nginx "$NGX"; run queue-proxy "$QP"; else run queue-proxy "$QP"; run nginx "$NGX"; fi
done
RATIOS="$(python3 -c "import sys; q, n = (list(map(float, a.split())) for a in sys.argv[1:]); print(' '.join(f'{a / b:.2f}' for a, b in zip(q, n)))" "${RPS[queue-proxy]}" "${RPS[nginx]}")"
echo "queue-proxy / nginx requests/s, round by round: $RATIOS"

mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1].split()]; print(sum(v)/len(v))" "$1"; }
table="$(
  d50="$(mean "${P50[direct]}")"; d99="$(mean "${P99[direct]}")"
  echo "| target | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU % | proxy CPU µs/request | proxy RSS MiB | wrk CPU % |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for n in direct nginx queue-proxy; do
    rps="$(mean "${RPS[$n]}")"; p50="$(mean "${P50[$n]}")"; p99="$(mean "${P99[$n]}")"
    if [ "$n" = direct ]; then
      printf '| %s | %.0f | %.2f | %.2f | – | – | – | – | – | %.0f |\n' "$n" "$rps" "$p50" "$p99" "$(mean "${WRK[$n]}")"
    else
      printf '| %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.0f | %.1f | %.1f | %.0f |\n' "$n" "$rps" "$p50" "$p99" \
        "$(python3 -c "print($p50 - $d50)")" "$(python3 -c "print($p99 - $d99)")" \
        "$(mean "${CPU[$n]}")" "$(python3 -c "print($(mean "${CPU[$n]}") / 100 / $rps * 1e6)")" \
        "$(python3 -c "print($(mean "${RSS[$n]}") / 1024)")" "$(mean "${WRK[$n]}")"
    fi
  done
)"
echo
echo "$table"

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
section="$(cat <<EOF
<!-- bench-proxy:start -->
## Proxy: queue-proxy beside nginx (\`make bench-proxy\`)

Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu). One upstream (nginx serving a 1 KiB JSON
file over keep-alive); in front of it nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') (\`proxy_pass\`, upstream keepalive 256,
access log off) and queue-proxy ($PROFILE_DESC, route table with one route, log level warn),
each with the same $WORKERS worker(s) (nginx \`worker_processes $WORKERS\`, queue-proxy \`server.workers = $WORKERS\`).
Load: \`wrk -t1 -c$CONNS\` keep-alive, ${DURATION} s after a 2 s warm-up, $ROUNDS rounds (means shown; the
two proxies take turns going first). queue-proxy / nginx requests/s, round by round: $RATIOS.
**wrk, both proxies and the upstream share the same $(nproc) cores** with whatever else runs (load average
$LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after), so requests/s is bounded by the whole
machine rather than by one proxy; CPU µs per request is the steadier comparison. "Added" is the
proxy's latency minus going direct; CPU is the proxy's processes during the run (100 % = one
core); wrk CPU is the load generator's own (100 % = its one thread saturates a core).

$table

Aim (issue 6): throughput at least nginx's, added p99 no worse.
<!-- bench-proxy:end -->
EOF
)"
python3 - docs/benchmarks.md "$section" <<'EOF'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- bench-proxy:start -->.*?<!-- bench-proxy:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
echo "bench-proxy: figures written to docs/benchmarks.md"
