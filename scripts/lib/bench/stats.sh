# shellcheck shell=bash
#
# Helpers of scripts/bench: order statistics and the parsing of containerd's log
# into per-run phase timings. bash + awk (mawk is enough) + sort; no python.

# bench_stats < NUMBERS  ->  "n median p90 min max" (integers in, as given; "-"
# values and empty lines are skipped; "0 - - - -" when nothing is left).
# Median: middle value, mean of the two middle ones for an even count.
# p90: nearest rank, the ceil(0.9 n)-th smallest value.
bench_stats() {
    { grep -E '^-?[0-9]+(\.[0-9]+)?$' || true; } | sort -n | awk '
        { v[++n] = $1 }
        END {
            if (n == 0) { print "0 - - - -"; exit }
            med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            r = int(0.9 * n); if (r < 0.9 * n) r++
            printf "%d %.0f %.0f %.0f %.0f\n", n, med, v[r], v[1], v[n]
        }'
}

# bench_col FILE SERIES COLUMN  ->  the COLUMN values of the rows of SERIES in a
# tab-separated FILE whose first column is the series name.
bench_col() {
    awk -F'\t' -v s="$2" -v c="$3" '$1 == s { print $c }' "$1"
}

# bench_us_ms MICROSECONDS [DECIMALS]  ->  milliseconds, "-" stays "-".
bench_us_ms() {
    local v="$1" d="${2:-1}"
    if [[ "$v" == "-" || -z "$v" ]]; then
        echo "-"
    else
        awk -v v="$v" -v d="$d" 'BEGIN { printf "%.*f\n", d, v / 1000 }'
    fi
}

# bench_div A B [DECIMALS]  ->  A / B, "-" if either is "-" or B is 0.
bench_div() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (a == "-" || b == "-" || b + 0 == 0) { print "-"; exit }
        printf "%.*f\n", d, a / b }'
}

# Columns of the phases file bench_phases writes (1-based), in microseconds:
#   1 series  2 id  3 wall (ctr run, as measured by bench)
#   4 policy  5 read  6 lookup (cache hit) or compile  7 outcome (hit|compiled|-)
#   8 instance ready (server: spawn + engine load + instantiate)
#   9 engine start + load  10 instantiate  11 instance ready (instance's own view)
#  12 guest ran
#  13 ctr start -> shim listening (wasm: "server listen started",
#     runc: "starting signal loop")
#  14 shim listening -> artifact line (Create received, policy, mounts, read, lookup)
#  15 artifact line -> instance ready (spawn of the instance process)
#  16 instance ready -> first guest instruction (Create reply, containerd, ctr, Start)
#  17 guest end -> exit reaped ("instance N exited")
#  18 exit reaped -> deleted (exit event, ctr, Delete)
#  19 deleted -> shim disconnected (shim shutdown)
#  20 shim disconnected -> ctr returned (containerd clean-up, snapshot, ctr exit)
#  21 shim listening -> shim disconnected (the whole task inside the shim)
#  22 cache lookup start -> first guest instruction (timestamps)
#  23 lookup + instance ready (server)   24 lookup + engine load + instantiate
#  25 spawn overhead: instance ready (server) - instance ready (instance)
#  26 cgroup + network namespace join (in the instance, before the engine starts)

