#!/usr/bin/env bash
# pages.sh — one Surge node against nginx serving the same bytes.
#
# The node and nginx (one worker, gzip_static on, keep-alive, sendfile,
# open_file_cache) run pinned to core 0 (taskset), wrk runs pinned to core
# 1 with 64 connections and "Accept-Encoding: gzip". Rounds alternate the
# order node/nginx. Paths: GET / (the home page, precompressed) and GET
# /api/v1/total (nginx serves a static file with the same bytes and
# headers). Reports req/s medians, node/nginx ratios, p50/p99 (wrk
# --latency) and server CPU per request (utime+stime from /proc/PID/stat).
#
# Usage: bench/pages.sh [--smoke]
# Environment: ROUNDS (5) DURATION (seconds, 10) WARMUP (seconds, 3)
#   CONNS (64) NODE_BIN (default: go build ./cmd/node) OUT (markdown file
#   to also write the summary to) KEEP=1 (keep the work dir) SMOKE=1.
# Exit codes: 0 worked; 1 a run failed or the bytes differed; 3 nginx,
#   wrk or taskset missing.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
SMOKE=${SMOKE:-0}
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "pages.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
if [ "$SMOKE" = 1 ]; then ROUNDS=1; DURATION=1; WARMUP=1; CONNS=16; fi

for tool in nginx wrk taskset curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "pages.sh: $tool is not installed (apt-get install nginx wrk util-linux curl)" >&2
    exit 3
  fi
done
CPUS=$(nproc)
if [ "$CPUS" -ge 2 ]; then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$(mktemp -d /tmp/surge-pages.XXXXXX)
chmod 755 "$B"   # the nginx worker may run as nobody
NODE_PID=""; NGINX_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$B"; else echo "work dir kept: $B" >&2; fi
}
trap cleanup EXIT
log() { echo "$(date +%H:%M:%S) $*" >&2; }

if [ -z "${NODE_BIN:-}" ]; then
  log "building cmd/node"
  (cd "$ROOT" && go build -o "$B/node" ./cmd/node)
  NODE_BIN="$B/node"
fi

# --- the node, pinned to the server core ------------------------------------
taskset -c "$SERVER_CPU" "$NODE_BIN" --data-dir "$B/data" --name pages \
  --http-addr 127.0.0.1:0 --gossip-addr 127.0.0.1:0 --raft-addr 127.0.0.1:0 \
  --advertise 127.0.0.1 --rate-limit 0 --log-level warn 2>"$B/node.log" &
NODE_PID=$!
NODE_URL=""
for _ in $(seq 1 300); do
  NODE_URL=$(grep -o 'Surge is running at http://[^ ]*' "$B/node.log" | head -1 | sed 's/.* at //') || true
  [ -n "$NODE_URL" ] && break
  kill -0 "$NODE_PID" 2>/dev/null || { cat "$B/node.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$NODE_URL" ] || { echo "pages.sh: node did not start" >&2; cat "$B/node.log" >&2; exit 1; }
NODE_URL=${NODE_URL/localhost/127.0.0.1}
for _ in $(seq 1 300); do
  curl -fs "$NODE_URL/readyz" >/dev/null && break
  sleep 0.1
done
curl -fs "$NODE_URL/readyz" >/dev/null || { echo "pages.sh: node not ready" >&2; exit 1; }

# --- the same bytes for nginx -------------------------------------------------
mkdir -p "$B/www/api/v1" "$B/nginx/logs"
curl -fs -H 'Accept-Encoding: gzip' -D "$B/home.h" -o "$B/www/index.html.gz" "$NODE_URL/"
curl -fs -o "$B/www/index.html" "$NODE_URL/"
curl -fs -D "$B/total.h" -o "$B/www/api/v1/total" "$NODE_URL/api/v1/total"
grep -qi '^content-encoding: gzip' "$B/home.h" || { echo "pages.sh: node did not answer gzip" >&2; exit 1; }
cmp -s <(gzip -dc "$B/www/index.html.gz") "$B/www/index.html" || { echo "pages.sh: gzip variant differs from the page" >&2; exit 1; }
touch -r "$B/www/index.html" "$B/www/index.html.gz"