# bench_phases RUNS_TSV CONTAINERD_LOG  ->  the phases file on stdout, one row
# per run of RUNS_TSV (series, id, start us, end us, wall us; epoch microseconds).
#
# Shim lines carry "<id>: ..." in msg; "server listen started" (the shim
# framework's line) carries no id and is given to the next run whose first line
# follows it, which holds while runs are sequential. Times of day are UTC, as in
# the log; a run across midnight is corrected by one day.
bench_phases() {
    awk -F'\t' -v OFS='\t' '
        function tod(line,    i, t, h, m, s, f) {
            i = index(line, "time=\"")
            if (i == 0) return -1
            t = substr(line, i + 6)
            i = index(t, "T"); t = substr(t, i + 1)
            i = index(t, "Z"); t = substr(t, 1, i - 1)
            h = substr(t, 1, 2) + 0; m = substr(t, 4, 2) + 0; s = substr(t, 7, 2) + 0
            f = substr(t, 10); f = substr(f "000000", 1, 6) + 0
            return ((h * 60 + m) * 60 + s) * 1000000 + f
        }
        function msg(line,    i, t) {
            i = index(line, "msg=\"")
            if (i == 0) return ""
            t = substr(line, i + 5)
            i = index(t, "\"")
            return substr(t, 1, i - 1)
        }
        # value of the number token right after word w in the tokens of m
        function after(m, w,    n, a, k) {
            n = split(m, a, /[ ,]+/)
            for (k = 1; k < n; k++) if (a[k] == w) return a[k + 1] + 0
            return -1
        }
        function d(a, b,    x) {      # b - a across midnight, "-" if either is missing
            if (a == "" || b == "" || a < 0 || b < 0) return "-"
            x = b - a
            if (x < -43200000000) x += 86400000000
            return sprintf("%.0f", x)
        }
        function v(x) { return (x == "" || x < 0) ? "-" : sprintf("%.0f", x) }
        FNR == NR {
            id = $2
            ids[++nruns] = id; series[id] = $1; wall[id] = $5
            t0[id] = $3 % 86400000000; t1[id] = $4 % 86400000000
            want[id] = 1
            next
        }
        {
            line = $0
            m = msg(line)
            if (m == "server listen started") { listen = tod(line); next }
            if (m == "starting signal loop") {
                i = index(line, " path="); p = substr(line, i + 6); sub(/ .*/, "", p)
                n = split(p, a, "/"); id = a[n]
                if (id in want) t_listen[id] = tod(line)
                next
            }
            if (m == "shim disconnected") {
                i = index(line, " id="); id = substr(line, i + 4); sub(/ .*/, "", id)
                if (id in want) t_gone[id] = tod(line)
                next
            }
            i = index(m, ": ")
            if (i == 0) next
            id = substr(m, 1, i - 1)
            if (!(id in want)) next
            rest = substr(m, i + 2)
            ts = tod(line)
            if (!(id in seen)) {
                seen[id] = 1
                if (!(id in t_listen) && listen != "") { t_listen[id] = listen; listen = "" }
            }
            if (index(rest, ") policy ") > 0) {
                policy[id] = after(rest, "policy"); rd[id] = after(rest, "read")
                if (index(rest, " cache hit ") > 0) { outcome[id] = "hit"; lookup[id] = after(rest, "hit") }
                else if (index(rest, " compiled ") > 0) { outcome[id] = "compiled"; lookup[id] = after(rest, "compiled") }
                t_art[id] = ts
            } else if (index(rest, "cgroup + netns ") == 1) {
                place[id] = after(rest, "netns")
                load[id] = after(rest, "load"); inst[id] = after(rest, "instantiate")
            } else if (index(rest, "engine start + load ") == 1) {
                load[id] = after(rest, "load"); inst[id] = after(rest, "instantiate")
            } else if (rest ~ /^engine .* instance ready in /) {
                iready[id] = after(rest, "in")
            } else if (rest ~ /^instance pid [0-9]+ ready in /) {
                sready[id] = after(rest, "in"); t_ready[id] = ts
            } else if (index(rest, "guest ran ") == 1) {
                guest[id] = after(rest, "ran"); t_gend[id] = ts
            } else if (rest ~ /^(instance|process) [0-9]+ exited/) {
                t_exit[id] = ts
            } else if (rest == "deleted") {
                t_del[id] = ts
            }
        }
        END {
            for (k = 1; k <= nruns; k++) {
                id = ids[k]
                gs = (id in t_gend && guest[id] >= 0) ? t_gend[id] - guest[id] : ""
                lb = (id in t_art && lookup[id] >= 0) ? t_art[id] - lookup[id] : ""
                e1 = (lookup[id] != "" && sready[id] != "") ? lookup[id] + sready[id] : ""
                e2 = (lookup[id] != "" && load[id] != "" && inst[id] != "") ? lookup[id] + load[id] + inst[id] : ""
                sp = (sready[id] != "" && iready[id] != "") ? sready[id] - iready[id] : ""
                print series[id], id, wall[id], v(policy[id]), v(rd[id]), v(lookup[id]),
                    (id in outcome ? outcome[id] : "-"),
                    v(sready[id]), v(load[id]), v(inst[id]), v(iready[id]), v(guest[id]),
                    d(t0[id], t_listen[id]), d(t_listen[id], t_art[id]), d(t_art[id], t_ready[id]),
                    d(t_ready[id], gs), d(t_gend[id], t_exit[id]), d(t_exit[id], t_del[id]),
                    d(t_del[id], t_gone[id]), d(t_gone[id], t1[id]), d(t_listen[id], t_gone[id]),
                    d(lb, gs), v(e1), v(e2), v(sp), v(place[id])
            }
        }' "$1" "$2"
}