# add_header lines for the node's own headers, so both send the same header set.
# A request ID is per request: nginx sends its own $request_id where the node
# sends one (the node leaves it off cacheable responses).
headers_for() {
  tr -d '\r' <"$1" | awk -F': ' 'NR>1 && NF>=2 {
    n=tolower($1)
    if (n=="x-request-id") { print "        add_header X-Request-Id $request_id always;"; next }
    if (n=="date"||n=="content-length"||n=="content-type"||n=="content-encoding"||n=="etag"||n=="vary"||n=="last-modified"||n=="connection") next
    v=substr($0, length($1)+3); gsub(/"/, "\\\"", v)
    printf "        add_header %s \"%s\" always;\n", $1, v
  }'
}

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "pages.sh: no free port" >&2; exit 1
}
NGINX_PORT=$(free_port)
cat >"$B/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $B/nginx/nginx.pid;
error_log $B/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 65; keepalive_requests 1000000;
    open_file_cache max=64 inactive=60s; open_file_cache_valid 60s;
    gzip off; gzip_static on; gzip_vary on;
    charset utf-8;
    server_tokens off;
    client_body_temp_path $B/nginx/tmp_body; proxy_temp_path $B/nginx/tmp_proxy;
    fastcgi_temp_path $B/nginx/tmp_fcgi; uwsgi_temp_path $B/nginx/tmp_uwsgi; scgi_temp_path $B/nginx/tmp_scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $B/www;
        location = / {
            index index.html;
$(headers_for "$B/home.h")
        }
        location = /index.html {
$(headers_for "$B/home.h")
        }
        location = /api/v1/total {
            default_type application/json;
            charset off;
$(headers_for "$B/total.h")
        }
    }
}
CONF
taskset -c "$SERVER_CPU" nginx -c "$B/nginx/nginx.conf" -g 'daemon off;' 2>"$B/nginx/logs/stderr.log" &
NGINX_PID=$!
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "$NGINX_URL/api/v1/total" && break
  sleep 0.1
done
WORKER_PID=$(pgrep -P "$NGINX_PID" | head -1)
[ -n "$WORKER_PID" ] || { echo "pages.sh: nginx did not start" >&2; cat "$B/nginx/logs/"* >&2; exit 1; }

# Both must send the same bodies.
same=1
for path in / /api/v1/total; do
  a=$(curl -fs -H 'Accept-Encoding: gzip' "$NODE_URL$path" | sha256sum | cut -c1-16)
  b=$(curl -fs -H 'Accept-Encoding: gzip' "$NGINX_URL$path" | sha256sum | cut -c1-16)
  ha=$(curl -fs -H 'Accept-Encoding: gzip' -D - -o /dev/null "$NODE_URL$path" | wc -c)
  hb=$(curl -fs -H 'Accept-Encoding: gzip' -D - -o /dev/null "$NGINX_URL$path" | wc -c)
  log "GET $path body sha256 node $a nginx $b; header bytes node $ha nginx $hb"
  [ "$a" = "$b" ] || same=0
done
[ "$same" = 1 ] || { echo "pages.sh: node and nginx bodies differ" >&2; exit 1; }
HOME_GZ=$(stat -c %s "$B/www/index.html.gz"); HOME_RAW=$(stat -c %s "$B/www/index.html"); TOTAL_LEN=$(stat -c %s "$B/www/api/v1/total")

cputicks() { awk '{ i=index($0, ") "); split(substr($0, i+2), f, " "); print f[12]+f[13] }' "/proc/$1/stat"; }
to_ms() { # wrk latency (850.00us, 1.23ms, 1.02s, 2.00m) to ms
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /m$/) n*=60000; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}

RES="$B/results.tsv"
: >"$RES"
run() { # run <server> <path> <round> <seconds> [record]
  local server=$1 path=$2 round=$3 secs=$4 record=${5:-1} url pid out t0 t1
  if [ "$server" = node ]; then url=$NODE_URL$path; pid=$NODE_PID; else url=$NGINX_URL$path; pid=$WORKER_PID; fi
  t0=$(cputicks "$pid")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${secs}s" --latency -H 'Accept-Encoding: gzip' "$url")
  t1=$(cputicks "$pid")
  [ "$record" = 1 ] || return 0
  local rps p50 p99 reqs errs
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" { print $2 }' <<<"$out")")
  errs=$(awk '/Non-2xx/ { n+=$NF } /Socket errors/ { gsub(",", ""); n+=$4+$6+$8+$10 } END { print n+0 }' <<<"$out")
  local cpu_us
  cpu_us=$(awk -v t="$((t1 - t0))" -v r="$reqs" 'BEGIN { if (r>0) printf "%.1f", t*10000/r; else print "nan" }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$server" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$errs" >>"$RES"
  log "round $round $server $path: $rps req/s, p50 $p50 ms, p99 $p99 ms, server CPU $cpu_us µs/req, errors $errs, load $(cut -d' ' -f1-3 /proc/loadavg)"
}

log "warm-up ${WARMUP}s each"
for path in / /api/v1/total; do run node "$path" 0 "$WARMUP" 0; run nginx "$path" 0 "$WARMUP" 0; done
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="node nginx"; else order="nginx node"; fi
  for path in / /api/v1/total; do
    for s in $order; do run "$s" "$path" "$r" "$DURATION"; sleep 1; done
  done
done

summary() {
  echo "## pages: one node vs nginx, same bytes, one core each"
  echo
  echo "machine: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc $CPUS; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo); $(nginx -v 2>&1 | sed 's/.*: //'); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); $(go version 2>/dev/null | awk '{print $3}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS bench/pages.sh$([ "$SMOKE" = 1 ] && echo ' --smoke')"
  echo
  echo "Server pinned to core $SERVER_CPU (taskset), wrk -t1 -c$CONNS -d${DURATION}s --latency -H 'Accept-Encoding: gzip' pinned to core $CLIENT_CPU; $ROUNDS rounds, order alternating node/nginx. Bytes: / is $HOME_GZ bytes gzip ($HOME_RAW raw), /api/v1/total is $TOTAL_LEN bytes, identical bodies and header sets from both."
  echo
  echo "| path | server | req/s median (min–max) | p50 ms median | p99 ms median (max) | server CPU µs/req median | errors | node/nginx req/s (ratio of medians; paired median) |"
  echo "|---|---|---|---|---|---|---|---|"
  for path in / /api/v1/total; do
    for s in node nginx; do
      awk -F'\t' -v p="$path" -v s="$s" '$1==p && $2==s' "$RES" >"$B/sel"
      med() { cut -f"$1" "$B/sel" | sort -g | awk '{ a[NR]=$1 } END { if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
      mn() { cut -f"$1" "$B/sel" | sort -g | head -1; }
      mx() { cut -f"$1" "$B/sel" | sort -g | tail -1; }
      errs=$(awk -F'\t' '{ n+=$8 } END { print n+0 }' "$B/sel")
      ratio=""
      if [ "$s" = nginx ]; then
        ratio=$(awk -F'\t' -v p="$path" '
          $1==p && $2=="node" { n[$3]=$4 } $1==p && $2=="nginx" { g[$3]=$4 }
          END { for (r in n) if ((r in g) && g[r]>0) printf "%.4f\n", n[r]/g[r] }' "$RES" |
          sort -g | awk '{ a[NR]=$1 } END { if (NR==0) print "nan"; else printf "%.2f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }')
        nm=$(awk -F'\t' -v p="$path" '$1==p && $2=="node" { print $4 }' "$RES" | sort -g | awk '{ a[NR]=$1 } END { print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }')
        ratio="**$(awk -v a="$nm" -v b="$(med 4)" 'BEGIN { printf "%.2f", a/b }')**; $ratio"
      fi
      printf '| %s | %s | **%.0f** (%.0f–%.0f) | %.2f | **%.2f** (%.2f) | %.1f | %s | %s |\n' \
        "$path" "$s" "$(med 4)" "$(mn 4)" "$(mx 4)" "$(med 5)" "$(med 6)" "$(mx 6)" "$(med 7)" "$errs" "$ratio"
    done
  done
  echo
  echo "Per run (path, server, round, req/s, p50 ms, p99 ms, server CPU µs/req, errors):"
  echo
  echo '```'
  cat "$RES"
  echo '```'
}
summary | tee ${OUT:+"$OUT"}

# It worked when every run answered and nothing failed (and there were runs).
if awk -F'\t' '$4+0 <= 0 || $8+0 > 0 { bad=1 } END { exit !(bad || NR == 0) }' "$RES"; then
  echo "pages.sh: a run had errors or no requests" >&2
  exit 1
fi
